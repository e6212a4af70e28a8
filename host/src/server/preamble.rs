//! What a connection must send before its plugin sees it: on a listener
//! behind a load balancer (`--proxy-protocol CIDR`), the PROXY protocol
//! header that names the real client. One thread per such listener reads
//! the headers of every new connection, without blocking the accept loop
//! and without a thread per connection: a `mio` loop that peeks at each
//! socket until a whole header is there ([`proxy_header::parse`]), takes
//! exactly those bytes off, and hands the connection, under the client's
//! address, to the [`Dispatcher`]. A malformed header, a peer outside the
//! trusted networks or one that says nothing for [`HEADER_TIMEOUT`] is
//! refused and logged.

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
use crate::metrics::ListenerMetrics;
use crate::proxy_header::{self, Parsed};

/// How long a connection may take to send its whole PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const WAKER: Token = Token(usize::MAX);

/// A connection waiting for its header.
struct Waiting {
    stream: TcpStream,
    peer: PeerAddr,
    guard: LiveGuard,
    deadline: Instant,
}

/// The preamble thread of one listener.
pub struct Preamble {
    trusted: Vec<IpNet>,
    sender: Sender<Waiting>,
    waker: Arc<Waker>,
    dispatcher: Arc<Dispatcher>,
}

impl Preamble {
    /// Starts the thread of listener `name`, reading headers from peers in
    /// `trusted` and serving through `dispatcher`.
    pub fn start(name: &str, trusted: Vec<IpNet>, dispatcher: Arc<Dispatcher>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (sender, receiver) = mpsc::channel();
        let reader = HeaderReader {
            poll,
            arrivals: receiver,
            waiting: HashMap::new(),
            next: 0,
            dispatcher: Arc::clone(&dispatcher),
        };
        thread::Builder::new()
            .name(format!("preamble {name}"))
            .spawn(move || reader.run())?;
        Ok(Self {
            trusted,
            sender,
            waker,
            dispatcher,
        })
    }

    /// Takes `stream` from `peer` (counted by `guard`): refused at once
    /// unless the peer is trusted to send a header, else read off the
    /// accept loop.
    pub fn admit(&self, stream: Stream, peer: PeerAddr, guard: LiveGuard) {
        let trusted = peer
            .ip()
            .is_some_and(|ip| self.trusted.iter().any(|net| net.contains(&ip.ip())));
        let metrics = &self.dispatcher.metrics;
        let Stream::Tcp(stream) = stream else {
            let why = "the PROXY protocol needs a TCP listener";
            return refuse(metrics, stream, &peer, guard, why);
        };
        if !trusted {
            let why =
                "the peer is not in the networks trusted to send a PROXY header (--proxy-protocol)";
            return refuse(metrics, Stream::Tcp(stream), &peer, guard, why);
        }
        let waiting = Waiting {
            stream,
            peer,
            guard,
            deadline: Instant::now() + HEADER_TIMEOUT,
        };
        if self.sender.send(waiting).is_err() || self.waker.wake().is_err() {
            tracing::error!("the PROXY header thread stopped; connection dropped");
        }
    }
}

/// Closes a connection that may not be served, counts it and says why.
fn refuse(metrics: &ListenerMetrics, stream: Stream, peer: &PeerAddr, guard: LiveGuard, why: &str) {
    metrics.refused();
    tracing::warn!(peer = %peer, "connection refused: {why}");
    drop(guard);
    drop(stream);
}

struct HeaderReader {
    poll: Poll,
    arrivals: Receiver<Waiting>,
    waiting: HashMap<usize, Waiting>,
    next: usize,
    dispatcher: Arc<Dispatcher>,
}

impl HeaderReader {
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
                tracing::error!("the PROXY header loop failed: {err}");
                return;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    if !self.take_arrivals() {
                        return;
                    }
                } else {
                    self.try_header(event.token().0);
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
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&waiting.stream);
                    let registered = self.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(token),
                        Interest::READABLE,
                    );
                    if let Err(err) = registered {
                        let Waiting {
                            stream,
                            peer,
                            guard,
                            ..
                        } = waiting;
                        let why = format!("cannot watch the socket: {err}");
                        refuse(
                            &self.dispatcher.metrics,
                            Stream::Tcp(stream),
                            &peer,
                            guard,
                            &why,
                        );
                        continue;
                    }
                    self.waiting.insert(token, waiting);
                    // Bytes may be there already.
                    self.try_header(token);
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Looks for a whole header on connection `token`; serves or refuses
    /// it once one (or something else) is there.
    fn try_header(&mut self, token: usize) {
        let Some(waiting) = self.waiting.get(&token) else {
            return;
        };
        let mut buf = [0u8; proxy_header::V2_MAX];
        let seen = match waiting.stream.peek(&mut buf) {
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
                // The header's bytes are queued: take exactly those off.
                if let Err(err) = io::Read::read_exact(&mut waiting.stream, &mut buf[..len]) {
                    let why = format!("reading the PROXY header failed: {err}");
                    let Waiting {
                        stream,
                        peer,
                        guard,
                        ..
                    } = waiting;
                    return refuse(
                        &self.dispatcher.metrics,
                        Stream::Tcp(stream),
                        &peer,
                        guard,
                        &why,
                    );
                }
                let peer = source.map_or(waiting.peer, PeerAddr::Ip);
                self.dispatcher
                    .serve(Stream::Tcp(waiting.stream), peer, waiting.guard);
            }
            Ok(Parsed::Invalid(why)) => self.refuse_waiting(token, why),
            Err(why) => self.refuse_waiting(token, &why),
        }
    }

    /// Stops watching `token` and gives its connection back.
    fn take(&mut self, token: usize) -> Option<Waiting> {
        let waiting = self.waiting.remove(&token)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&waiting.stream);
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        Some(waiting)
    }

    fn refuse_waiting(&mut self, token: usize, why: &str) {
        if let Some(waiting) = self.take(token) {
            let Waiting {
                stream,
                peer,
                guard,
                ..
            } = waiting;
            refuse(
                &self.dispatcher.metrics,
                Stream::Tcp(stream),
                &peer,
                guard,
                why,
            );
        }
    }

    /// Refuses connections whose header did not arrive in time.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in late {
            self.refuse_waiting(token, "no PROXY header within 5 s");
        }
    }
}
