//! What a connection must get through before its plugin sees it: on a
//! listener behind a load balancer (`--proxy-protocol CIDR`), the PROXY
//! protocol header that names the real client; on a TLS listener
//! (`--tls-cert`), the TLS handshake. Threads of the listener's own (one
//! for PROXY headers alone, one per CPU when there are handshakes to
//! compute) take each new connection through these steps without blocking
//! the accept loop and without a thread per connection: a `mio` loop that
//! peeks at each socket until a whole header is there
//! ([`proxy_header::parse`]) and takes exactly those bytes off, then
//! drives the handshake ([`TlsStream::handshake`]), and hands the
//! connection, under the client's address, to the [`Dispatcher`]. A
//! malformed header, a peer outside the trusted networks or one that says
//! nothing for [`HEADER_TIMEOUT`] is refused and logged; a failed
//! handshake, or one not done within the listener's handshake timeout
//! ([`Terminator::handshake_timeout`]), is closed,
//! logged and counted (`plughost_tls_handshakes_total`).

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::dispatch::Dispatcher;
use super::live::LiveGuard;
use crate::address::PeerAddr;
use crate::connection::Stream;
use crate::connection::tls::TlsStream;
use crate::metrics::ListenerMetrics;
use crate::proxy_header::{self, Parsed};
use crate::tls::Terminator;

/// How long a connection may take to send its whole PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const WAKER: Token = Token(usize::MAX);

/// Where a waiting connection is.
enum Step {
    /// Its PROXY header has not all arrived.
    Header(TcpStream),
    /// Its TLS handshake is under way.
    Handshake(Box<TlsStream>),
}

impl Step {
    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Step::Header(stream) => stream.as_raw_fd(),
            Step::Handshake(tls) => tls.as_raw_fd(),
        }
    }

    fn interest(&self) -> Interest {
        match self {
            Step::Header(_) => Interest::READABLE,
            Step::Handshake(_) => Interest::READABLE | Interest::WRITABLE,
        }
    }
}

/// A connection on its way to the plugin.
struct Waiting {
    step: Step,
    peer: PeerAddr,
    guard: LiveGuard,
    deadline: Instant,
}

/// One thread's loop, as the accept loop reaches it.
struct Lane {
    sender: Sender<Waiting>,
    waker: Arc<Waker>,
}

/// The preamble threads of one listener.
pub struct Preamble {
    /// Networks trusted to send a PROXY header (empty: none is expected).
    trusted: Vec<IpNet>,
    tls: Option<Arc<Terminator>>,
    lanes: Vec<Lane>,
    /// The lane the next connection goes to.
    next: Cell<usize>,
    dispatcher: Arc<Dispatcher>,
}

impl Preamble {
    /// Starts the threads of listener `name`: reading headers from peers
    /// in `trusted` (if any), then shaking hands with `tls` (if set), and
    /// serving through `dispatcher`.
    pub fn start(
        name: &str,
        trusted: Vec<IpNet>,
        tls: Option<Arc<Terminator>>,
        dispatcher: Arc<Dispatcher>,
    ) -> io::Result<Self> {
        // Handshakes are computation: one thread per CPU the host may use.
        let threads = match &tls {
            Some(_) => thread::available_parallelism().map_or(1, usize::from),
            None => 1,
        };
        let mut lanes = Vec::with_capacity(threads);
        for index in 0..threads {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (sender, receiver) = mpsc::channel();
            let steps = StepLoop {
                poll,
                arrivals: receiver,
                waiting: HashMap::new(),
                next: 0,
                tls: tls.clone(),
                dispatcher: Arc::clone(&dispatcher),
            };
            thread::Builder::new()
                .name(format!("preamble {index} {name}"))
                .spawn(move || steps.run())?;
            lanes.push(Lane { sender, waker });
        }
        Ok(Self {
            trusted,
            tls,
            lanes,
            next: Cell::new(0),
            dispatcher,
        })
    }

