//! Options shared by subcommands that load plugins: instance limits and the
//! compile cache, plus the parsers for durations and byte sizes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use host::plugin::loader::{Loader, PluginKind};
use host::plugin::wasm::{InstanceLimits, WasmRuntime};

/// How plugins are loaded and what every instance may use.
#[derive(Debug, Clone, Args)]
pub struct EngineOptions {
    /// The plugin's kind [default: recognised from the file: ELF shared
    /// libraries are native, everything else WebAssembly].
    #[arg(long, value_enum)]
    pub kind: Option<PluginKind>,

    /// Largest linear memory one plugin instance may use (e.g. 64MiB, 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_memory: usize,

    /// Longest a plugin may compute without returning to the host; time
    /// blocked waiting for the client does not count.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,

    /// Directory for compiled plugins [default: $XDG_CACHE_HOME/plughost or
    /// ~/.cache/plughost].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile plugins every time instead of using the on-disk cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl EngineOptions {
    /// A plugin loader for these options, with room for `max_instances`
    /// live WebAssembly instances.
    pub fn loader(&self, max_instances: usize) -> Result<Loader> {
        let limits = InstanceLimits {
            max_memory: self.max_memory,
            call_timeout: self.call_timeout,
            max_instances: u32::try_from(max_instances).unwrap_or(u32::MAX),
            ..InstanceLimits::default()
        };
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        Ok(Loader::new(WasmRuntime::new(limits, cache_dir)?, self.kind))
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("plughost"))
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `1048576` (bytes); `MB`/`KB`/`GB` and
/// single letters are read as the binary units too.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 64MiB)"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
