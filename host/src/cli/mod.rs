//! Subcommands and their arguments (clap derive). One file per subcommand.

mod bindgen;
mod check;
mod component;
mod new;
mod options;
mod run;
mod wit_source;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// A plugin host that serves TCP connections with WebAssembly component
/// request handlers (setup/handle/finish, like Python's socketserver).
#[derive(Debug, Parser)]
#[command(name = "host", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log line format on stderr (`RUST_LOG` filters what is logged).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: crate::logging::LogFormat,
}

const EXAMPLES: &str = "\
Examples:
  host run --plugin echo --port 8000          serve the built-in echo plugin
  host run --plugin echo.wasm --port 8000     serve a component file
  host run --plugin http-hello --port 0       pick a free port (printed in the log)
  host check my-handler.wasm                  check a component implements the world
  python3 examples/echo_client.py --port 8000 hello
                                              talk to it (from the repository)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve connections with a plugin.
    Run(Box<run::RunArgs>),
    /// Load a plugin, check it implements its world (handler, protocol or
    /// datagram-handler), and print its imports and exports.
    Check(check::CheckArgs),
    /// Make a component from a core WebAssembly module (any compiler's
    /// output): embed the WIT world, wrap with the WASI adapter.
    Component(component::ComponentArgs),
    /// Generate guest bindings for the handler world (C, Go) or write out
    /// its WIT.
    Bindgen(bindgen::BindgenArgs),
    /// Create a plugin directory (an echo handler with a plugin.toml and a
    /// README) for Rust, Python, JavaScript, C or Go.
    New(new::NewArgs),
}

impl Command {
    pub fn run(self) -> Result<()> {
        match self {
            Command::Run(args) => args.run(),
            Command::Check(args) => args.run(),
            Command::Component(args) => args.run(),
            Command::Bindgen(args) => args.run(),
            Command::New(args) => args.run(),
        }
    }
}