    /// Takes `stream` from `peer` (counted by `guard`): refused at once if
    /// a PROXY header is expected and the peer is not trusted to send one,
    /// else taken through its steps off the accept loop.
    pub fn admit(&self, stream: Stream, peer: PeerAddr, guard: LiveGuard) {
        let metrics = &self.dispatcher.metrics;
        let step = if self.trusted.is_empty() {
            let Some(terminator) = &self.tls else {
                tracing::error!("a preamble thread has nothing to do; connection dropped");
                return;
            };
            match start_handshake(terminator, stream) {
                Ok(tls) => Step::Handshake(tls),
                Err((stream, why)) => {
                    failed_handshake(metrics, &peer, guard, &why, "failed");
                    return drop(stream);
                }
            }
        } else {
            let trusted = peer
                .ip()
                .is_some_and(|ip| self.trusted.iter().any(|net| net.contains(&ip.ip())));
            let Stream::Tcp(stream) = stream else {
                let why = "the PROXY protocol needs a TCP listener";
                return refuse(metrics, stream, &peer, guard, why);
            };
            if !trusted {
                let why = "the peer is not in the networks trusted to send a PROXY header (--proxy-protocol)";
                return refuse(metrics, Stream::Tcp(stream), &peer, guard, why);
            }
            Step::Header(stream)
        };
        let deadline = Instant::now()
            + match (&step, &self.tls) {
                (Step::Handshake(_), Some(terminator)) => terminator.handshake_timeout(),
                _ => HEADER_TIMEOUT,
            };
        let waiting = Waiting {
            step,
            peer,
            guard,
            deadline,
        };
        let index = self.next.get();
        self.next.set((index + 1) % self.lanes.len());
        let lane = &self.lanes[index];
        if lane.sender.send(waiting).is_err() || lane.waker.wake().is_err() {
            tracing::error!("a preamble thread stopped; connection dropped");
        }
    }
}

/// A TLS session for `stream` with the certificates in force.
/// A TLS session for `stream` with the certificates in force; on failure
/// the stream comes back, to be closed after its guard is dropped.
fn start_handshake(
    terminator: &Terminator,
    stream: Stream,
) -> Result<Box<TlsStream>, (Stream, String)> {
    match terminator.session() {
        Ok(session) => Ok(Box::new(TlsStream::new(session, stream))),
        Err(err) => Err((stream, crate::one_line(&err))),
    }
}

/// Closes a connection whose TLS handshake failed (`result`: "failed" or
/// "timeout"), counts it and says why.
fn failed_handshake(
    metrics: &ListenerMetrics,
    peer: &PeerAddr,
    guard: LiveGuard,
    why: &str,
    result: &str,
) {
    metrics.tls_handshake(result);
    tracing::warn!(peer = %peer, "TLS handshake failed: {why}");
    drop(guard);
}

/// Closes a connection that may not be served, counts it and says why.
fn refuse(metrics: &ListenerMetrics, stream: Stream, peer: &PeerAddr, guard: LiveGuard, why: &str) {
    metrics.refused();
    tracing::warn!(peer = %peer, "connection refused: {why}");
    drop(guard);
    drop(stream);
}

struct StepLoop {
    poll: Poll,
    arrivals: Receiver<Waiting>,
    waiting: HashMap<usize, Waiting>,
    next: usize,
    tls: Option<Arc<Terminator>>,
    dispatcher: Arc<Dispatcher>,
}

