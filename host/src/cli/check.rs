//! `host check`: load a plugin the way `host run` would and report what it
//! is, or exactly why it would be refused.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use host::plugin::loader::LoadDetails;
use host::plugin::source::PluginSource;
use host::plugin::wasm::Sandbox;
use plughost_native_abi::ABI_VERSION;

use super::options::EngineOptions;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plugin: a built-in name or the path of a component file.
    #[arg(value_name = "NAME|PATH")]
    plugin: String,

    #[command(flatten)]
    engine: EngineOptions,
}

/// Appends a line to the report (written in one go at the end, so a closed
/// stdout, e.g. `| head`, is not an error).
macro_rules! out {
    ($report:ident, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($report, $($arg)*);
    }};
}

impl CheckArgs {
    pub fn run(self) -> Result<()> {
        let mut report = String::new();
        self.check(&mut report)?;
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(report.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(err).context("cannot write the report")
            }
            _ => Ok(()),
        }
    }

    fn check(&self, report: &mut String) -> Result<()> {
        let source = PluginSource::parse(&self.plugin)?;
        let loader = self.engine.loader(1, Sandbox::default())?;
        let bytes = source.read()?;
        let what = source.to_string();
        let loaded = loader.load(&bytes, &what).map(|(_, details)| details);
        let details = match loaded {
            Ok(details) => details,
            // A component exporting only `handle` may be a datagram handler.
            Err(err) => match loader.wasm().load_datagram(&bytes, &what) {
                Ok((_, info)) => LoadDetails::Wasm(info),
                Err(_) => return Err(err),
            },
        };
        let info = match details {
            LoadDetails::Wasm(info) => info,
            LoadDetails::Native { name } => {
                out!(
                    report,
                    "ok: {source} is a native plugin (C ABI version {ABI_VERSION})"
                );
                out!(report, "  name:     {name}");
                out!(report, "  version:  {}", bytes.version);
                out!(
                    report,
                    "  sandbox:  none (native code runs with the host's privileges)"
                );
                return Ok(());
            }
        };
        out!(report, "ok: {source} implements {}", info.world);
        out!(report, "  version:  {}", bytes.version);
        out!(report, "  size:     {} bytes", bytes.bytes.len());
        let how = if info.cached {
            "loaded from cache"
        } else {
            "compiled"
        };
        out!(report, "  compile:  {how} in {:?}", info.compile_time);
        out!(report, "  exports:  {}", info.exports.join(", "));
        out!(report, "  imports:  {}", list_or_none(&info.imports));
        out!(
            report,
            "  grants:   none (no files, environment variables, arguments or sockets)"
        );
        Ok(())
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
