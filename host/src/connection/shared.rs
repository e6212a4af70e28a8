//! The connections and timers of one shared instance (the `protocol`
//! world): [`SharedIo`] is what the instance's imports change — `write`
//! sends or buffers, `close` and `abort` end a connection, reading is
//! paused and resumed, timers are set — and what the reactor
//! (`server/reactor.rs`) drives: it reads, sends what is buffered, closes
//! what ended and fires what is due.
//!
//! Nothing here waits. Small writes are held and sent together later, so
//! that what a connection is written in a burst leaves in one system call
//! — a chat member gets the lines of every talker of a round in one send,
//! not one per line — as Twisted's transports write at the next turn of
//! the reactor. The reactor says when: a connection's own callback's
//! output goes when that callback returns ([`SharedIo::send_written_to`]:
//! a reply is not delayed), everything else at the end of the reactor's
//! round ([`SharedIo::send_written`]). A large write, or small ones adding
//! up to [`SEND_AT_ONCE`], is sent at once, and asking how much is
//! [`SharedIo::buffered`] sends first, so the answer is what the socket did
//! not take. What the socket does not take is kept, bounded per connection
//! by the write limit, and sent when the socket is writable again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ConnError, Connection};
use crate::address::PeerAddr;
use crate::store::topics::{Mailbox, Message, Subscriptions};

/// Names a connection of a shared instance (the WIT `transport`); never
/// reused within a reactor.
pub type TransportId = u64;

/// A map keyed by [`TransportId`], hashed by [`TransportIdHasher`].
pub type TransportMap<V> = HashMap<TransportId, V, BuildHasherDefault<TransportIdHasher>>;

/// Hashes a [`TransportId`] with one multiplication (Fibonacci hashing).
/// Ids are numbers the host counts up, not input a client chooses, so the
/// default hasher's defence against chosen keys buys nothing here, and its
/// cost showed in a profile of a chat room's fan-out (a look-up per member
/// and line).
#[derive(Debug, Default, Clone, Copy)]
pub struct TransportIdHasher(u64);

impl Hasher for TransportIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for a `u64` key; any other key still
        // hashes correctly.
        for &byte in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Names a pending timer of a shared instance (the WIT `timer`).
pub type TimerId = u64;

/// Most timers one instance may have pending.
pub const MAX_TIMERS: usize = 10_000;

/// Output held to be sent together is sent at once when it reaches this
/// size (and a write this large to a connection with nothing held is
/// sent without being copied): past it, one system call more costs little
/// per byte, and holding more would bring a plugin that writes much in
/// one callback nearer its write limit than the socket would.
pub const SEND_AT_ONCE: usize = 16 * 1024;

/// Why a connection of a shared instance ended (the WIT `lost-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The peer closed its side (and what was written before was sent).
    PeerClosed,
    /// The plugin closed it, and everything written was sent.
    Closed,
    /// The plugin aborted it.
    Aborted,
    /// The peer reset it, or sending failed.
    Reset,
    /// Nothing moved either way for longer than the idle timeout.
    TimedOut,
    /// The host shut it down at the end of a drain.
    Shutdown,
    /// Another transport failure.
    Error,
}

impl LostReason {
    /// Whether the connection ended the way connections normally do.
    pub fn is_orderly(self) -> bool {
        matches!(self, LostReason::PeerClosed | LostReason::Closed)
    }

    /// A few words for the log.
    pub fn describe(self) -> &'static str {
        match self {
            LostReason::PeerClosed => "the peer closed the connection",
            LostReason::Closed => "the plugin closed the connection",
            LostReason::Aborted => "the plugin aborted the connection",
            LostReason::Reset => "the connection was reset",
            LostReason::TimedOut => "idle timeout",
            LostReason::Shutdown => "the host is shutting down",
            LostReason::Error => "transport error",
        }
    }

    fn from_conn_error(err: ConnError) -> Self {
        match err {
            ConnError::Reset | ConnError::BrokenPipe | ConnError::Closed => LostReason::Reset,
            _ => LostReason::Error,
        }
    }
}