impl StepLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .waiting
                .values()
                .map(|w| w.deadline)
                .min()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("the preamble loop failed: {err}");
                return;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    if !self.take_arrivals() {
                        return;
                    }
                } else {
                    self.advance(event.token().0);
                }
            }
            self.expire();
        }
    }

    /// Registers every connection handed over; false once the listener is
    /// gone.
    fn take_arrivals(&mut self) -> bool {
        loop {
            match self.arrivals.try_recv() {
                Ok(waiting) => {
                    let token = self.next;
                    self.next = self.next.wrapping_add(1) % (usize::MAX - 1);
                    self.watch(token, waiting);
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Takes connection `token` as far as its socket allows.
    fn advance(&mut self, token: usize) {
        match self.waiting.get(&token).map(|w| &w.step) {
            Some(Step::Header(_)) => self.try_header(token),
            Some(Step::Handshake(_)) => self.try_handshake(token),
            None => {}
        }
    }

    /// Looks for a whole header on connection `token`; goes on to the
    /// handshake or serves it once one is there, refuses it once something
    /// else is.
    fn try_header(&mut self, token: usize) {
        let Some(Waiting {
            step: Step::Header(stream),
            ..
        }) = self.waiting.get(&token)
        else {
            return;
        };
        let mut buf = [0u8; proxy_header::V2_MAX];
        let seen = match stream.peek(&mut buf) {
            Ok(0) => Err("the peer closed before sending a PROXY header".to_string()),
            Ok(n) => Ok(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) => Err(format!("reading the PROXY header failed: {err}")),
        };
        let parsed: Result<Parsed, String> = seen.map(|n| proxy_header::parse(&buf[..n]));
        match parsed {
            Ok(Parsed::Incomplete) => {}
            Ok(Parsed::Header { len, source }) => {
                let Some(mut waiting) = self.take(token) else {
                    return;
                };
                let Step::Header(mut stream) = waiting.step else {
                    return;
                };
                // The header's bytes are queued: take exactly those off.
                if let Err(err) = io::Read::read_exact(&mut stream, &mut buf[..len]) {
                    let why = format!("reading the PROXY header failed: {err}");
                    return refuse(
                        &self.dispatcher.metrics,
                        Stream::Tcp(stream),
                        &waiting.peer,
                        waiting.guard,
                        &why,
                    );
                }
                if let Some(peer) = source {
                    waiting.peer = PeerAddr::Ip(peer);
                }
                let Some(terminator) = &self.tls else {
                    return self
                        .dispatcher
                        .serve(Stream::Tcp(stream), waiting.peer, waiting.guard);
                };
                match start_handshake(terminator, Stream::Tcp(stream)) {
                    Ok(tls) => {
                        waiting.step = Step::Handshake(tls);
                        waiting.deadline = Instant::now() + terminator.handshake_timeout();
                        self.watch(token, waiting);
                    }
                    Err((stream, why)) => {
                        let metrics = &self.dispatcher.metrics;
                        failed_handshake(metrics, &waiting.peer, waiting.guard, &why, "failed");
                        drop(stream);
                    }
                }
            }
            Ok(Parsed::Invalid(why)) => self.give_up(token, why),
            Err(why) => self.give_up(token, &why),
        }
    }

    /// Watches `waiting` as `token` for its step (a new arrival, or one
    /// going on from its header to its handshake), and takes that step as
    /// far as the socket allows: bytes may be there already.
    fn watch(&mut self, token: usize, waiting: Waiting) {
        let fd = waiting.step.fd();
        let registered = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(token),
            waiting.step.interest(),
        );
        self.waiting.insert(token, waiting);
        match registered {
            Ok(()) => self.advance(token),
            Err(err) => self.give_up(token, &format!("cannot watch the socket: {err}")),
        }
    }

    /// Drives the handshake of connection `token`; serves it once done.
    fn try_handshake(&mut self, token: usize) {
        let Some(Waiting {
            step: Step::Handshake(tls),
            ..
        }) = self.waiting.get_mut(&token)
        else {
            return;
        };
        match tls.handshake() {
            Ok(false) => {}
            Ok(true) => {
                let Some(waiting) = self.take(token) else {
                    return;
                };
                let Step::Handshake(tls) = waiting.step else {
                    return;
                };
                self.dispatcher.metrics.tls_handshake("ok");
                self.dispatcher
                    .serve(Stream::Tls(tls), waiting.peer, waiting.guard);
            }
            Err(err) => self.give_up(token, &err.to_string()),
        }
    }

    /// Stops watching `token` and gives its connection back.
    fn take(&mut self, token: usize) -> Option<Waiting> {
        let waiting = self.waiting.remove(&token)?;
        let fd = waiting.step.fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        Some(waiting)
    }

    /// Closes connection `token`, which failed its step for `why`.
    fn give_up(&mut self, token: usize, why: &str) {
        let Some(waiting) = self.take(token) else {
            return;
        };
        let metrics = &self.dispatcher.metrics;
        match waiting.step {
            Step::Header(stream) => {
                refuse(
                    metrics,
                    Stream::Tcp(stream),
                    &waiting.peer,
                    waiting.guard,
                    why,
                );
            }
            Step::Handshake(tls) => {
                let result = if Instant::now() >= waiting.deadline {
                    "timeout"
                } else {
                    "failed"
                };
                failed_handshake(metrics, &waiting.peer, waiting.guard, why, result);
                drop(tls);
            }
        }
    }

    /// Gives up on connections whose step did not end in time.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in late {
            let why = match (self.waiting.get(&token).map(|w| &w.step), &self.tls) {
                (Some(Step::Handshake(_)), Some(terminator)) => format!(
                    "not done within {}",
                    humantime::format_duration(terminator.handshake_timeout())
                ),
                _ => "no PROXY header within 5 s".to_string(),
            };
            self.give_up(token, &why);
        }
    }
}
