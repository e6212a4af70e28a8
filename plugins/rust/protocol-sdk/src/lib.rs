//! Write plughost plugins of the `protocol` world in Rust: one instance
//! serves many connections through events, in the shape of Twisted's
//! `Protocol` and `Factory`.
//!
//! The plugin is a type implementing [`Protocol`] — its value is the
//! instance's state, shared by every connection (a chat room's members, a
//! broker's subscriptions) — exported with [`export!`]. The host calls
//!
//! ```text
//! init()                          once, when it creates the instance
//! connection_made(t)              a client connected; keep `t` to write to it later
//! data_received(t, bytes)         bytes arrived on t
//! write_drained(t)                output buffered for t was sent
//! connection_lost(t, reason)      t is gone (exactly once)
//! timer_fired(timer)              a timer set with call_later is due
//! ```
//!
//! one at a time; none of them may wait (there is no blocking read). A
//! [`Transport`] is a copyable handle: [`Transport::write`] sends or
//! buffers and returns at once, bounded per connection by the host (a
//! write past the bound is refused with [`WriteError::BufferFull`], and the
//! plugin decides: pause the producer until `write_drained`, or
//! [`Transport::abort`] the slow client).
//!
//! A panic traps the instance: the host closes all of its connections and
//! starts a fresh instance (with a fresh `init`) for new ones.
//!
//! # Example
//!
//! ```
//! use plughost_protocol::{LostReason, Protocol, Transport};
//! use std::collections::BTreeSet;
//!
//! /// Every line a client sends goes to all the others.
//! #[derive(Default)]
//! struct Broadcast {
//!     clients: BTreeSet<Transport>,
//! }
//!
//! impl Protocol for Broadcast {
//!     fn init() -> Result<Self, String> {
//!         Ok(Self::default())
//!     }
//!
//!     fn connection_made(&mut self, t: Transport) {
//!         self.clients.insert(t);
//!     }
//!
//!     fn data_received(&mut self, from: Transport, data: &[u8]) {
//!         for &to in self.clients.iter().filter(|&&to| to != from) {
//!             if to.write(data).is_err() {
//!                 to.abort("too slow");
//!             }
//!         }
//!     }
//!
//!     fn connection_lost(&mut self, t: Transport, _reason: LostReason) {
//!         self.clients.remove(&t);
//!     }
//! }
//!
//! plughost_protocol::export!(Broadcast);
//!
//! // Natively, a harness drives it like the host would:
//! let mut room = plughost_protocol::testing::Harness::<Broadcast>::start().unwrap();
//! let (a, b) = (room.connect(), room.connect());
//! room.receive(a, b"hi\n");
//! assert_eq!(room.take_output(b), b"hi\n");
//! assert!(room.take_output(a).is_empty());
//! ```
//!
//! Build it for `wasm32-unknown-unknown` (with `wasm-component-ld` as the
//! linker, as the repository's `.cargo/config.toml` sets) or
//! `wasm32-wasip2`: the `.wasm` produced is a component of the `protocol`
//! world, and `host run --plugin it.wasm` serves it.

#![deny(missing_docs)]

extern crate self as plughost_protocol;

mod backend;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

use std::net::SocketAddr;
use std::time::Duration;

/// One connection of the instance (the WIT `transport`): a copyable
/// handle the plugin may keep and write to from any callback. Its number
/// is never reused by the instance; after `connection_lost` it names
/// nothing and writes to it fail with [`WriteError::Closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transport(u64);

/// Why a write was refused; nothing of the data was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The connection is closed or closing.
    Closed,
    /// The write would take the connection's unsent output past the
    /// host's bound ([`write_limit`]): the peer does not read fast enough.
    BufferFull,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteError::Closed => "connection closed",
            WriteError::BufferFull => "output buffer full",
        })
    }
}

impl std::error::Error for WriteError {}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The peer closed its side.
    PeerClosed,
    /// The plugin closed it and everything written was sent.
    Closed,
    /// The plugin aborted it.
    Aborted,
    /// The peer reset it, or sending failed.
    Reset,
    /// Nothing moved for longer than the host's idle timeout.
    TimedOut,
    /// The host is shutting down.
    Shutdown,
    /// Another transport failure.
    Error,
}

impl Transport {
    /// The transport's number (stable for its life; never reused).
    pub fn id(self) -> u64 {
        self.0
    }

    /// The transport numbered `id` (what [`Transport::id`] returned; a
    /// number this instance never gave names nothing, and writes to it
    /// fail with [`WriteError::Closed`]).
    pub fn from_id(id: u64) -> Self {
        Self(id)
    }