/// Why a write was refused (the WIT `write-error`); nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The connection is closed, closing, or unknown.
    Closed,
    /// The write would take the unsent output past the write limit.
    BufferFull,
}

/// Why [`SharedIo::send`] sends a connection's output now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Its socket became writable: send what waits.
    Writable,
    /// A burst ended (see the module doc): send what it held, if anything;
    /// what the socket does not take makes `write-drained` due.
    Held,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Open,
    /// No more writes; ends with this reason once the output is sent.
    Flushing(LostReason),
    /// Ended; `connection-lost` is due.
    Ended(LostReason),
}

/// One connection of a shared instance.
struct Transport {
    conn: Connection,
    /// Output not yet sent: `unsent[sent..]`.
    unsent: Vec<u8>,
    sent: usize,
    phase: Phase,
    /// What the plugin said when it aborted the connection.
    abort_reason: Option<String>,
    paused: bool,
    /// The socket may have bytes (or the end of the stream) to read.
    readable: bool,
    /// The peer's side is closed: read until the end of the stream even
    /// after a short read.
    read_closed: bool,
    /// A write had to be buffered: `write-drained` is due once it is sent.
    drained_due: bool,
    /// Bytes written and not yet tried on the socket (when not 0, the id
    /// is in [`SharedIo::written`]).
    held: usize,
    /// The socket refused the last send (would block): trying again before
    /// it is reported writable is a wasted system call.
    blocked: bool,
    /// When a byte last moved either way.
    last_progress: Instant,
}

impl Transport {
    /// Bytes written and not on the socket yet: buffered here, or (TLS)
    /// taken into records the socket did not take.
    fn pending(&self) -> usize {
        self.unsent.len() - self.sent + self.conn.unsent()
    }

    /// Ends the connection for `reason` unless it ended already.
    fn end(&mut self, reason: LostReason) -> bool {
        if matches!(self.phase, Phase::Ended(_)) {
            return false;
        }
        self.phase = Phase::Ended(reason);
        true
    }
}

/// What one read from a connection gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// `n` bytes are in the caller's buffer; `more` when the socket may
    /// hold more right away.
    Data {
        /// How many bytes arrived.
        n: usize,
        /// Whether reading again now may give more.
        more: bool,
    },
    /// Nothing to read now (or the connection is paused, flushing, or
    /// gone).
    Nothing,
    /// The connection ended while reading (its end is queued).
    Ended,
}

/// A connection removed from its instance after it ended.
pub struct Gone {
    /// The connection, still open (deregister it, then drop it).
    pub conn: Connection,
    /// Why it ended.
    pub reason: LostReason,
    /// The plugin's words, if it aborted the connection.
    pub abort_reason: Option<String>,
}

/// The connections and timers of one shared instance.
pub struct SharedIo {
    transports: TransportMap<Transport>,
    write_limit: usize,
    /// Connections whose end is not yet reported, in the order they ended.
    ended: Vec<TransportId>,
    /// Connections whose reading resumed, for the reactor to look at.
    resumed: Vec<TransportId>,
    /// Connections whose output emptied after buffering: `write-drained`
    /// is due.
    drained: Vec<TransportId>,
    /// Connections with output held to be sent together.
    written: Vec<TransportId>,
    timers: Timers,
    /// The topics the instance subscribed to (`None`: it cannot receive
    /// messages, as when `host check` times an instance).
    subscriptions: Option<Subscriptions>,
}

impl SharedIo {
    /// No connections yet; at most `write_limit` unsent bytes each.
    pub fn new(write_limit: usize) -> Self {
        Self {
            transports: TransportMap::default(),
            write_limit,
            ended: Vec::new(),
            resumed: Vec::new(),
            drained: Vec::new(),
            written: Vec::new(),
            timers: Timers::default(),
            subscriptions: None,
        }
    }

    /// The same, receiving topic messages into `mailbox`.
    pub fn with_mailbox(mut self, mailbox: Arc<Mailbox>) -> Self {
        self.subscriptions = Some(Subscriptions::new(mailbox));
        self
    }

