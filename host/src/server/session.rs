//! One connection's life on its thread: hand it to the plugin snapshot it
//! was accepted with, then log a single line with what happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::address::PeerAddr;
use crate::connection::{Connection, Stream};
use crate::metrics::ListenerMetrics;
use crate::plugin::{Outcome, Plugin};

use super::live::LiveGuard;

/// Serves `stream` with `plugin` and logs the result. `guard` keeps the
/// connection counted as open until the plugin is done with it.
pub fn serve(
    stream: Stream,
    peer: PeerAddr,
    plugin: Arc<Box<dyn Plugin>>,
    guard: LiveGuard,
    idle_timeout: Option<Duration>,
    metrics: ListenerMetrics,
) {
    let started = Instant::now();
    let version = plugin.version();
    tracing::info!(target: "connection", peer = %peer, plugin = %version, "connection opened");
    let conn = match Connection::new(stream, idle_timeout) {
        Ok(conn) => conn,
        Err(err) => {
            // The peer is usually already gone (reset before we got to it).
            drop(guard);
            metrics.closed("host-error", 0, 0, started.elapsed());
            tracing::warn!(peer = %peer, plugin = %version, "connection dropped before serving: {err}");
            return;
        }
    };
    let (conn, outcome) = plugin.serve(conn);
    let (bytes_in, bytes_out) = (conn.bytes_in(), conn.bytes_out());
    // Unregister before the socket closes, so a drain never touches a
    // reused file descriptor.
    drop(guard);
    drop(conn);
    let duration = started.elapsed();
    let label = outcome.label();
    metrics.closed(label, bytes_in, bytes_out, duration);
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
