//! Handing an accepted connection to its serving mode: the access rules
//! (on the client's real address, after a PROXY header if the listener
//! reads one), then a [`Session`] with the plugin version in service, sent
//! to a reactor (a shared instance), an event loop, or a pooled thread.
//! Shared by the accept loop and the preamble thread (`preamble.rs`).

use std::time::Duration;

use super::access::AccessRules;
use super::events::EventLoops;
use super::live::LiveGuard;
use super::pool::ThreadPool;
use super::reactor::Reactors;
use super::session::{self, Session};
use crate::address::PeerAddr;
use crate::connection::Stream;
use crate::metrics::ListenerMetrics;
use crate::plugin::{CurrentPlugin, Serving};

/// Everything that decides where a connection is served.
pub struct Dispatcher {
    /// The plugin in service.
    pub plugin: CurrentPlugin,
    /// The listener's counters.
    pub metrics: ListenerMetrics,
    /// Which peers may connect.
    pub access: AccessRules,
    /// Longest a client may stay silent.
    pub idle_timeout: Option<Duration>,
    /// Threads for connections served on a thread of their own.
    pub pool: ThreadPool,
    /// Event-loop threads, if the listener has them.
    pub events: Option<EventLoops>,
    /// Reactor threads, if the listener serves shared instances.
    pub reactors: Option<Reactors>,
}

impl Dispatcher {
    /// Serves `stream` from `peer` (counted as open by `guard`), or
    /// refuses it by the access rules.
    pub fn serve(&self, stream: Stream, peer: PeerAddr, guard: LiveGuard) {
        let permitted = peer.ip().is_none_or(|ip| self.access.permits(ip.ip()));
        if !permitted {
            self.metrics.refused();
            tracing::warn!(peer = %peer, "connection refused by --allow/--deny rules");
            // Unregister before the socket closes.
            drop(guard);
            return;
        }
        let plugin = self.plugin.get();
        let session = Session {
            guard,
            stream,
            peer,
            idle_timeout: self.idle_timeout,
            metrics: self.metrics.clone(),
            plugin,
        };
        self.metrics.opened();
        let (shared, event_form) = match session.plugin.serving() {
            Serving::Shared(_) => (true, false),
            Serving::PerConnection(plugin) => (false, plugin.on_event_loop().is_some()),
        };
        match (&self.reactors, &self.events) {
            (Some(reactors), _) if shared => reactors.admit(session),
            (_, Some(events)) if event_form => events.spawn(session::serve_events(session)),
            _ => {
                let shown = session.peer.to_string();
                if let Err(err) = self.pool.execute(move || session::serve(session)) {
                    self.metrics.closed("host-error", 0, 0, Duration::ZERO);
                    tracing::error!(
                        peer = shown,
                        "cannot start a thread for the connection: {err}"
                    );
                }
            }
        }
    }
}