    /// The instance's topic subscriptions, where it can receive messages.
    pub fn subscriptions(&mut self) -> Option<&mut Subscriptions> {
        self.subscriptions.as_mut()
    }

    /// Whether topic messages wait for the instance.
    pub fn has_messages(&self) -> bool {
        self.subscriptions.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// The oldest topic message waiting for the instance.
    pub fn next_message(&mut self) -> Option<Message> {
        self.subscriptions.as_ref()?.next()
    }

    // --- the plugin's side (the WIT imports) ---------------------------

    /// Queues `data` on `id`: held to be sent with the rest of a burst if
    /// small, else sent at once, the rest buffered (see the module doc).
    pub fn write(&mut self, id: TransportId, data: &[u8]) -> Result<(), WriteError> {
        let limit = self.write_limit;
        let transport = self.open(id)?;
        if transport.pending() + data.len() > limit && transport.held > 0 {
            // Held bytes count against the limit only once the socket has
            // refused them: offer them first.
            self.send_written_to(id);
        }
        let transport = self.open(id)?;
        if transport.pending() + data.len() > limit {
            // The plugin waits for `write-drained` to write again.
            transport.drained_due = true;
            return Err(WriteError::BufferFull);
        }
        if transport.pending() == 0 && data.len() >= SEND_AT_ONCE {
            return self.send_at_once(id, data);
        }
        if transport.pending() == 0 {
            transport.unsent.clear();
            transport.sent = 0;
        }
        transport.unsent.extend_from_slice(data);
        let first = transport.held == 0;
        transport.held += data.len();
        let held = transport.held;
        if first {
            self.written.push(id);
        }
        if held >= SEND_AT_ONCE {
            self.send_written_to(id);
        }
        Ok(())
    }

    /// Sends `data` on `id`, which has nothing pending, straight from the
    /// caller's bytes; buffers what the socket does not take.
    fn send_at_once(&mut self, id: TransportId, data: &[u8]) -> Result<(), WriteError> {
        let Some(transport) = self.transports.get_mut(&id) else {
            return Err(WriteError::Closed);
        };
        let n = match transport.conn.try_write(data) {
            Ok(sent) => sent.unwrap_or(0),
            Err(err) => {
                self.end(id, LostReason::from_conn_error(err));
                return Err(WriteError::Closed);
            }
        };
        if n > 0 {
            transport.last_progress = Instant::now();
        }
        transport.blocked = n < data.len();
        transport.unsent.clear();
        transport.sent = 0;
        transport.unsent.extend_from_slice(&data[n..]);
        // Bytes not on the socket yet (here, or TLS records): the plugin
        // hears when they are.
        if transport.pending() > 0 {
            transport.drained_due = true;
        }
        Ok(())
    }

    /// Sends the output held for `id`, as far as its socket takes it.
    pub fn send_written_to(&mut self, id: TransportId) {
        self.send(id, Trigger::Held, None);
    }

    /// Sends the output held for every connection, as far as each socket
    /// takes it.
    pub fn send_written(&mut self) {
        let written = std::mem::take(&mut self.written);
        // One clock read for the round's sends.
        let now = Some(Instant::now());
        for &id in &written {
            self.send(id, Trigger::Held, now);
        }
        // Keep the list's allocation for the next round.
        self.written = written;
        self.written.clear();
    }

    /// Whether some connection has output held to be sent.
    pub fn has_written(&self) -> bool {
        !self.written.is_empty()
    }

    /// Bytes written to `id` and not taken by the socket (held output is
    /// tried first).
    pub fn buffered(&mut self, id: TransportId) -> usize {
        self.send_written_to(id);
        self.transports.get(&id).map_or(0, Transport::pending)
    }

    /// The most bytes buffered for one connection.
    pub fn write_limit(&self) -> usize {
        self.write_limit
    }

    /// Closes `id` once its output is sent.
    pub fn close(&mut self, id: TransportId) {
        if let Ok(transport) = self.open(id) {
            if transport.pending() == 0 {
                self.end(id, LostReason::Closed);
            } else {
                transport.phase = Phase::Flushing(LostReason::Closed);
            }
        }
    }

    /// Closes `id` now, dropping the output the socket does not take at
    /// once (held output is offered to it first, as it would have been
    /// had the callback returned); `reason` is logged.
    pub fn abort(&mut self, id: TransportId, reason: String) {
        if let Some(transport) = self.transports.get_mut(&id)
            && !matches!(transport.phase, Phase::Ended(_))
        {
            if std::mem::take(&mut transport.held) > 0 {
                let rest = &transport.unsent[transport.sent..];
                // Best effort: the connection ends either way.
                if let Ok(Some(n)) = transport.conn.try_write(rest) {
                    transport.sent += n;
                }
            }
            transport.abort_reason = Some(reason);
            self.end(id, LostReason::Aborted);
        }
    }

    /// Stops reading from `id` until [`SharedIo::resume_reading`].
    pub fn pause_reading(&mut self, id: TransportId) {
        if let Some(transport) = self.transports.get_mut(&id) {
            transport.paused = true;
        }
    }

    /// Reads from `id` again.
    pub fn resume_reading(&mut self, id: TransportId) {
        if let Some(transport) = self.transports.get_mut(&id)
            && std::mem::take(&mut transport.paused)
        {
            self.resumed.push(id);
        }
    }

    /// The client's address.
    pub fn peer_addr(&self, id: TransportId) -> Option<&PeerAddr> {
        self.transports.get(&id).map(|t| t.conn.peer_addr())
    }

    /// The address `id` was accepted on.
    pub fn local_addr(&self, id: TransportId) -> Option<&PeerAddr> {
        self.transports.get(&id).map(|t| t.conn.local_addr())
    }

    /// What `id`'s TLS handshake negotiated, on a TLS listener.
    pub fn tls(&self, id: TransportId) -> Option<crate::connection::tls::Negotiated> {
        self.transports.get(&id).and_then(|t| t.conn.tls())
    }

    /// The instance's timers.
    pub fn timers(&mut self) -> &mut Timers {
        &mut self.timers
    }

    // --- the reactor's side --------------------------------------------

    /// Adds an accepted connection as `id`; true when it has bytes to
    /// read already that no readiness event will announce (decrypted in
    /// its TLS handshake): the reactor should read it now.
    pub fn insert(&mut self, id: TransportId, mut conn: Connection) -> bool {
        let readable = conn.has_buffered_input();
        let transport = Transport {
            conn,
            unsent: Vec::new(),
            sent: 0,
            phase: Phase::Open,
            abort_reason: None,
            paused: false,
            readable,
            read_closed: false,
            drained_due: false,
            held: 0,
            blocked: false,
            last_progress: Instant::now(),
        };
        self.transports.insert(id, transport);
        readable
    }

    /// How many connections the instance has (ended ones included until
    /// they are removed).
    pub fn len(&self) -> usize {
        self.transports.len()
    }

    /// Whether the instance has no connection.
    pub fn is_empty(&self) -> bool {
        self.transports.is_empty()
    }

    /// Every connection's id.
    pub fn ids(&self) -> Vec<TransportId> {
        self.transports.keys().copied().collect()
    }

    /// The socket of `id`.
    pub fn fd(&self, id: TransportId) -> Option<RawFd> {
        self.transports.get(&id).map(|t| t.conn.as_raw_fd())
    }

    /// Notes that `id`'s socket reported readable (`peer_closed`: with the
    /// peer's side closed); true when the reactor should read it now.
    pub fn mark_readable(&mut self, id: TransportId, peer_closed: bool) -> bool {
        let Some(transport) = self.transports.get_mut(&id) else {
            return false;
        };
        transport.readable = true;
        transport.read_closed |= peer_closed;
        transport.phase == Phase::Open && !transport.paused
    }

    /// Connections whose reading resumed and that may have bytes waiting.
    pub fn take_resumed(&mut self) -> Vec<TransportId> {
        let resumed = std::mem::take(&mut self.resumed);
        resumed
            .into_iter()
            .filter(|id| {
                self.transports
                    .get(id)
                    .is_some_and(|t| t.readable && t.phase == Phase::Open)
            })
            .collect()
    }

    /// Reads from `id` into `buf` if it is open, unpaused and readable. A
    /// read at the end of the stream ends the connection once its output
    /// is sent.
    pub fn read(&mut self, id: TransportId, buf: &mut [u8]) -> Received {
        let Some(transport) = self.transports.get_mut(&id) else {
            return Received::Nothing;
        };
        if transport.phase != Phase::Open || transport.paused || !transport.readable {
            return Received::Nothing;
        }
        match transport.conn.try_read_into(buf) {
            Ok(Some(0)) => {
                transport.readable = false;
                if transport.pending() == 0 {
                    self.end(id, LostReason::PeerClosed);
                    Received::Ended
                } else {
                    transport.phase = Phase::Flushing(LostReason::PeerClosed);
                    Received::Nothing
                }
            }
            Ok(Some(n)) => {
                transport.last_progress = Instant::now();
                // A short read drained the socket, unless the peer's side
                // is closed: then read on to the end of the stream.
                let more = n == buf.len() || transport.read_closed;
                transport.readable = more;
                Received::Data { n, more }
            }
            Ok(None) => {
                transport.readable = false;
                Received::Nothing
            }
            Err(err) => {
                self.end(id, LostReason::from_conn_error(err));
                Received::Ended
            }
        }
    }

    /// Sends what `id` has buffered, as far as the socket takes it (its
    /// socket became writable).
    pub fn flush(&mut self, id: TransportId) {
        self.send(id, Trigger::Writable, None);
    }

    /// Sends `id`'s pending output as far as the socket takes it, for
    /// `trigger`; one look-up, as this runs once per connection and burst
    /// (a chat line to each member). `now` is the time bytes that move
    /// are stamped with; `None` reads the clock only if some do (most
    /// callbacks hold nothing for their own connection).
    fn send(&mut self, id: TransportId, trigger: Trigger, mut now: Option<Instant>) {
        let Some(transport) = self.transports.get_mut(&id) else {
            return;
        };
        match trigger {
            Trigger::Held if std::mem::take(&mut transport.held) == 0 => return,
            Trigger::Held if transport.blocked => {
                // Sent when the socket is writable again, which the
                // plugin hears.
                transport.drained_due = true;
                return;
            }
            Trigger::Held => {}
            Trigger::Writable => transport.blocked = false,
        }
        if matches!(transport.phase, Phase::Ended(_)) {
            return;
        }
        while transport.pending() > 0 {
            let rest = &transport.unsent[transport.sent..];
            let sent = if rest.is_empty() {
                transport.conn.try_flush().map(|done| done.map(|()| 0))
            } else {
                transport.conn.try_write(rest)
            };
            match sent {
                Ok(Some(n)) => {
                    transport.sent += n;
                    transport.last_progress = *now.get_or_insert_with(Instant::now);
                }
                Ok(None) => {
                    transport.blocked = true;
                    break;
                }
                Err(err) => {
                    self.end(id, LostReason::from_conn_error(err));
                    return;
                }
            }
        }
        if transport.pending() > 0 {
            // The plugin hears when what the socket did not take is gone.
            if trigger == Trigger::Held {
                transport.drained_due = true;
            }
            // Keep the buffer from growing by what was already sent.
            if transport.sent > transport.unsent.len() / 2 {
                transport.unsent.drain(..transport.sent);
                transport.sent = 0;
            }
            return;
        }
        transport.unsent = Vec::new();
        transport.sent = 0;
        match transport.phase {
            Phase::Flushing(reason) => {
                self.end(id, reason);
            }
            Phase::Open if std::mem::take(&mut transport.drained_due) => self.drained.push(id),
            _ => {}
        }
    }

    /// Connections whose output emptied after buffering.
    pub fn take_drained(&mut self) -> Vec<TransportId> {
        let drained = std::mem::take(&mut self.drained);
        drained
            .into_iter()
            .filter(|id| {
                self.transports
                    .get(id)
                    .is_some_and(|t| t.phase == Phase::Open)
            })
            .collect()
    }

    /// Ends `id` for `reason` (the host's decision: idle, shutdown, …).
    pub fn end(&mut self, id: TransportId, reason: LostReason) {
        if let Some(transport) = self.transports.get_mut(&id)
            && transport.end(reason)
        {
            self.ended.push(id);
        }
    }

    /// Connections that ended and are not yet removed, in order.
    pub fn take_ended(&mut self) -> Vec<TransportId> {
        std::mem::take(&mut self.ended)
    }

    /// Removes `id` (whether or not it ended: with [`LostReason::Error`]
    /// if it had not).
    pub fn remove(&mut self, id: TransportId) -> Option<Gone> {
        let transport = self.transports.remove(&id)?;
        let reason = match transport.phase {
            Phase::Ended(reason) => reason,
            _ => LostReason::Error,
        };
        Some(Gone {
            conn: transport.conn,
            reason,
            abort_reason: transport.abort_reason,
        })
    }

    /// Ends every connection where nothing moved since `before`.
    pub fn end_idle(&mut self, before: Instant) {
        let idle: Vec<TransportId> = self
            .transports
            .iter()
            .filter(|(_, t)| t.last_progress < before && !matches!(t.phase, Phase::Ended(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.end(id, LostReason::TimedOut);
        }
    }

    fn open(&mut self, id: TransportId) -> Result<&mut Transport, WriteError> {
        match self.transports.get_mut(&id) {
            Some(transport) if transport.phase == Phase::Open => Ok(transport),
            _ => Err(WriteError::Closed),
        }
    }
}

/// The pending timers of one instance.
#[derive(Default)]
pub struct Timers {
    next_id: TimerId,
    /// Due times; entries of cancelled timers stay until they surface.
    due: BinaryHeap<Reverse<(Instant, TimerId)>>,
    pending: HashSet<TimerId>,
}

impl Timers {
    /// A timer due `delay` from now; fails past [`MAX_TIMERS`] pending.
    pub fn call_later(&mut self, delay: Duration) -> Result<TimerId, String> {
        if self.pending.len() >= MAX_TIMERS {
            return Err(format!(
                "too many pending timers (the host allows {MAX_TIMERS})"
            ));
        }
        self.next_id += 1;
        let id = self.next_id;
        let now = Instant::now();
        let at = now
            .checked_add(delay)
            .unwrap_or(now + Duration::from_secs(1 << 40));
        self.due.push(Reverse((at, id)));
        self.pending.insert(id);
        Ok(id)
    }

    /// Cancels a pending timer; false if it fired already or never was.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let cancelled = self.pending.remove(&id);
        // Drop cancelled entries once they make up most of the heap.
        if cancelled && self.due.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.due.retain(|Reverse((_, id))| pending.contains(id));
        }
        cancelled
    }

    /// When the next pending timer is due.
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.due.peek() {
            if self.pending.contains(id) {
                return Some(*at);
            }
            self.due.pop();
        }
        None
    }