    /// Queues `data` after what was written before; returns at once. The
    /// host gathers small writes and sends them together (a reply when
    /// its callback returns, writes to other connections at the end of
    /// the event loop's round) and buffers what the socket does not take.
    pub fn write(self, data: &[u8]) -> Result<(), WriteError> {
        backend::write(self.0, data)
    }

    /// Bytes written that the socket has not taken (gathered writes are
    /// offered to it first).
    pub fn buffered(self) -> u64 {
        backend::buffered(self.0)
    }

    /// Closes the connection once what was written is sent
    /// (`loseConnection`).
    pub fn close(self) {
        backend::close(self.0)
    }

    /// Closes the connection now, dropping unsent output
    /// (`abortConnection`); `reason` goes to the host's log.
    pub fn abort(self, reason: &str) {
        backend::abort(self.0, reason)
    }

    /// Stops reading from this connection until [`Transport::resume_reading`].
    pub fn pause_reading(self) {
        backend::pause_reading(self.0)
    }

    /// Reads from this connection again.
    pub fn resume_reading(self) {
        backend::resume_reading(self.0)
    }

    /// The client's address (`None` once the connection is gone, or for a
    /// Unix-socket client).
    pub fn peer_addr(self) -> Option<SocketAddr> {
        backend::peer_addr(self.0)
    }

    /// The address the host accepted the connection on.
    pub fn local_addr(self) -> Option<SocketAddr> {
        backend::local_addr(self.0)
    }

    /// What the TLS handshake negotiated, on a listener that terminates
    /// TLS (`host run --tls-cert`); `None` on a plaintext one (or once the
    /// connection is gone).
    pub fn tls(self) -> Option<TlsSession> {
        backend::tls(self.0)
    }
}

/// The most bytes the host buffers for one connection.
pub fn write_limit() -> u64 {
    backend::write_limit()
}

/// A pending timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer(u64);

impl Timer {
    /// The timer's number.
    pub fn id(self) -> u64 {
        self.0
    }

    /// Cancels the timer; false if it fired already.
    pub fn cancel(self) -> bool {
        backend::cancel(self.0)
    }
}

/// Arranges for [`Protocol::timer_fired`] to be called once, `delay` from
/// now (`reactor.callLater`). Fails when the instance has as many pending
/// timers as the host allows.
pub fn call_later(delay: Duration) -> Result<Timer, String> {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    backend::call_later(ms).map(Timer)
}

/// A protocol: the state of one instance and what it does on each event.
///
/// Only [`init`](Protocol::init) and
/// [`data_received`](Protocol::data_received) are required.
pub trait Protocol: Sized + 'static {
    /// Creates the instance's state, once. An error means the instance
    /// cannot serve: the host logs it and retries later.
    fn init() -> Result<Self, String>;

    /// A client connected.
    fn connection_made(&mut self, t: Transport) {
        let _ = t;
    }

    /// Bytes arrived on `t` (at most 64 KiB per call, in order; a message
    /// may arrive split over several calls, or several in one).
    fn data_received(&mut self, t: Transport, data: &[u8]);

    /// What was buffered for `t` has been sent.
    fn write_drained(&mut self, t: Transport) {
        let _ = t;
    }

    /// `t` is gone.
    fn connection_lost(&mut self, t: Transport, reason: LostReason) {
        let _ = (t, reason);
    }

    /// A timer set with [`call_later`] is due.
    fn timer_fired(&mut self, timer: Timer) {
        let _ = timer;
    }

    /// `message` was published to `topic`, which the instance subscribed
    /// to with [`store::subscribe`] (the publisher's own messages
    /// included).
    fn message_received(&mut self, topic: &str, message: &[u8]) {
        let _ = (topic, message);
    }
}

/// Exports a [`Protocol`] as the component's `protocol` world. Use it once
/// per plugin crate, at the top level. (Natively it does nothing: use
/// [`testing::Harness`].)
#[macro_export]
macro_rules! export {
    ($protocol:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __PlughostExport = $crate::__private::Adapter<$protocol>;
            $crate::__private::bindings::__export_protocol!(
                __PlughostExport with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Implementation details of [`export!`]; not part of the API.
/// The shared store: buckets, counters and topics (see [`plughost_store`]).
pub use plughost_guest_rt::TlsSession;
pub use plughost_store as store;

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{Adapter, bindings};
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;
}

/// Configuration values the operator set for this plugin (the
/// `[listener.config]` table of the host's configuration file).
pub mod config {
    /// The value set for `key`, if any (natively: the harness's values).
    pub fn get(key: &str) -> Option<String> {
        crate::backend::config(key)
    }
}
