//! The serving mode of shared instances (the `protocol` world): reactor
//! threads, each a `mio` loop that owns its connections' sockets and one
//! instance of the plugin — or, after a reload, a few: the newest takes
//! new connections, older ones keep theirs until they close and are then
//! dropped. No thread and no fiber per connection: a connection is a
//! socket, a buffer and an entry in the instance's [`SharedIo`].
//!
//! The loop reads what arrives and calls `data-received`, sends buffered
//! output as sockets drain (then `write-drained`), reports every end with
//! `connection-lost`, delivers topic messages (`message-received`), fires
//! timers and ends idle connections. Output a callback writes to its own
//! connection is sent when it returns; output to other connections is
//! held to the end of the round and sent together (a chat member gets a
//! round's lines in one send; `connection/shared.rs`). A trap
//! closes every connection of that instance, each logged with the reason;
//! the next connection gets a fresh instance. An instance that cannot
//! start (its `init` fails) is retried with backoff, and connections that
//! arrive meanwhile are refused, with the reason logged.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::session::{Open, Session};
use crate::connection::Connection;
use crate::connection::shared::{Gone, LostReason, Received, SharedIo, TransportId, TransportMap};
use crate::metrics::ListenerMetrics;
use crate::plugin::{CurrentPlugin, Event, Outcome, Plugin, ProtocolInstance, Serving};
use crate::store::topics::Mailbox;

const WAKER: Token = Token(0);

/// Most bytes one `data-received` carries.
pub const READ_CHUNK: usize = 64 * 1024;

/// How long after the first failed start an instance is tried again; the
/// wait doubles with every failure in a row, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Topic messages delivered to one instance per round of the loop.
const MESSAGES_PER_ROUND: usize = 256;

/// Times the end of a round sends held output and reports what that ended
/// (whose callbacks may hold more) before leaving the rest to the next
/// round.
const SEND_PASSES: usize = 4;

/// How often idle connections are looked for, at most.
const IDLE_SWEEP: Duration = Duration::from_millis(250);

/// What every reactor of a listener runs with.
#[derive(Clone)]
pub struct ReactorSettings {
    /// The most unsent bytes buffered per connection.
    pub write_limit: usize,
    /// How long a connection may go without a byte moving either way.
    pub idle_timeout: Option<Duration>,
    /// The plugin in service, to drop instances of versions replaced.
    pub current: CurrentPlugin,
    /// The listener's counters.
    pub metrics: ListenerMetrics,
}

/// The reactor threads of one listener.
pub struct Reactors {
    loops: Vec<Handle>,
    draining: Arc<AtomicBool>,
}

struct Handle {
    sessions: Sender<Session>,
    waker: Arc<Waker>,
    /// Connections on this reactor.
    load: Arc<AtomicUsize>,
}

