//! Reloading the plugin while the server runs: read the source again,
//! compile and check it off the accept loop, then swap it in for new
//! connections. Connections already open keep the version they started
//! with. A plugin that fails to load never replaces a working one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::Result;

use crate::plugin::source::PluginSource;
use crate::plugin::wasm::WasmRuntime;
use crate::plugin::{CurrentPlugin, Plugin};

/// Loads a plugin from its source and swaps it into service.
#[derive(Clone)]
pub struct Reloader {
    runtime: WasmRuntime,
    source: PluginSource,
    current: CurrentPlugin,
    busy: Arc<AtomicBool>,
}

impl Reloader {
    /// A reloader for the plugin at `source`, serving through `current`.
    pub fn new(runtime: WasmRuntime, source: PluginSource, current: CurrentPlugin) -> Self {
        Self {
            runtime,
            source,
            current,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Reloads on a background thread, unless a reload is already running.
    pub fn reload_in_background(&self, why: &'static str) {
        if self.busy.swap(true, Ordering::AcqRel) {
            tracing::info!("{why}: a reload is already in progress");
            return;
        }
        let this = self.clone();
        let spawned = thread::Builder::new().name("reload".into()).spawn(move || {
            // Errors are logged inside; the old plugin keeps serving.
            let _ = this.reload(why);
            this.busy.store(false, Ordering::Release);
        });
        if let Err(err) = spawned {
            self.busy.store(false, Ordering::Release);
            tracing::error!("{why}: cannot start the reload thread: {err}");
        }
    }

    /// Reloads now: on success the new version serves new connections.
    pub fn reload(&self, why: &str) -> Result<()> {
        let started = Instant::now();
        let old = self.current.get().version().clone();
        let loaded = self.source.read().and_then(|bytes| {
            let what = self.source.to_string();
            self.runtime.load(&bytes, &what)
        });
        let (plugin, info) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::error!(
                    plugin = %old,
                    "{why}: reload failed, still serving {old}: {}",
                    crate::one_line(&err)
                );
                return Err(err);
            }
        };
        let new = plugin.version().clone();
        let swap_started = Instant::now();
        self.current.replace(Box::new(plugin));
        let swap = swap_started.elapsed();
        tracing::info!(
            old = %old, new = %new,
            compile = ?info.compile_time, cached = info.cached, swap = ?swap,
            total = ?started.elapsed(),
            "{why}: swapped {old} -> {new}"
        );
        Ok(())
    }
}
