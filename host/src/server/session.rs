//! One connection's life in the server: wrap the accepted socket for the
//! serving mode the server chose — blocking, on a pooled thread
//! ([`serve`]), or registered with an event loop, as a task there
//! ([`serve_events`]), or as one of a shared instance's connections on a
//! reactor (`reactor.rs`, which uses [`Session::open`] and [`Open::close`])
//! — hand it to the plugin snapshot it was accepted with, then count it
//! and log a single line with what happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::address::PeerAddr;
use crate::connection::event::EventConnection;
use crate::connection::{Connection, Stream, Unwrapped};
use crate::metrics::ListenerMetrics;
use crate::plugin::{Outcome, Plugin, Serving};

use super::live::LiveGuard;

/// Everything a connection needs from the accept loop.
pub struct Session {
    /// Keeps the connection counted as open until the plugin is done.
    /// Declared before `stream`, so a session dropped unserved unregisters
    /// its socket before closing it (a drain never touches a reused file
    /// descriptor).
    pub guard: LiveGuard,
    /// The accepted socket.
    pub stream: Stream,
    /// Who connected.
    pub peer: PeerAddr,
    /// The plugin version in service when it was accepted.
    pub plugin: Arc<Box<dyn Plugin>>,
    /// Longest the client may stay silent.
    pub idle_timeout: Option<Duration>,
    /// The listener's counters.
    pub metrics: ListenerMetrics,
}

/// Serves the session on the current thread (blocking; the server sends
/// only sessions whose plugin serves each connection in an instance).
pub fn serve(session: Session) {
    let Some((conn, open)) = session.open(Connection::blocking) else {
        return;
    };
    let (conn, outcome) = match open.plugin.serving() {
        Serving::PerConnection(plugin) => plugin.serve(conn),
        Serving::Shared(_) => (conn, wrong_mode("a thread")),
    };
    open.close(conn, outcome);
}

/// Serves the session as a task on an event loop (the server sends only
/// sessions whose plugin has an event-loop form).
pub async fn serve_events(session: Session) {
    let Some((conn, open)) = session.open(EventConnection::accepted) else {
        return;
    };
    let event_form = match open.plugin.serving() {
        Serving::PerConnection(plugin) => plugin.on_event_loop(),
        Serving::Shared(_) => None,
    };
    let (conn, outcome) = match event_form {
        Some(plugin) => plugin.serve(conn).await,
        None => (conn, wrong_mode("an event loop")),
    };
    open.close(conn.into_inner(), outcome);
}

/// The outcome of a connection sent to a serving mode its plugin has no
/// form for (a reload between the choice and the call cannot cause it:
/// the session keeps the plugin it was accepted with).
fn wrong_mode(mode: &str) -> Outcome {
    Outcome::HostError(format!("this plugin cannot serve a connection on {mode}"))
}

/// A session whose connection is being served.
pub(super) struct Open {
    peer: PeerAddr,
    plugin: Arc<Box<dyn Plugin>>,
    guard: LiveGuard,
    metrics: ListenerMetrics,
    started: Instant,
}

/// Wraps an accepted stream for a serving mode: [`Connection::blocking`]
/// or [`EventConnection::accepted`].
type Wrap<C> = fn(Stream, PeerAddr, Option<Duration>) -> Result<C, Unwrapped>;

impl Session {
    /// Logs the opening and wraps the socket for its serving mode; `None`
    /// if the peer is already gone (logged).
    pub(super) fn open<C>(self, wrap: Wrap<C>) -> Option<(C, Open)> {
        let started = Instant::now();
        let version = self.plugin.version();
        tracing::info!(target: "connection", peer = %self.peer, plugin = %version, "connection opened");
        let peer = self.peer.clone();
        match wrap(self.stream, peer, self.idle_timeout) {
            Ok(conn) => Some((
                conn,
                Open {
                    peer: self.peer,
                    plugin: self.plugin,
                    guard: self.guard,
                    metrics: self.metrics,
                    started,
                },
            )),
            Err(Unwrapped { stream, error: err }) => {
                // The peer is usually already gone (reset before we got to it).
                // Unregister before the socket closes.
                drop(self.guard);
                drop(stream);
                self.metrics.closed("host-error", 0, 0, started.elapsed());
                tracing::warn!(peer = %self.peer, plugin = %version, "connection dropped before serving: {err}");
                None
            }
        }
    }
}

impl Open {
    /// Closes the connection and logs and counts how it went.
    pub(super) fn close(self, mut conn: Connection, outcome: Outcome) {
        if matches!(outcome, Outcome::Ok) {
            conn.notify_close();
        }
        let (bytes_in, bytes_out) = (conn.bytes_in(), conn.bytes_out());
        // Unregister before the socket closes, so a drain never touches a
        // reused file descriptor.
        drop(self.guard);
        drop(conn);
        let duration = self.started.elapsed();
        let label = outcome.label();
        self.metrics.closed(label, bytes_in, bytes_out, duration);
        let (peer, version) = (&self.peer, self.plugin.version());
        if matches!(outcome, Outcome::Ok) {
            tracing::info!(
                target: "connection",
                peer = %peer, plugin = %version, bytes_in, bytes_out,
                duration = ?duration, outcome = %label,
                "connection closed"
            );
        } else {
            tracing::warn!(
                target: "connection",
                peer = %peer, plugin = %version, bytes_in, bytes_out,
                duration = ?duration, outcome = %label, reason = outcome.reason(),
                "connection closed"
            );
        }
    }
}
