//! `host check`: load a plugin the way `host run` would and report what it
//! is, or exactly why it would be refused.

use anyhow::Result;
use clap::Args;
use host::plugin::loader::LoadDetails;
use host::plugin::source::PluginSource;
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

impl CheckArgs {
    pub fn run(self) -> Result<()> {
        let source = PluginSource::parse(&self.plugin)?;
        let loader = self.engine.loader(1)?;
        let bytes = source.read()?;
        let info = match loader.load(&bytes, &source.to_string())?.1 {
            LoadDetails::Wasm(info) => info,
            LoadDetails::Native { name } => {
                println!("ok: {source} is a native plugin (C ABI version {ABI_VERSION})");
                println!("  name:     {name}");
                println!("  version:  {}", bytes.version);
                println!("  sandbox:  none (native code runs with the host's privileges)");
                return Ok(());
            }
        };
        println!("ok: {source} implements {}", info.world);
        println!("  version:  {}", bytes.version);
        println!("  size:     {} bytes", bytes.bytes.len());
        let how = if info.cached {
            "loaded from cache"
        } else {
            "compiled"
        };
        println!("  compile:  {how} in {:?}", info.compile_time);
        println!("  exports:  {}", info.exports.join(", "));
        println!("  imports:  {}", list_or_none(&info.imports));
        println!("  grants:   none (no files, environment variables, arguments or sockets)");
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
