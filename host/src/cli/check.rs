//! `host check`: load a plugin the way `host run` would and report what it
//! is, or exactly why it would be refused (with `--config`, every
//! listener's plugin and TLS certificates).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use host::config::ConfigFile;
use host::plugin::loader::{self, LoadDetails, Loader, PluginKind};
use host::plugin::source::PluginSource;
use host::plugin::wasm::{Grants, Sandbox};
use host::plugin::{Plugin, Serving};
use host::tls::Terminator;
use plughost_native_abi::ABI_VERSION;

use super::options::EngineOptions;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plugin: a built-in name, a component or native library, or a
    /// plugin directory.
    #[arg(value_name = "NAME|PATH", required_unless_present = "config")]
    plugin: Option<String>,

    /// Check every listener's plugin in this configuration file, with its
    /// grants, instead.
    #[arg(long, short, value_name = "FILE", conflicts_with = "plugin")]
    config: Option<std::path::PathBuf>,

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
        match (&self.config, &self.plugin) {
            (Some(path), _) => {
                for listener in ConfigFile::load(path)?.listener {
                    out!(
                        report,
                        "listener {} ({}):",
                        listener.name(),
                        listener.address
                    );
                    let kind = self.engine.kind.or(listener.kind);
                    self.check(&listener.plugin, kind, &listener.grants, &mut report)?;
                    if let Some(tls) = &listener.tls {
                        let terminator = Terminator::new(tls)
                            .with_context(|| format!("listener {}: TLS", listener.address))?;
                        for line in terminator.describe() {
                            out!(report, "  tls:      {line}");
                        }
                    }
                }
            }
            (None, Some(plugin)) => {
                self.check(plugin, self.engine.kind, &Grants::default(), &mut report)?
            }
            (None, None) => anyhow::bail!("give a plugin to check, or --config FILE"),
        }
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

    fn check(
        &self,
        plugin: &str,
        kind: Option<PluginKind>,
        grants: &Grants,
        report: &mut String,
    ) -> Result<()> {
        let source = PluginSource::parse(plugin)?;
        let sandbox = Sandbox::new(grants, Default::default())?;
        let bytes = source.read()?;
        let shared = loader::is_protocol(kind, &bytes.bytes);
        let loader = Loader::new(self.engine.runtime(1, shared, sandbox)?, kind);
        let what = source.to_string();
        let (details, instantiation) = match loader.load(&bytes, &what) {
            Ok((plugin, details)) => {
                // A shared instance is made once per listener (and its
                // `init` may log): a few rounds tell enough.
                let (per, rounds) = match plugin.serving() {
                    Serving::Shared(_) => ("to create and init one shared instance", 5),
                    Serving::PerConnection(_) => ("to create per connection", 50),
                };
                let median = instantiation_median(plugin.as_ref(), rounds)?;
                (details, median.map(|median| (median, per, rounds)))
            }
            // A component exporting only `handle` may be a datagram handler.
            Err(err) => match loader.wasm().load_datagram(&bytes, &what) {
                Ok((_, info)) => (LoadDetails::Wasm(info), None),
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
        if let Some((instantiation, per, rounds)) = instantiation {
            out!(
                report,
                "  instance: {instantiation:?} {per} (median of {rounds})"
            );
        }
        out!(report, "  exports:  {}", info.exports.join(", "));
        out!(report, "  imports:  {}", list_or_none(&info.imports));
        if grants.is_empty() {
            out!(
                report,
                "  grants:   none (no files, environment variables, arguments or sockets)"
            );
        }
        for grant in grants.describe() {
            out!(report, "  grant:    {grant}");
        }
        Ok(())
    }
}

/// The median time `plugin` takes to create an instance, over `rounds`.
fn instantiation_median(plugin: &dyn Plugin, rounds: usize) -> Result<Option<Duration>> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        match plugin.time_instantiation()? {
            Some(took) => times.push(took),
            None => return Ok(None),
        }
    }
    times.sort();
    Ok(Some(times[times.len() / 2]))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
