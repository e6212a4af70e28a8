//! The UDP server (socketserver's `UDPServer`): each datagram is handled on
//! a pooled thread by a fresh instance of a `datagram-handler` plugin, and
//! the replies go back to the sender from the same socket. A reload swaps
//! the plugin for the datagrams that arrive afterwards. UDP has no
//! backpressure, so past `max_in_flight` datagrams being handled at once,
//! new ones are dropped (and counted), never queued without bound.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use mio::{Events, Interest, Poll, Token};

use super::pool::ThreadPool;
use super::signals::{ControlSignals, Stop};
use super::{AccessRules, ServerHooks};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::plugin::Outcome;
use crate::plugin::wasm::CurrentDatagram;

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Largest datagram received (the UDP payload limit).
const MAX_DATAGRAM: usize = 65_535;
/// How often to check whether in-flight datagrams are done while draining.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How a UDP listener runs.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Name in logs and metrics (default: the bound address).
    pub name: Option<String>,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Most datagrams handled at once; more are dropped.
    pub max_in_flight: usize,
    /// How long handlers may finish after SIGINT/SIGTERM.
    pub grace: Duration,
    /// Which senders are served.
    pub access: AccessRules,
    /// Stack size of handler threads.
    pub thread_stack: usize,
}

/// A bound UDP server.
pub struct UdpServer {
    config: UdpConfig,
    plugin: CurrentDatagram,
    socket: mio::net::UdpSocket,
    replies: Arc<UdpSocket>,
    poll: Poll,
    signals: ControlSignals,
    pool: ThreadPool,
    in_flight: Arc<AtomicUsize>,
    metrics: ListenerMetrics,
}

impl UdpServer {
    /// Binds `config.addr`.
    pub fn bind(config: UdpConfig, plugin: CurrentDatagram, metrics: &Metrics) -> Result<Self> {
        let addr = config.addr;
        let std_socket = UdpSocket::bind(addr).map_err(|err| match err.kind() {
            io::ErrorKind::AddrInUse => {
                anyhow!("cannot listen on udp:{addr}: address already in use")
            }
            _ => anyhow!("cannot listen on udp:{addr}: {err}"),
        })?;
        std_socket
            .set_nonblocking(true)
            .context("cannot make the UDP socket non-blocking")?;
        let replies = Arc::new(
            std_socket
                .try_clone()
                .context("cannot clone the UDP socket")?,
        );
        let mut socket = mio::net::UdpSocket::from_std(std_socket);
        let poll = Poll::new().context("cannot create the event loop")?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .context("cannot watch the UDP socket")?;
        let signals = ControlSignals::register(poll.registry(), SIGNALS)?;
        let bound = socket.local_addr().context("UDP socket has no address")?;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("udp:{bound}"));
        let metrics = metrics.listener(&name);
        metrics.serving(None, &plugin.load().version().to_string());
        let pool = ThreadPool::new(config.thread_stack);
        Ok(Self {
            config,
            plugin,
            socket,
            replies,
            poll,
            signals,
            pool,
            in_flight: Arc::new(AtomicUsize::new(0)),
            metrics,
        })
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }

    /// Receives and handles datagrams until SIGINT/SIGTERM, then waits for
    /// in-flight handlers up to the grace period. SIGHUP asks `hooks` to
    /// reload.
    pub fn run(mut self, hooks: &mut dyn ServerHooks) -> Result<()> {
        let bound = self
            .socket
            .local_addr()
            .context("UDP socket has no address")?;
        tracing::info!(
            listener = self.metrics.name(),
            plugin = %self.plugin.load().version(),
            "listening on udp:{bound}"
        );
        self.metrics.set_ready(true);
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err).context("event loop failed"),
            }
            let mut stop = None;
            for event in events.iter() {
                match event.token() {
                    SIGNALS => stop = self.signals.handle(hooks).or(stop),
                    _ => self.receive_all(&mut buf),
                }
            }
            if let Some(stop) = stop {
                return self.drain(stop);
            }
        }
    }

    fn receive_all(&self, buf: &mut [u8]) {
        loop {
            let (len, sender) = match self.socket.recv_from(buf) {
                Ok(received) => received,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // ICMP errors from earlier sends surface here; they
                    // concern one peer, not the socket.
                    tracing::debug!("UDP receive error: {err}");
                    continue;
                }
            };
            if !self.config.access.permits(sender.ip()) {
                self.metrics.refused();
                continue;
            }
            if self.in_flight.load(Ordering::Acquire) >= self.config.max_in_flight {
                self.metrics
                    .closed("dropped", len as u64, 0, Duration::ZERO);
                tracing::warn!(peer = %sender, "UDP handlers all busy: datagram dropped");
                continue;
            }
            self.dispatch(buf[..len].to_vec(), sender);
        }
    }

    fn dispatch(&self, data: Vec<u8>, sender: SocketAddr) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.metrics.opened();
        let plugin = self.plugin.load_full();
        let replies = Arc::clone(&self.replies);
        let in_flight = Arc::clone(&self.in_flight);
        let metrics = self.metrics.clone();
        let job = move || {
            let started = Instant::now();
            let bytes_in = data.len() as u64;
            let (answers, outcome) = plugin.handle(data, sender);
            let mut bytes_out = 0;
            for answer in &answers {
                match replies.send_to(answer, sender) {
                    Ok(sent) => bytes_out += sent as u64,
                    Err(err) => tracing::debug!(peer = %sender, "UDP reply not sent: {err}"),
                }
            }
            let label = outcome.label();
            metrics.closed(label, bytes_in, bytes_out, started.elapsed());
            if !matches!(outcome, Outcome::Ok) {
                tracing::warn!(
                    target: "connection",
                    peer = %sender, plugin = %plugin.version(), bytes_in, bytes_out,
                    outcome = %label, reason = outcome.reason(),
                    "datagram handled"
                );
            } else {
                tracing::debug!(target: "connection", peer = %sender, bytes_in, bytes_out, "datagram handled");
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        };
        if let Err(err) = self.pool.execute(job) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.metrics.closed("host-error", 0, 0, Duration::ZERO);
            tracing::error!(peer = %sender, "cannot start a thread for the datagram: {err}");
        }
    }

    fn drain(mut self, Stop { name }: Stop) -> Result<()> {
        self.metrics.set_ready(false);
        tracing::info!(
            in_flight = self.in_flight.load(Ordering::Acquire),
            "{name} received: shutting down; no longer receiving datagrams"
        );
        let deadline = Instant::now() + self.config.grace;
        while self.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            if self.signals.stop_again() {
                tracing::warn!("second signal: not waiting for the grace period");
                break;
            }
            std::thread::sleep(DRAIN_POLL);
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}