    /// A timer due at `now` or before, if any; it no longer counts as
    /// pending.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerId> {
        while let Some(at) = self.next_due() {
            if at > now {
                return None;
            }
            let Reverse((_, id)) = self.due.pop()?;
            if self.pending.remove(&id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::connection::Stream;

    /// Shared I/O with one connection (id 1) over a Unix socket pair whose
    /// buffers are small, and the client's end.
    fn one_connection(write_limit: usize) -> (SharedIo, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let stream = Stream::Unix(server);
        let peer = stream.peer_addr().unwrap();
        let conn = Connection::non_blocking(stream, peer, None)
            .map_err(|unwrapped| unwrapped.error)
            .unwrap();
        let mut io = SharedIo::new(write_limit);
        io.insert(1, conn);
        (io, client)
    }

    #[test]
    fn output_left_in_tls_records_is_reported_drained_once_sent() {
        // Each write below is taken whole into TLS records; the socket
        // takes only some of them. Waiting records count as buffered, so
        // the instance must hear when they are gone.
        let (tls, mut client) = crate::connection::tls::testing::pair(Some(4096));
        let stream = Stream::Tls(Box::new(tls));
        let peer = stream.peer_addr().unwrap();
        let conn = Connection::non_blocking(stream, peer, None)
            .map_err(|unwrapped| unwrapped.error)
            .unwrap();
        let mut io = SharedIo::new(1 << 20);
        io.insert(1, conn);
        let chunk = vec![5u8; 16 * 1024];
        let mut written = 0;
        while io.buffered(1) == 0 {
            io.write(1, &chunk).unwrap();
            written += chunk.len();
        }
        let reader = std::thread::spawn(move || {
            let mut echo = vec![0u8; written];
            client.read_exact(&mut echo).unwrap();
            client
        });
        while io.buffered(1) > 0 {
            io.flush(1);
            let fd = io.fd(1).unwrap();
            // Until the socket takes more (the reader makes room).
            crate::sys::socket::wait_readable(&[fd], Some(std::time::Duration::from_millis(5)))
                .unwrap();
        }
        let _client = reader.join().unwrap();
        assert_eq!(io.take_drained(), vec![1]);
    }

    #[test]
    fn asking_what_is_buffered_sends_held_output_first() {
        // proto-echo's pattern: write, then pause reading if the socket
        // did not take it all.
        let (mut io, mut client) = one_connection(1024);
        io.write(1, b"hello").unwrap();
        assert_eq!(io.buffered(1), 0);
        let mut got = [0; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(io.take_drained().is_empty());
    }

    /// What `client` can read now, without waiting.
    fn readable_now(client: &mut UnixStream) -> Vec<u8> {
        client.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        client.set_nonblocking(false).unwrap();
        got
    }

    #[test]
    fn the_small_writes_of_one_callback_leave_together_when_it_returns() {
        let (mut io, mut client) = one_connection(1024);
        io.write(1, b"one\n").unwrap();
        io.write(1, b"two\n").unwrap();
        assert!(
            readable_now(&mut client).is_empty(),
            "held to be sent together"
        );
        io.send_written_to(1);
        assert_eq!(readable_now(&mut client), b"one\ntwo\n");
        assert!(
            io.take_drained().is_empty(),
            "nothing had to wait for the socket"
        );
    }

    #[test]
    fn held_output_is_sent_at_once_when_it_adds_up() {
        let (mut io, mut client) = one_connection(1 << 20);
        let line = [b'x'; 1000];
        for _ in 0..SEND_AT_ONCE / line.len() + 1 {
            io.write(1, &line).unwrap();
        }
        assert!(readable_now(&mut client).len() >= SEND_AT_ONCE);
    }

    #[test]
    fn held_output_counts_against_a_small_limit_only_once_the_socket_refused_it() {
        // A write limit below SEND_AT_ONCE: held bytes alone would reach
        // it, though the socket is empty and would take them.
        let (mut io, mut client) = one_connection(4096);
        let line = [b'y'; 1000];
        for _ in 0..8 {
            io.write(1, &line).expect("the socket takes what is held");
        }
        io.send_written();
        assert_eq!(readable_now(&mut client).len(), 8000);
    }

    #[test]
    fn abort_offers_the_held_output_to_the_socket_first() {
        let (mut io, mut client) = one_connection(1024);
        io.write(1, b"goodbye\n").unwrap();
        io.abort(1, "done".into());
        assert_eq!(readable_now(&mut client), b"goodbye\n");
        assert_eq!(io.take_ended(), vec![1]);
    }

    #[test]
    fn close_after_held_output_ends_once_it_is_sent() {
        let (mut io, mut client) = one_connection(1024);
        io.write(1, b"last words").unwrap();
        io.close(1);
        assert!(io.take_ended().is_empty(), "the output is not sent yet");
        io.send_written();
        assert_eq!(io.take_ended(), vec![1]);
        assert_eq!(readable_now(&mut client), b"last words");
    }

    #[test]
    fn output_past_the_limit_is_refused_whole_and_drains_later() {
        let (mut io, mut client) = one_connection(4 << 20);
        // Fill the socket, then some: the rest is buffered.
        let chunk = vec![7u8; 1 << 20];
        io.write(1, &chunk).unwrap();
        io.write(1, &chunk).unwrap();
        let buffered = io.buffered(1);
        assert!(buffered > 0, "a Unix socket does not take 2 MiB at once");
        let too_much = vec![0u8; 4 << 20];
        assert_eq!(io.write(1, &too_much), Err(WriteError::BufferFull));
        assert_eq!(io.buffered(1), buffered, "a refused write adds nothing");
        // The client reads everything; flushing empties the buffer.
        let mut sink = vec![0u8; 1 << 16];
        let mut read = 0;
        while read < 2 << 20 {
            read += client.read(&mut sink).unwrap();
            io.flush(1);
        }
        assert_eq!(io.buffered(1), 0);
        assert_eq!(io.take_drained(), vec![1]);
    }

    #[test]
    fn close_waits_for_the_output_and_abort_does_not() {
        let (mut io, _client) = one_connection(8 << 20);
        io.write(1, &vec![1u8; 4 << 20]).unwrap();
        io.close(1);
        assert!(io.take_ended().is_empty(), "output is still being sent");
        assert_eq!(io.write(1, b"x"), Err(WriteError::Closed));
        io.abort(1, "enough".into());
        assert_eq!(io.take_ended(), vec![1]);
        let gone = io.remove(1).unwrap();
        assert_eq!(gone.reason, LostReason::Aborted);
        assert_eq!(gone.abort_reason.as_deref(), Some("enough"));
    }

    #[test]
    fn the_end_of_the_stream_ends_the_connection_once() {
        let (mut io, mut client) = one_connection(1024);
        client.write_all(b"bye").unwrap();
        drop(client);
        assert!(io.mark_readable(1, true));
        let mut buf = [0u8; 64];
        assert_eq!(io.read(1, &mut buf), Received::Data { n: 3, more: true });
        assert_eq!(io.read(1, &mut buf), Received::Ended);
        io.end(1, LostReason::Error);
        assert_eq!(io.take_ended(), vec![1]);
        assert_eq!(io.remove(1).unwrap().reason, LostReason::PeerClosed);
    }

    #[test]
    fn a_paused_connection_is_not_read_until_resumed() {
        let (mut io, mut client) = one_connection(1024);
        client.write_all(b"hi").unwrap();
        io.pause_reading(1);
        assert!(!io.mark_readable(1, false));
        let mut buf = [0u8; 64];
        assert_eq!(io.read(1, &mut buf), Received::Nothing);
        io.resume_reading(1);
        assert_eq!(io.take_resumed(), vec![1]);
        assert_eq!(io.read(1, &mut buf), Received::Data { n: 2, more: false });
    }

    #[test]
    fn transport_ids_counted_up_spread_over_the_hash() {
        use std::hash::BuildHasher;
        let hasher = BuildHasherDefault::<TransportIdHasher>::default();
        let hashes: Vec<u64> = (1..=1000u64).map(|id| hasher.hash_one(id)).collect();
        // The table picks a bucket from the low bits and a tag from the top
        // seven: both must vary from one id to the next.
        let low: HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(low.len(), 1000);
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn timers_fire_in_order_and_cancelled_ones_never() {
        let mut timers = Timers::default();
        let later = timers.call_later(Duration::from_secs(60)).unwrap();
        let first = timers.call_later(Duration::ZERO).unwrap();
        let second = timers.call_later(Duration::ZERO).unwrap();
        assert!(timers.cancel(second));
        assert!(!timers.cancel(second));
        let now = Instant::now();
        assert_eq!(timers.pop_due(now), Some(first));
        assert_eq!(timers.pop_due(now), None);
        assert!(timers.next_due().is_some());
        assert!(timers.cancel(later));
        assert_eq!(timers.next_due(), None);
    }

    #[test]
    fn pending_timers_are_bounded() {
        let mut timers = Timers::default();
        for _ in 0..MAX_TIMERS {
            timers.call_later(Duration::from_secs(1)).unwrap();
        }
        assert!(timers.call_later(Duration::from_secs(1)).is_err());
    }
}