impl Reactors {
    /// Starts `count` (at least one) reactor threads named after
    /// `listener`: one instance each, so state is per reactor.
    pub fn start(count: usize, listener: &str, settings: &ReactorSettings) -> io::Result<Self> {
        let draining = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (sender, receiver) = mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let reactor = Reactor {
                poll,
                waker: Arc::clone(&waker),
                sessions: receiver,
                settings: settings.clone(),
                load: Arc::clone(&load),
                draining: Arc::clone(&draining),
                generations: Vec::new(),
                owner: TransportMap::default(),
                next_id: 1,
                next_generation: 0,
                unavailable: None,
                ready: VecDeque::new(),
                messages_waiting: false,
                buf: vec![0; READ_CHUNK].into_boxed_slice(),
                next_sweep: Instant::now(),
            };
            thread::Builder::new()
                .name(format!("reactor {listener} #{index}"))
                .spawn(move || reactor.run())?;
            loops.push(Handle {
                sessions: sender,
                waker,
                load,
            });
        }
        Ok(Self { loops, draining })
    }

    /// Hands `session` to the reactor with the fewest connections.
    pub fn admit(&self, session: Session) {
        let Some(chosen) = self
            .loops
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
        else {
            return;
        };
        chosen.load.fetch_add(1, Ordering::Relaxed);
        if chosen.sessions.send(session).is_err() || chosen.waker.wake().is_err() {
            chosen.load.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("reactor stopped; connection dropped");
        }
    }

    /// From now on, connections that end because the host shut their
    /// sockets down (at the end of a drain) are reported as `shutdown`.
    pub fn shutting_down(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// One instance and the connections it serves.
struct Generation {
    id: u64,
    plugin: Arc<Box<dyn Plugin>>,
    instance: Box<dyn ProtocolInstance>,
    /// Each connection's session bookkeeping (log line, counters, drain).
    opens: TransportMap<Open>,
}

impl Generation {
    /// Delivers `event` to the instance, then sends what the callback
    /// wrote to the connection it was about (a reply is not held); what
    /// it wrote to others is sent at the end of the round
    /// ([`Reactor::send_written`]), together with what the rest of the
    /// round writes to them.
    fn deliver(&mut self, event: Event<'_>) -> Result<(), String> {
        let delivered = self.instance.deliver(event);
        let about = match event {
            Event::ConnectionMade(t) | Event::DataReceived(t, _) | Event::WriteDrained(t) => {
                Some(t)
            }
            Event::ConnectionLost(..) | Event::TimerFired(_) | Event::MessageReceived(..) => None,
        };
        if let Some(t) = about {
            self.instance.io().send_written_to(t);
        }
        delivered
    }
}

/// Why new connections are refused for a while.
struct Unavailable {
    plugin: Arc<Box<dyn Plugin>>,
    reason: String,
    retry_at: Instant,
    delay: Duration,
}

struct Reactor {
    poll: Poll,
    /// Wakes this loop: for sessions handed over, and topic messages.
    waker: Arc<Waker>,
    sessions: Receiver<Session>,
    settings: ReactorSettings,
    load: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
    /// The newest last.
    generations: Vec<Generation>,
    /// Which generation each connection belongs to.
    owner: TransportMap<u64>,
    next_id: TransportId,
    next_generation: u64,
    unavailable: Option<Unavailable>,
    /// Connections with bytes to read, served in turn.
    ready: VecDeque<TransportId>,
    /// Topic messages are left over from the last round.
    messages_waiting: bool,
    buf: Box<[u8]>,
    next_sweep: Instant,
}

impl Reactor {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut open = true;
        while open || !self.owner.is_empty() {
            let timeout = self.timeout();
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("reactor failed: {err}");
                break;
            }
            let mut admit = false;
            for event in events.iter() {
                if event.token() == WAKER {
                    admit = true;
                    continue;
                }
                let id = event.token().0 as TransportId;
                let Some(generation) = self.owner.get(&id).copied() else {
                    continue;
                };
                let Some(index) = self.index_of(generation) else {
                    continue;
                };
                let io = self.generations[index].instance.io();
                let peer_closed = event.is_read_closed() || event.is_error();
                if (event.is_readable() || peer_closed) && io.mark_readable(id, peer_closed) {
                    self.ready.push_back(id);
                }
                if event.is_writable() || event.is_error() {
                    self.generations[index].instance.io().flush(id);
                    self.settle(generation);
                }
            }
            if admit {
                open = self.admit_waiting();
            }
            self.read_ready();
            self.deliver_messages();
            self.fire_timers();
            self.send_written();
            self.end_idle();
            self.drop_replaced();
        }
    }

    /// How long the loop may sleep: until the next timer, or the next idle
    /// sweep while connections are open.
    fn timeout(&mut self) -> Option<Duration> {
        let held = self
            .generations
            .iter_mut()
            .any(|g| g.instance.io().has_written());
        if !self.ready.is_empty() || self.messages_waiting || held {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for generation in &mut self.generations {
            if let Some(at) = generation.instance.io().timers().next_due() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if self.settings.idle_timeout.is_some() && !self.owner.is_empty() {
            next = Some(next.map_or(self.next_sweep, |n| n.min(self.next_sweep)));
        }
        next.map(|at| at.saturating_duration_since(now))
    }

    fn index_of(&self, generation: u64) -> Option<usize> {
        self.generations.iter().position(|g| g.id == generation)
    }

    /// Takes every session waiting; false once the server is gone.
    fn admit_waiting(&mut self) -> bool {
        loop {
            match self.sessions.try_recv() {
                Ok(session) => self.admit(session),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Starts serving `session` on the instance of its plugin version.
    fn admit(&mut self, session: Session) {
        let plugin = Arc::clone(&session.plugin);
        let Some((conn, open)) = session.open(Connection::non_blocking) else {
            self.load.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let generation = match self.instance_for(&plugin, conn.local_addr()) {
            Ok(generation) => generation,
            Err(reason) => {
                self.load.fetch_sub(1, Ordering::Relaxed);
                open.close(conn, Outcome::HostError(reason));
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&conn);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(err) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(id as usize), interest)
        {
            self.load.fetch_sub(1, Ordering::Relaxed);
            open.close(
                conn,
                Outcome::HostError(format!("cannot watch the socket: {err}")),
            );
            return;
        }
        let Some(index) = self.index_of(generation) else {
            self.load.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let entry = &mut self.generations[index];
        let readable = entry.instance.io().insert(id, conn);
        entry.opens.insert(id, open);
        self.owner.insert(id, generation);
        self.call(generation, Event::ConnectionMade(id));
        if readable {
            self.ready.push_back(id);
        }
    }

    /// The generation serving `plugin`: the newest if it runs that
    /// version, else a fresh instance (unless one failed to start lately).
    fn instance_for(
        &mut self,
        plugin: &Arc<Box<dyn Plugin>>,
        tag: &crate::address::PeerAddr,
    ) -> Result<u64, String> {
        if let Some(newest) = self.generations.last()
            && Arc::ptr_eq(&newest.plugin, plugin)
        {
            return Ok(newest.id);
        }
        if let Some(failed) = &self.unavailable
            && Arc::ptr_eq(&failed.plugin, plugin)
            && Instant::now() < failed.retry_at
        {
            return Err(format!(
                "no instance to serve it: {} (retrying in {:?})",
                failed.reason,
                failed.retry_at.saturating_duration_since(Instant::now())
            ));
        }
        let Serving::Shared(protocol) = plugin.serving() else {
            return Err("the plugin does not serve connections from a shared instance".into());
        };
        let waker = Arc::clone(&self.waker);
        let mailbox = Mailbox::new(move || {
            // A wake only fails if the loop is gone.
            let _ = waker.wake();
        });
        let io = SharedIo::new(self.settings.write_limit).with_mailbox(mailbox);
        match protocol.instantiate(io, tag) {
            Ok(instance) => {
                self.unavailable = None;
                self.next_generation += 1;
                let id = self.next_generation;
                self.settings.metrics.instance_started();
                tracing::info!(plugin = %plugin.version(), "protocol instance started");
                self.generations.push(Generation {
                    id,
                    plugin: Arc::clone(plugin),
                    instance,
                    opens: TransportMap::default(),
                });
                Ok(id)
            }
            Err(reason) => {
                let delay = match &self.unavailable {
                    Some(failed) if Arc::ptr_eq(&failed.plugin, plugin) => {
                        (failed.delay * 2).min(MAX_RETRY)
                    }
                    _ => FIRST_RETRY,
                };
                self.settings.metrics.instance_failed();
                tracing::error!(
                    plugin = %plugin.version(),
                    retry_in = ?delay,
                    "protocol instance cannot start: {reason}; refusing connections until it can"
                );
                self.unavailable = Some(Unavailable {
                    plugin: Arc::clone(plugin),
                    reason: reason.clone(),
                    retry_at: Instant::now() + delay,
                    delay,
                });
                Err(reason)
            }
        }
    }

    /// Delivers `event` to `generation`'s instance, then reports what
    /// ended; a trap poisons the instance.
    fn call(&mut self, generation: u64, event: Event<'_>) {
        let Some(index) = self.index_of(generation) else {
            return;
        };
        match self.generations[index].deliver(event) {
            Ok(()) => self.settle(generation),
            Err(reason) => self.poison(index, &reason),
        }
    }

    /// Reports every connection of `generation` that ended (calling
    /// `connection-lost`, which may end more), resumes paused readers and
    /// tells writers whose output drained.
    fn settle(&mut self, generation: u64) {
        loop {
            let Some(index) = self.index_of(generation) else {
                return;
            };
            let io = self.generations[index].instance.io();
            for id in io.take_resumed() {
                self.ready.push_back(id);
            }
            let ended = io.take_ended();
            let drained = io.take_drained();
            if ended.is_empty() && drained.is_empty() {
                return;
            }
            for id in drained {
                let entry = &mut self.generations[index];
                if let Err(reason) = entry.deliver(Event::WriteDrained(id)) {
                    return self.poison(index, &reason);
                }
            }
            for id in ended {
                let entry = &mut self.generations[index];
                let Some(gone) = entry.instance.io().remove(id) else {
                    continue;
                };
                let reason = gone.reason;
                let open = entry.opens.remove(&id);
                self.release(id, gone, open, None);
                let entry = &mut self.generations[index];
                if let Err(trap) = entry.deliver(Event::ConnectionLost(id, reason)) {
                    return self.poison(index, &trap);
                }
            }
        }
    }

    /// Closes one removed connection and logs how it ended (`trap`: the
    /// instance's trap, which ended it).
    fn release(&mut self, id: TransportId, gone: Gone, open: Option<Open>, trap: Option<&str>) {
        self.owner.remove(&id);
        self.load.fetch_sub(1, Ordering::Relaxed);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&gone.conn);
        // Deregister before the socket closes (the fd may be reused).
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let reason = match gone.reason {
            LostReason::PeerClosed if self.draining.load(Ordering::Relaxed) => LostReason::Shutdown,
            reason => reason,
        };
        let outcome = match (trap, reason) {
            (Some(trap), _) => Outcome::Trap(trap.to_string()),
            (None, reason) if reason.is_orderly() => Outcome::Ok,
            (None, LostReason::Aborted) => Outcome::HandleError(format!(
                "aborted by the plugin: {}",
                gone.abort_reason.as_deref().unwrap_or("no reason given")
            )),
            (None, reason) => Outcome::HandleError(reason.describe().to_string()),
        };
        let mut conn = gone.conn;
        if reason == LostReason::Closed {
            close_gently(&mut conn);
        }
        match open {
            Some(open) => open.close(conn, outcome),
            None => drop(conn),
        }
    }

    /// The instance at `index` trapped: closes all of its connections and
    /// drops it.
    fn poison(&mut self, index: usize, reason: &str) {
        let mut generation = self.generations.remove(index);
        let ids = generation.instance.io().ids();
        self.settings.metrics.instance_trapped();
        tracing::warn!(
            plugin = %generation.plugin.version(),
            connections = ids.len(),
            "protocol instance trapped: {reason}; closing its connections (new ones get a fresh instance)"
        );
        for id in ids {
            if let Some(gone) = generation.instance.io().remove(id) {
                let open = generation.opens.remove(&id);
                self.release(id, gone, open, Some(reason));
            }
        }
        self.ready.retain(|id| self.owner.contains_key(id));
    }

    /// Reads one chunk from each ready connection in turn (a connection
    /// with more to read goes to the back of the line).
    fn read_ready(&mut self) {
        let mut budget = self.ready.len();
        while budget > 0 {
            budget -= 1;
            let Some(id) = self.ready.pop_front() else {
                return;
            };
            let Some(generation) = self.owner.get(&id).copied() else {
                continue;
            };
            let Some(index) = self.index_of(generation) else {
                continue;
            };
            let received = self.generations[index]
                .instance
                .io()
                .read(id, &mut self.buf);
            match received {
                Received::Data { n, more } => {
                    if more {
                        self.ready.push_back(id);
                    }
                    let data = std::mem::take(&mut self.buf);
                    self.call(generation, Event::DataReceived(id, &data[..n]));
                    self.buf = data;
                }
                Received::Ended => self.settle(generation),
                Received::Nothing => {}
            }
        }
    }

    /// Calls `message-received` with the topic messages waiting, at most
    /// [`MESSAGES_PER_ROUND`] per instance before the loop serves sockets
    /// again.
    fn deliver_messages(&mut self) {
        self.messages_waiting = false;
        let mut index = 0;
        while index < self.generations.len() {
            let generation = self.generations[index].id;
            for _ in 0..MESSAGES_PER_ROUND {
                let Some(index) = self.index_of(generation) else {
                    break;
                };
                let Some(message) = self.generations[index].instance.io().next_message() else {
                    break;
                };
                self.call(
                    generation,
                    Event::MessageReceived(&message.topic, &message.body),
                );
            }
            if let Some(index) = self.index_of(generation)
                && self.generations[index].instance.io().has_messages()
            {
                self.messages_waiting = true;
            }
            // A trap removed the generation: the next one moved here.
            if self.index_of(generation).is_some() {
                index += 1;
            }
        }
    }

    /// Fires every timer that is due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut index = 0;
        while index < self.generations.len() {
            let generation = self.generations[index].id;
            let due = self.generations[index].instance.io().timers().pop_due(now);
            match due {
                Some(timer) => self.call(generation, Event::TimerFired(timer)),
                None => index += 1,
            }
        }
    }

    /// Sends the output every instance held this round (see
    /// `connection/shared.rs`), then reports what that ended — and sends
    /// what those reports' callbacks wrote (a member's leave notice when
    /// sending to it failed), a few times over; anything still held then
    /// makes the next round start at once (`timeout`).
    fn send_written(&mut self) {
        let generations: Vec<u64> = self.generations.iter().map(|g| g.id).collect();
        for generation in generations {
            for _ in 0..SEND_PASSES {
                let Some(index) = self.index_of(generation) else {
                    break;
                };
                let io = self.generations[index].instance.io();
                if !io.has_written() {
                    break;
                }
                io.send_written();
                self.settle(generation);
            }
        }
    }

    /// Ends connections where nothing moved for the idle timeout.
    fn end_idle(&mut self) {
        let Some(idle) = self.settings.idle_timeout else {
            return;
        };
        let now = Instant::now();
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + IDLE_SWEEP.min(idle);
        let Some(before) = now.checked_sub(idle) else {
            return;
        };
        let generations: Vec<u64> = self.generations.iter().map(|g| g.id).collect();
        for generation in generations {
            if let Some(index) = self.index_of(generation) {
                self.generations[index].instance.io().end_idle(before);
                self.settle(generation);
            }
        }
    }

    /// Drops instances of replaced versions once their last connection is
    /// gone (their state goes with them).
    fn drop_replaced(&mut self) {
        let current = self.settings.current.get();
        self.generations.retain(|g| {
            let keep = !g.opens.is_empty() || Arc::ptr_eq(&g.plugin, &current);
            if !keep {
                tracing::info!(plugin = %g.plugin.version(), "protocol instance of a replaced version dropped");
            }
            keep
        });
    }
}

/// Before a connection the plugin closed is dropped: ends the write side
/// (the peer sees the end of what was sent) and throws away what the peer
/// sent that nobody read, so that closing does not answer it with a reset
/// that could destroy the last response in flight.
fn close_gently(conn: &mut Connection) {
    if conn
        .shutdown(crate::connection::ShutdownDirection::Write)
        .is_err()
    {
        return;
    }
    let mut sink = [0u8; 16 * 1024];
    for _ in 0..16 {
        match conn.try_read_into(&mut sink) {
            Ok(Some(n)) if n > 0 => {}
            _ => return,
        }
    }
}
