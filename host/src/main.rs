//! The `host` command line: parses arguments, sets up logging, runs the
//! chosen subcommand and turns any error into one `error: ...` line on
//! stderr with a non-zero exit status.

mod cli;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    logging::init(args.log_format);
    match args.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", host::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
