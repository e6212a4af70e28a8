//! Options shared by subcommands that load plugins (`run`, `check`): the
//! plugin kind, instance limits and the compile cache. Limits are `None`
//! unless given, so a flag can override a configuration file's value and
//! the defaults live in one place ([`InstanceLimits::default`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use host::plugin::loader::PluginKind;
use host::plugin::wasm::{CacheSettings, InstanceLimits, Sandbox, WasmRuntime};

/// How plugins are loaded and what every instance may use.
#[derive(Debug, Clone, Args)]
pub struct EngineOptions {
    /// The plugin's kind [default: recognised from the file: ELF shared
    /// libraries are native, everything else WebAssembly].
    #[arg(long, value_enum)]
    pub kind: Option<PluginKind>,

    /// Largest linear memory one plugin instance may use (e.g. 64MiB, 1GiB)
    /// [default: the file's `max_memory`, else 64MiB for an instance per
    /// connection, 256MiB for a protocol world's shared instance].
    #[arg(long, value_name = "SIZE", value_parser = host::size::parse_size)]
    pub max_memory: Option<usize>,

    /// Longest a plugin may compute without returning to the host, counted
    /// in 10 ms epoch ticks; time blocked waiting for the client does not
    /// count (0 = no limit, and no epoch checks in the compiled code)
    /// [default: the file's `call_timeout`, else 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub call_timeout: Option<Duration>,

    /// Directory for compiled plugins [default: $XDG_CACHE_HOME/plughost or
    /// ~/.cache/plughost].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Most the compile cache may take on disk; the least recently used
    /// compiled plugins are removed to stay under it.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = host::size::parse_size)]
    pub cache_max_size: usize,

    /// Compile plugins every time instead of using the on-disk cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl EngineOptions {
    /// The WebAssembly runtime for these options, with room for
    /// `max_instances` live instances (`shared` ones, serving many
    /// connections each, get their larger default memory), granting what
    /// `sandbox` allows.
    pub fn runtime(
        &self,
        max_instances: usize,
        shared: bool,
        sandbox: Sandbox,
    ) -> Result<WasmRuntime> {
        let defaults = InstanceLimits::default();
        let limits = InstanceLimits::for_listener(
            self.max_memory
                .unwrap_or(InstanceLimits::default_max_memory(shared)),
            self.call_timeout.unwrap_or(defaults.call_timeout),
            max_instances,
            false,
        );
        WasmRuntime::new(limits, self.cache(), sandbox)
    }

    /// The compile cache, unless caching is off.
    pub fn cache(&self) -> Option<CacheSettings> {
        if self.no_cache {
            return None;
        }
        let dir = self.cache_dir.clone().or_else(default_cache_dir)?;
        Some(CacheSettings {
            dir,
            max_size: self.cache_max_size as u64,
        })
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("plughost"))
}
