//! The server: `mio` owns the listening sockets and the accept loop, and
//! the server owns the serving mode. Each accepted connection whose plugin
//! has an event-loop form goes to the least busy event-loop thread
//! ([`events`], where it is one task among many) when the listener has
//! loops; a connection whose plugin serves many from one instance (the
//! `protocol` world) goes to a reactor thread ([`reactor`]); any other
//! goes to a pooled thread of its own ([`pool`]). On a listener behind a
//! load balancer or with TLS, `preamble.rs` first reads the PROXY header
//! and shakes hands, on threads of its own.
//! [`session`] is one connection's life in either mode. Signals stop the
//! server gracefully (SIGINT/SIGTERM: stop accepting, drain for the grace
//! period) or ask for a reload (SIGHUP). [`udp`] is the datagram server.

mod access;
mod bind;
mod dispatch;
mod events;
mod listener;
mod live;
mod pool;
mod preamble;
mod reactor;
mod session;
mod signals;
mod udp;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::{Events, Poll, Token, Waker};

pub use self::access::AccessRules;
use self::dispatch::Dispatcher;
use self::events::EventLoops;
use self::listener::Listener;
use self::live::LiveConnections;
use self::pool::ThreadPool;
use self::preamble::Preamble;
use self::reactor::{ReactorSettings, Reactors};
use self::signals::{ControlSignals, Stop};
pub use self::udp::{UdpConfig, UdpServer};
use crate::address::{ListenAddr, PeerAddr};
use crate::connection::Stream;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::plugin::{CurrentPlugin, Serving};

const SIGNALS: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// How long to wait for connection threads after shutting their sockets
/// down at the end of the grace period.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often, at most, to log that connections wait at the cap.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);
/// How often to retry `accept` while paused by the connection cap or by
/// running out of file descriptors.
const PAUSED_RETRY: Duration = Duration::from_millis(100);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name in logs and metrics (default: the first bound address).
    pub name: Option<String>,
    /// Addresses to listen on.
    pub addrs: Vec<ListenAddr>,
    /// How long live connections may run after a shutdown signal.
    pub grace: Duration,
    /// How long to go on accepting after a shutdown signal while
    /// reporting not ready (`/readyz`), so that load balancers stop
    /// sending first (a "lame duck" period; zero by default).
    pub drain_delay: Duration,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a connection may sit without receiving a byte.
    pub idle_timeout: Option<Duration>,
    /// Stack size of connection threads (guest code runs on them).
    pub thread_stack: usize,
    /// Event-loop threads serving plugins that can run on one (0: a
    /// thread per connection for every plugin).
    pub event_loops: usize,
    /// Which peers may connect.
    pub access: AccessRules,
    /// Let other processes bind the same address (SO_REUSEPORT): the
    /// kernel spreads connections across them.
    pub reuse_port: bool,
    /// Reactor threads — one shared instance each — for a plugin that
    /// serves many connections from one instance (the `protocol` world).
    pub instances: usize,
    /// The most unsent bytes a shared instance buffers per connection.
    pub write_limit: usize,
    /// Networks trusted to send a PROXY protocol header; when any is set,
    /// every connection must start with one and come from them.
    pub proxy_protocol: Vec<ipnet::IpNet>,
    /// TLS termination: every connection shakes hands first (after its
    /// PROXY header, if any), and the plugin sees plaintext.
    pub tls: Option<Arc<crate::tls::Terminator>>,
}

/// Something the server asks its owner to do.
pub trait ServerHooks {
    /// SIGHUP arrived: reload the plugin.
    fn reload(&mut self);
}

/// A bound server, ready to run.
pub struct Server {
    config: ServerConfig,
    plugin: CurrentPlugin,
    metrics: ListenerMetrics,
    poll: Poll,
    listeners: Vec<Listener>,
    signals: ControlSignals,
    live: LiveConnections,
    dispatcher: Arc<Dispatcher>,
    /// Reads PROXY headers first, when the listener expects them.
    preamble: Option<Preamble>,
    /// Set while `accept` is paused (connection cap or fd exhaustion).
    paused: bool,
    /// When the cap last made a connection wait (and that was logged).
    warned_full: Option<Instant>,
}

