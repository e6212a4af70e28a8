//! Plugins: the request-handling code the host runs for each connection.
//!
//! A [`Plugin`] has one of two shapes ([`Serving`]). A
//! [`ConnectionPlugin`] serves each connection in an instance of its own,
//! through the `setup` → `handle` → `finish` lifecycle written once in
//! [`lifecycle`]; a [`ProtocolPlugin`] serves many connections from one
//! instance, which the server's reactor tells about each [`Event`].
//! WebAssembly components implement them in [`wasm`], shared libraries in
//! [`native`]; the server only sees the traits, so it does not know which
//! kind runs.
//! [`loader`] picks the kind; [`source`] reads a plugin from a built-in
//! name ([`builtin`]), a file or a plugin directory ([`manifest`]).
//! The plugin currently in service sits behind a [`CurrentPlugin`] that a
//! reload can swap while connections keep the version they started with.

pub mod builtin;
pub mod lifecycle;
pub mod loader;
pub mod manifest;
pub mod native;
pub mod source;
pub mod wasm;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::address::PeerAddr;
use crate::connection::Connection;
use crate::connection::event::EventConnection;
use crate::connection::shared::{LostReason, SharedIo, TimerId, TransportId};

/// Names a plugin build: its name and a short hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersion {
    /// The plugin's name (file stem or built-in name).
    pub name: String,
    /// The first 12 hex digits of the SHA-256 of the plugin's bytes.
    pub hash: String,
}

impl fmt::Display for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.hash)
    }
}

/// How serving a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `setup`, `handle` and `finish` all returned normally.
    Ok,
    /// `setup` returned an error; `handle` and `finish` were not called.
    SetupError(String),
    /// `handle` returned an error; `finish` still ran.
    HandleError(String),
    /// The plugin trapped (or was stopped by a host limit); no further calls
    /// were made into its instance.
    Trap(String),
    /// The host could not start the plugin for this connection.
    HostError(String),
}

impl Outcome {
    /// A short, stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::SetupError(_) => "setup-error",
            Outcome::HandleError(_) => "error",
            Outcome::Trap(_) => "trap",
            Outcome::HostError(_) => "host-error",
        }
    }

    /// The error message, if the outcome is not [`Outcome::Ok`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Ok => None,
            Outcome::SetupError(r)
            | Outcome::HandleError(r)
            | Outcome::Trap(r)
            | Outcome::HostError(r) => Some(r),
        }
    }
}

/// Request-handling code that can serve connections.
///
/// How a plugin serves is its [`Serving`] shape: an instance per
/// connection (the `handler` world, native plugins), or one instance
/// serving many connections through events (the `protocol` world). The
/// server asks for the shape when it accepts a connection and hands the
/// connection to the serving mode that fits it (see `server`).
pub trait Plugin: Send + Sync {
    /// Which build this is.
    fn version(&self) -> &PluginVersion;

    /// How this plugin serves connections.
    fn serving(&self) -> Serving<'_>;

    /// Creates what a connection gets before the plugin first runs for it
    /// (for a WASM plugin: its store, sandbox and a fresh instance), throws
    /// it away and says how long that took; `None` for plugin kinds that
    /// create nothing per connection. For `host check` and benchmarks.
    fn time_instantiation(&self) -> anyhow::Result<Option<std::time::Duration>> {
        Ok(None)
    }
}

/// The two shapes of plugin.
pub enum Serving<'a> {
    /// A fresh instance for every connection, driving it through
    /// `setup`/`handle`/`finish` ([`lifecycle`]).
    PerConnection(&'a dyn ConnectionPlugin),
    /// One instance serving many connections through events
    /// (`connection-made`, `data-received`, `connection-lost`, timers).
    Shared(&'a dyn ProtocolPlugin),
}

/// A plugin that serves each connection in an instance of its own.
///
/// Every such kind serves a connection on the calling thread
/// ([`ConnectionPlugin::serve`]); a kind that can also wait for its clients
/// without holding a thread offers that through
/// [`ConnectionPlugin::on_event_loop`]. Which of the two a connection gets
/// is the server's choice, made when it accepts the connection.
pub trait ConnectionPlugin: Send + Sync {
    /// Serves one connection on the calling thread, blocking while the
    /// plugin waits for the client: `setup`, then `handle` and `finish`
    /// (see [`lifecycle`]). The connection is the plugin's until this
    /// returns it, with the outcome.
    fn serve(&self, conn: Connection) -> (Connection, Outcome);

    /// The plugin's form for event-loop threads, if it has one (WASM
    /// plugins loaded for a listener with event loops); `None` for kinds
    /// whose calls block (native plugins), which then get a thread per
    /// connection.
    fn on_event_loop(&self) -> Option<&dyn EventPlugin> {
        None
    }
}

/// A plugin serving connections as tasks on an event-loop thread.
pub trait EventPlugin: Send + Sync {
    /// Like [`ConnectionPlugin::serve`], as a future for an event-loop
    /// thread (a tokio runtime): waiting for the client suspends it.
    fn serve(&self, conn: EventConnection) -> BoxFuture<'_, (EventConnection, Outcome)>;
}

/// A plugin whose one instance serves many connections (the `protocol`
/// world), driven by a reactor (`server/reactor.rs`).
pub trait ProtocolPlugin: Send + Sync {
    /// Creates an instance owning `io` (its connections and timers, none
    /// yet) and calls its `init`; `tag` names it in guest output. An error
    /// says why the instance cannot serve (`init` failed or trapped, or
    /// the host could not create it).
    fn instantiate(
        &self,
        io: SharedIo,
        tag: &PeerAddr,
    ) -> Result<Box<dyn ProtocolInstance>, String>;
}

/// One live instance of a [`ProtocolPlugin`].
pub trait ProtocolInstance: Send {
    /// The instance's connections and timers.
    fn io(&mut self) -> &mut SharedIo;

    /// Delivers `event`. An error is a trap (or a host limit): the
    /// instance is poisoned, and must not be called again.
    fn deliver(&mut self, event: Event<'_>) -> Result<(), String>;
}

/// What a [`ProtocolInstance`] is told.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A client connected.
    ConnectionMade(TransportId),
    /// Bytes arrived.
    DataReceived(TransportId, &'a [u8]),
    /// Buffered output was sent.
    WriteDrained(TransportId),
    /// The connection is gone.
    ConnectionLost(TransportId, LostReason),
    /// A timer is due.
    TimerFired(TimerId),
    /// A message arrived on a topic the instance subscribed to.
    MessageReceived(&'a str, &'a [u8]),
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The plugin in service, swappable while connections are live.
///
/// A connection takes a snapshot with [`CurrentPlugin::get`] and keeps that
/// `Arc` for its whole life; [`CurrentPlugin::replace`] only affects
/// connections accepted afterwards.
#[derive(Clone)]
pub struct CurrentPlugin(Arc<ArcSwap<Box<dyn Plugin>>>);

impl CurrentPlugin {
    /// Puts `plugin` in service.
    pub fn new(plugin: Box<dyn Plugin>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(plugin)))
    }

    /// The plugin new connections should use.
    pub fn get(&self) -> Arc<Box<dyn Plugin>> {
        self.0.load_full()
    }

    /// Swaps in `plugin` for new connections and returns the old one.
    pub fn replace(&self, plugin: Box<dyn Plugin>) -> Arc<Box<dyn Plugin>> {
        self.0.swap(Arc::new(plugin))
    }
}
