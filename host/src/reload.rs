//! Reloading the plugin while the server runs: read the source again,
//! compile and check it off the accept loop, then swap it in for new
//! connections (or datagrams). Connections already open keep the version
//! they started with. A plugin that fails to load never replaces a working
//! one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::metrics::ListenerMetrics;
use crate::plugin::loader::{LoadDetails, Loader};
use crate::plugin::source::{PluginBytes, PluginSource};
use crate::plugin::wasm::{CurrentDatagram, WasmRuntime};
use crate::plugin::{CurrentPlugin, Plugin, PluginVersion, Serving};

/// A listener's plugin in service, as a reload sees it: what serves now,
/// how to load a candidate and how to put it in service.
pub trait PluginSlot: Send + Sync + 'static {
    /// A loaded and checked plugin, not serving yet.
    type Loaded;
    /// The version serving now.
    fn serving(&self) -> PluginVersion;
    /// Loads and checks `bytes`; `what` names them in errors.
    fn load(&self, bytes: &PluginBytes, what: &str) -> Result<(Self::Loaded, LoadDetails)>;
    /// Puts `loaded` in service for new connections; returns its version.
    fn swap(&self, loaded: Self::Loaded) -> PluginVersion;
}

/// A stream listener's plugin (either kind).
pub struct StreamSlot {
    /// Loads plugins the way the listener was started.
    pub loader: Loader,
    /// The plugin serving.
    pub current: CurrentPlugin,
}

impl PluginSlot for StreamSlot {
    type Loaded = Box<dyn Plugin>;

    fn serving(&self) -> PluginVersion {
        self.current.get().version().clone()
    }

    fn load(&self, bytes: &PluginBytes, what: &str) -> Result<(Self::Loaded, LoadDetails)> {
        let shared = |plugin: &dyn Plugin| matches!(plugin.serving(), Serving::Shared(_));
        let serving_shared = shared(self.current.get().as_ref().as_ref());
        if self.loader.is_protocol(&bytes.bytes) != serving_shared {
            let (now, new) = if serving_shared {
                ("the protocol world", "a per-connection plugin")
            } else {
                ("per-connection plugins", "the protocol world")
            };
            bail!(
                "{what} is {new}, but this listener serves {now}; a reload cannot change \
                 how a listener serves (restart the host to)"
            );
        }
        let (plugin, details) = self.loader.load(bytes, what)?;
        let event_form = |plugin: &dyn Plugin| match plugin.serving() {
            Serving::PerConnection(plugin) => plugin.on_event_loop().is_some(),
            Serving::Shared(_) => false,
        };
        if event_form(self.current.get().as_ref().as_ref()) && !event_form(plugin.as_ref()) {
            tracing::warn!(
                "{what} cannot run on this listener's event loops: each of its connections \
                 takes a thread, under a connection cap sized for event loops \
                 (restart the host to size it for threads)"
            );
        }
        Ok((plugin, details))
    }

    fn swap(&self, loaded: Self::Loaded) -> PluginVersion {
        let new = loaded.version().clone();
        // Connections still running the old version hold their own `Arc`;
        // it is freed when the last of them ends.
        drop(self.current.replace(loaded));
        new
    }
}

/// A UDP listener's `datagram-handler` plugin.
pub struct DatagramSlot {
    /// Compiles and checks components.
    pub runtime: WasmRuntime,
    /// The plugin serving.
    pub current: CurrentDatagram,
}

impl PluginSlot for DatagramSlot {
    type Loaded = crate::plugin::wasm::DatagramPlugin;

    fn serving(&self) -> PluginVersion {
        self.current.load().version().clone()
    }

    fn load(&self, bytes: &PluginBytes, what: &str) -> Result<(Self::Loaded, LoadDetails)> {
        let (plugin, info) = self.runtime.load_datagram(bytes, what)?;
        Ok((plugin, LoadDetails::Wasm(info)))
    }

    fn swap(&self, loaded: Self::Loaded) -> PluginVersion {
        let new = loaded.version().clone();
        // Datagrams being handled keep their own `Arc` of the old one.
        self.current.store(Arc::new(loaded));
        new
    }
}

/// Loads a plugin from its source and swaps it into service.
pub struct Reloader<S> {
    slot: Arc<S>,
    source: PluginSource,
    metrics: ListenerMetrics,
    busy: Arc<AtomicBool>,
    /// A change arrived while a reload ran: reload once more afterwards.
    pending: Arc<AtomicBool>,
}

impl<S> Clone for Reloader<S> {
    fn clone(&self) -> Self {
        Self {
            slot: Arc::clone(&self.slot),
            source: self.source.clone(),
            metrics: self.metrics.clone(),
            busy: Arc::clone(&self.busy),
            pending: Arc::clone(&self.pending),
        }
    }
}

impl<S: PluginSlot> Reloader<S> {
    /// A reloader for the plugin at `source`, serving through `slot`.
    pub fn new(slot: S, source: PluginSource, metrics: ListenerMetrics) -> Self {
        Self {
            slot: Arc::new(slot),
            source,
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
        let old = self.slot.serving();
        let loaded = self.source.read().and_then(|bytes| {
            if bytes.version == old {
                return Ok(None);
            }
            let what = self.source.to_string();
            let (plugin, details) = self.slot.load(&bytes, &what)?;
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
        let swap_started = Instant::now();
        let new = self.slot.swap(plugin);
        let swap = swap_started.elapsed();
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