impl Server {
    /// Binds every address in `config`; fails with a clear message if one
    /// is in use or not available.
    /// Its metrics are registered in `metrics` under the first bound
    /// address.
    pub fn bind(config: ServerConfig, plugin: CurrentPlugin, metrics: &Metrics) -> Result<Self> {
        let poll = Poll::new().context("cannot create the event loop")?;
        let mut listeners = Vec::new();
        for (index, addr) in config.addrs.iter().enumerate() {
            let mut listener = Listener::bind(addr, config.reuse_port)?;
            listener
                .register(poll.registry(), Token(index))
                .context("cannot watch the listening socket")?;
            listeners.push(listener);
        }
        let signals = ControlSignals::register(poll.registry(), SIGNALS)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("cannot create waker")?);
        let live = LiveConnections::new(Box::new(move || {
            // Waking only fails if the event loop is gone, i.e. at exit.
            let _ = waker.wake();
        }));
        let pool = ThreadPool::new(config.thread_stack);
        let name = config.name.clone().unwrap_or_else(|| {
            listeners
                .first()
                .and_then(|l| l.local_addr().ok())
                .map_or_else(|| "none".to_string(), |a| a.to_string())
        });
        let events = match config.event_loops {
            0 => None,
            count => Some(
                EventLoops::start(count, &name).context("cannot start the event-loop threads")?,
            ),
        };
        let metrics = metrics.listener(&name);
        metrics.serving(None, &plugin.get().version().to_string());
        let reactors = match plugin.get().serving() {
            Serving::Shared(_) => {
                let settings = ReactorSettings {
                    write_limit: config.write_limit,
                    idle_timeout: config.idle_timeout,
                    current: plugin.clone(),
                    metrics: metrics.clone(),
                };
                let reactors = Reactors::start(config.instances, &name, &settings)
                    .context("cannot start the reactor threads")?;
                Some(reactors)
            }
            Serving::PerConnection(_) => None,
        };
        let dispatcher = Arc::new(Dispatcher {
            plugin: plugin.clone(),
            metrics: metrics.clone(),
            access: config.access.clone(),
            idle_timeout: config.idle_timeout,
            pool,
            events,
            reactors,
        });
        let preamble = if config.proxy_protocol.is_empty() && config.tls.is_none() {
            None
        } else {
            let trusted = config.proxy_protocol.clone();
            let preamble =
                Preamble::start(&name, trusted, config.tls.clone(), Arc::clone(&dispatcher))
                    .context("cannot start the PROXY header and TLS handshake threads")?;
            Some(preamble)
        };
        Ok(Self {
            config,
            plugin,
            metrics,
            poll,
            listeners,
            signals,
            live,
            dispatcher,
            preamble,
            paused: false,
            warned_full: None,
        })
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Accepts and serves connections until SIGINT/SIGTERM, then drains.
    pub fn run(mut self, hooks: &mut dyn ServerHooks) -> Result<()> {
        crate::sys::sched::accept_in_batches();
        let serving = self.serving_mode();
        for addr in self.local_addrs() {
            tracing::info!(
                listener = self.metrics.name(),
                plugin = %self.plugin.get().version(),
                serving = %serving,
                "listening on {addr}"
            );
        }
        self.metrics.set_ready(true);
        let mut events = Events::with_capacity(256);
        // Set by the first stop signal when there is a drain delay: the
        // signal, and when accepting ends.
        let mut stopping: Option<(Stop, Instant)> = None;
        loop {
            let mut timeout = self.paused.then_some(PAUSED_RETRY);
            if let Some((_, until)) = &stopping {
                let left = until.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err).context("event loop failed");
            }
            let mut stop = None;
            for event in events.iter() {
                match event.token() {
                    SIGNALS => stop = self.signals.handle(hooks).or(stop),
                    WAKER => {}
                    Token(index) => self.accept_all(index),
                }
            }
            if let Some(signal) = stop {
                if stopping.is_some() || self.config.drain_delay.is_zero() {
                    // A second signal cuts the delay short.
                    return self.drain(stopping.map_or(signal, |(first, _)| first));
                }
                self.metrics.set_ready(false);
                tracing::info!(
                    delay = ?self.config.drain_delay,
                    "{} received: not ready; still accepting for the drain delay",
                    signal.name
                );
                stopping = Some((signal, Instant::now() + self.config.drain_delay));
            }
            if let Some((_, until)) = &stopping
                && Instant::now() >= *until
            {
                let (signal, _) = stopping.take().expect("checked above");
                return self.drain(signal);
            }
            if self.paused {
                self.paused = false;
                self.live.wake_on_close(false);
                for index in 0..self.listeners.len() {
                    self.accept_all(index);
                }
            }
        }
    }

    /// How the listener serves, for the log: "2 event loops", "a thread
    /// per connection", "1 shared instance".
    fn serving_mode(&self) -> String {
        let plural = |n: usize, what: &str| {
            if n == 1 {
                format!("1 {what}")
            } else {
                format!("{n} {what}s")
            }
        };
        match self.plugin.get().serving() {
            Serving::Shared(_) => plural(self.config.instances, "shared instance"),
            Serving::PerConnection(plugin) => {
                match (&self.dispatcher.events, plugin.on_event_loop()) {
                    (Some(_), Some(_)) => plural(self.config.event_loops, "event loop"),
                    _ => "a thread per connection".to_string(),
                }
            }
        }
    }

    /// Accepts every pending connection on listener `index`, pausing at the
    /// connection cap.
    fn accept_all(&mut self, index: usize) {
        loop {
            if self.at_capacity() {
                // Warn when a connection actually waits (not merely when the
                // last free slot is taken), at most every FULL_WARNING_EVERY.
                let quiet = self
                    .warned_full
                    .is_some_and(|at| at.elapsed() < FULL_WARNING_EVERY);
                if !quiet && self.listeners[index].has_pending() {
                    tracing::warn!(
                        max_connections = self.config.max_connections,
                        "connection limit reached; new connections wait in the backlog"
                    );
                    self.warned_full = Some(Instant::now());
                }
                self.paused = true;
                return;
            }
            match self.listeners[index].accept() {
                Ok((stream, peer)) => self.dispatch(stream, peer),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if is_transient_accept_error(&err) => continue,
                Err(err) => {
                    // Out of file descriptors or memory: leave the connection
                    // in the backlog and retry shortly.
                    tracing::error!("accept failed: {err}; retrying");
                    // A connection that ends frees a descriptor.
                    self.live.wake_on_close(true);
                    self.paused = true;
                    return;
                }
            }
        }
    }

    /// Whether the connection cap is reached. If so, the accept loop is
    /// woken when a connection ends.
    fn at_capacity(&self) -> bool {
        let max = self.config.max_connections;
        if self.live.count() < max {
            return false;
        }
        // Ask for the wake-up, then look again: one may have ended between.
        self.live.wake_on_close(true);
        let full = self.live.count() >= max;
        if !full {
            self.live.wake_on_close(false);
        }
        full
    }

    /// Hands an accepted connection on: to the preamble threads when the
    /// listener expects a PROXY header or a TLS handshake, else straight
    /// to its serving mode.
    fn dispatch(&self, stream: Stream, peer: PeerAddr) {
        let guard = self.live.register(&stream);
        match &self.preamble {
            Some(preamble) => preamble.admit(stream, peer, guard),
            None => self.dispatcher.serve(stream, peer, guard),
        }
    }

    /// Stops accepting, waits up to the grace period for live connections,
    /// then shuts the rest down.
    fn drain(mut self, Stop { name }: Stop) -> Result<()> {
        self.metrics.set_ready(false);
        for mut listener in self.listeners.drain(..) {
            let _ = listener.deregister(self.poll.registry());
        }
        // From here on the loop waits for connections to end.
        self.live.wake_on_close(true);
        let open = self.live.count();
        tracing::info!(
            open_connections = open,
            grace = ?self.config.grace,
            "{name} received: shutting down; no longer accepting"
        );
        let deadline = Instant::now() + self.config.grace;
        if !self.wait_for_connections(deadline)? {
            if let Some(reactors) = &self.dispatcher.reactors {
                reactors.shutting_down();
            }
            let closed = self.live.shutdown_all();
            tracing::warn!("grace period over: closing {closed} connection(s) still open");
            self.wait_for_connections(Instant::now() + CLOSE_WAIT)?;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }

    /// Waits until no connection is open (true) or `deadline` passes
    /// (false). A second SIGINT/SIGTERM cuts the wait short.
    fn wait_for_connections(&mut self, deadline: Instant) -> Result<bool> {
        let mut events = Events::with_capacity(16);
        while self.live.count() > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err).context("event loop failed"),
            }
            let again = events.iter().any(|e| e.token() == SIGNALS) && self.signals.stop_again();
            if again {
                tracing::warn!("second signal: not waiting for the grace period");
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Errors that concern one connection, not the listener.
fn is_transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
