//! Reloading the plugin while the server runs: read the source again,
//! compile and check it off the accept loop, then swap it in for new
//! connections. Connections already open keep the version they started
//! with. A plugin that fails to load never replaces a working one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::Result;

use crate::metrics::ListenerMetrics;
use crate::plugin::CurrentPlugin;
use crate::plugin::loader::Loader;
use crate::plugin::source::PluginSource;

/// Loads a plugin from its source and swaps it into service.
#[derive(Clone)]
pub struct Reloader {
    loader: Loader,
    source: PluginSource,
    current: CurrentPlugin,
    metrics: ListenerMetrics,
    busy: Arc<AtomicBool>,
    /// A change arrived while a reload ran: reload once more afterwards.
    pending: Arc<AtomicBool>,
}

impl Reloader {
    /// A reloader for the plugin at `source`, serving through `current`.
    pub fn new(
        loader: Loader,
        source: PluginSource,
        current: CurrentPlugin,
        metrics: ListenerMetrics,
    ) -> Self {
        Self {
            loader,
            source,
            current,
            metrics,
            busy: Arc::new(AtomicBool::new(false)),
            pending: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Reloads on a background thread. If a reload is already running,
    /// another one follows it, so the last change is never missed.
    pub fn reload_in_background(&self, why: &'static str) {
        self.pending.store(true, Ordering::Release);
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let spawned = thread::Builder::new().name("reload".into()).spawn(move || {
            loop {
                while this.pending.swap(false, Ordering::AcqRel) {
                    // Errors are logged inside; the old plugin keeps serving.
                    let _ = this.reload(why);
                }
                this.busy.store(false, Ordering::Release);
                // A request that arrived between the loop and the store
                // above saw `busy` still set: take it over, unless a new
                // thread already has.
                if !this.pending.load(Ordering::Acquire) || this.busy.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
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
            if bytes.version == old {
                return Ok(None);
            }
            let what = self.source.to_string();
            let (plugin, details) = self.loader.load(&bytes, &what)?;
            Ok(Some((plugin, details, bytes.build_time)))
        });
        let (plugin, details, build_time) = match loaded {
            Ok(Some(loaded)) => loaded,
            Ok(None) => {
                self.metrics.reloaded("unchanged");
                tracing::info!(plugin = %old, "{why}: plugin unchanged; still serving {old}");
                return Ok(());
            }
            Err(err) => {
                self.metrics.reloaded("failed");
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
        let retired = self.current.replace(plugin);
        let swap = swap_started.elapsed();
        // Connections still running the old version hold their own `Arc`;
        // it is freed when the last of them ends.
        drop(retired);
        self.metrics.reloaded("ok");
        self.metrics
            .serving(Some(&old.to_string()), &new.to_string());
        tracing::info!(
            old = %old, new = %new,
            build = build_time.map(tracing::field::debug), compile = ?details.compile_time(), cached = details.cached(), swap = ?swap,
            total = ?started.elapsed(),
            "{why}: swapped {old} -> {new}"
        );
        Ok(())
    }
}
