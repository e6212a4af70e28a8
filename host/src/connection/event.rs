//! A [`Connection`] served on an event-loop thread: the socket is
//! non-blocking and registered with the thread's tokio reactor, so a plugin
//! waiting for its client suspends instead of holding the thread. Read and
//! write timeouts are timers with the same bounds the blocking path sets
//! as socket options. A `read-or-message` also waits on the connection's
//! inbox doorbell, registered with the same reactor.

use std::borrow::{Borrow, BorrowMut};
use std::future::{Future, poll_fn};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, Sleep};

use super::inbox::Arrival;
use super::{ConnError, Connection, MAX_READ_CHUNK, Stream, Unwrapped};
use crate::address::PeerAddr;

/// The socket's (or the inbox doorbell's) descriptor, registered with the
/// reactor; the [`Connection`] keeps owning (and eventually closes) it.
struct Registered(RawFd);

impl AsRawFd for Registered {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A connection whose reads and writes wait on the event loop.
pub struct EventConnection {
    // Declared first so it is dropped (deregistered) before the socket.
    readiness: AsyncFd<Registered>,
    /// The inbox doorbell, registered at the first `read-or-message` after
    /// a subscription; dropped (deregistered) before `conn`, which owns it.
    doorbell: Option<AsyncFd<Registered>>,
    /// The one timer bounding every wait, re-armed lazily (see
    /// [`EventConnection::when_ready`]).
    timer: Pin<Box<Sleep>>,
    conn: Connection,
}

/// How far ahead an unused timer is set.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

impl EventConnection {
    /// Wraps a stream accepted from `peer` (non-blocking, as the listener
    /// accepts it) and registers it with the current tokio runtime (must
    /// be called on an event-loop thread); `idle_timeout` as for
    /// [`Connection::blocking`].
    /// On failure the stream comes back with the error.
    pub(crate) fn accepted(
        stream: Stream,
        peer: PeerAddr,
        idle_timeout: Option<Duration>,
    ) -> Result<Self, Unwrapped> {
        let conn = Connection::non_blocking(stream, peer, idle_timeout)?;
        let fd = Registered(conn.as_raw_fd());
        let interest = Interest::READABLE | Interest::WRITABLE;
        // SAFETY: the fd stays open while `readiness` lives: `conn` owns the
        // socket and is dropped after `readiness` (field order, and
        // `into_inner` drops `readiness` first); nothing outside this
        // module can replace `conn` (`connection_mut` is crate-private and
        // its callers only use the connection in place).
        let readiness = match unsafe { AsyncFd::register_with_interest(fd, interest) } {
            Ok(readiness) => readiness,
            Err(error) => {
                return Err(Unwrapped {
                    stream: conn.stream,
                    error: error.into(),
                });
            }
        };
        Ok(Self {
            readiness,
            doorbell: None,
            timer: Box::pin(tokio::time::sleep(FAR_FUTURE)),
            conn,
        })
    }

    /// Deregisters the socket and gives the connection back.
    pub fn into_inner(self) -> Connection {
        let Self {
            readiness,
            doorbell,
            conn,
            ..
        } = self;
        drop(doorbell);
        drop(readiness);
        conn
    }

    /// The client's address.
    pub fn peer_addr(&self) -> &PeerAddr {
        self.conn.peer_addr()
    }

    /// The connection, for what does not wait (addresses, timeouts,
    /// shutdown). Callers must not swap the connection out: the reactor
    /// registration refers to its socket.
    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Reads up to `max` bytes into the connection's receive buffer
    /// ([`Connection::received`]), waiting for the first one at most
    /// [`Connection::read_wait`]; like [`Connection::read`].
    pub async fn read(&mut self, max: usize) -> Result<usize, ConnError> {
        // What needs no socket is answered without waiting, as on a thread.
        if let Some(answer) = self.conn.answer_without_socket(max) {
            return answer;
        }
        let want = max.min(MAX_READ_CHUNK);
        let limit = self.conn.read_wait();
        let attempt = |conn: &mut Connection| {
            let received = conn.try_read(max)?;
            // A short read drained the socket: wait for the next edge
            // instead of trying a `recv` that would block.
            Ok(received.map(|n| (n, n > 0 && n < want)))
        };
        self.when_ready(Interest::READABLE, limit, false, attempt)
            .await?
            .ok_or(ConnError::TimedOut)
    }

    /// Waits for whichever comes first: bytes from the client (as
    /// [`EventConnection::read`]) or a message on a subscribed topic,
    /// within the read's timeout; like [`Connection::read_or_message`].
    pub async fn read_or_message(&mut self, max: usize) -> Result<Arrival, ConnError> {
        let Some(inbox) = self.conn.existing_inbox() else {
            return self.read(max).await.map(Arrival::Data);
        };
        if self.doorbell.is_none() {
            let fd = Registered(inbox.doorbell().as_raw_fd());
            // SAFETY: the doorbell stays open while the registration lives:
            // the inbox owning it is never removed from `conn` (see
            // `Connection::inbox`), and `doorbell` is dropped before `conn`
            // (field order, and `into_inner`).
            let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
            self.doorbell = Some(registered.map_err(|err| ConnError::from_io(&err.into()))?);
        }
        let want = max.min(MAX_READ_CHUNK);
        let limit = self.conn.read_wait();
        let attempt = |conn: &mut Connection| {
            Ok(conn.arrival_now(max)?.map(|arrival| {
                // As for `read`: a short read drained the socket.
                let drained = matches!(arrival, Arrival::Data(n) if n > 0 && n < want);
                (arrival, drained)
            }))
        };
        self.when_ready(Interest::READABLE, limit, true, attempt)
            .await?
            .ok_or(ConnError::TimedOut)
    }

    /// Writes all of `data`, waiting at most [`Connection::write_wait`]
    /// each time the peer's receive window is full; like
    /// [`Connection::write_all`].
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), ConnError> {
        let mut rest = data;
        while !rest.is_empty() {
            let limit = self.conn.write_wait();
            // A short write filled the send buffer.
            let attempt =
                |conn: &mut Connection| Ok(conn.try_write(rest)?.map(|n| (n, n < rest.len())));
            let written = self
                .when_ready(Interest::WRITABLE, limit, false, attempt)
                .await?
                // The peer stopped reading for longer than allowed.
                .ok_or(ConnError::BrokenPipe)?;
            rest = &rest[written..];
        }
        // TLS records a full socket did not take go out before the write
        // is done: the client waits for them.
        while self.conn.unsent() > 0 {
            let limit = self.conn.write_wait();
            let attempt = |conn: &mut Connection| Ok(conn.try_flush()?.map(|()| ((), false)));
            self.when_ready(Interest::WRITABLE, limit, false, attempt)
                .await?
                .ok_or(ConnError::BrokenPipe)?;
        }
        Ok(())
    }

    /// Runs `attempt` whenever the socket may be ready for `interest` (or,
    /// `with_doorbell`, the inbox doorbell rang), until it does not report
    /// "would block" (`None`) or `limit` passes (`Ok(None)`). `attempt` also says whether it drained the readiness
    /// (a short read or write), so the next call waits for an edge instead
    /// of making a system call that would block — as tokio's own sockets
    /// do. Readiness only changes between polls of a single-threaded
    /// runtime, and epoll is edge-triggered, so no wake-up is lost.
    ///
    /// Deadlines do not re-register the timer on every wait: it is only
    /// moved earlier when a wait needs that, and when it fires before the
    /// wait's own deadline it is moved to that deadline. A connection that
    /// is busy under a long idle timeout touches its timer once per idle
    /// period, not once per read.
    async fn when_ready<T>(
        &mut self,
        interest: Interest,
        limit: Option<Duration>,
        with_doorbell: bool,
        mut attempt: impl FnMut(&mut Connection) -> Result<Option<(T, bool)>, ConnError>,
    ) -> Result<Option<T>, ConnError> {
        let Self {
            readiness,
            doorbell,
            timer,
            conn,
        } = self;
        let doorbell = doorbell.as_ref().filter(|_| with_doorbell);
        // A message may wait with the doorbell already answered (by the
        // call that took the message before it), or decrypted bytes in the
        // TLS session with the socket empty: look once before waiting.
        let mut look_first =
            doorbell.is_some() || (interest.is_readable() && conn.has_buffered_input());
        // Fixed when the operation first has to wait (most reads and writes
        // of a busy connection never do, and need no clock reading).
        let mut waiting_until: Option<Option<Instant>> = None;
        poll_fn(|cx| {
            loop {
                // A ring is answered by `attempt` (it empties the doorbell
                // before it looks), so its readiness is cleared first: a
                // ring after that is a new edge.
                let rang = match doorbell.map(|bell| bell.poll_read_ready(cx)) {
                    Some(Poll::Ready(Ok(mut guard))) => {
                        guard.clear_ready();
                        true
                    }
                    Some(Poll::Ready(Err(err))) => {
                        return Poll::Ready(Err(ConnError::from_io(&err)));
                    }
                    Some(Poll::Pending) | None => false,
                } || std::mem::take(&mut look_first);
                let ready = if interest.is_readable() {
                    readiness.poll_read_ready(cx)
                } else {
                    readiness.poll_write_ready(cx)
                };
                let mut guard = match ready {
                    Poll::Ready(Ok(guard)) => Some(guard),
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(ConnError::from_io(&err))),
                    Poll::Pending if rang => None,
                    Poll::Pending => break,
                };
                match attempt(conn) {
                    Ok(Some((done, drained))) => {
                        if drained && let Some(guard) = &mut guard {
                            guard.clear_ready();
                        }
                        return Poll::Ready(Ok(Some(done)));
                    }
                    Ok(None) => {
                        if let Some(guard) = &mut guard {
                            guard.clear_ready();
                        }
                    }
                    Err(err) => return Poll::Ready(Err(err)),
                }
            }
            let deadline = *waiting_until.get_or_insert_with(|| {
                // A limit too far away to represent is no limit.
                let deadline = limit.and_then(|limit| Instant::now().checked_add(limit));
                if let Some(deadline) = deadline
                    && deadline < timer.deadline()
                {
                    timer.as_mut().reset(deadline);
                }
                deadline
            });
            let Some(deadline) = deadline else {
                return Poll::Pending;
            };
            while timer.as_mut().poll(cx).is_ready() {
                if Instant::now() >= deadline {
                    return Poll::Ready(Ok(None));
                }
                timer.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }
}

impl Borrow<Connection> for EventConnection {
    fn borrow(&self) -> &Connection {
        &self.conn
    }
}

impl BorrowMut<Connection> for EventConnection {
    fn borrow_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// Runs `test` with an event connection (idle timeout `idle`) and the
    /// client's end, on a current-thread runtime, failing after 5 s.
    fn on_a_loop<F: Future<Output = ()>>(
        idle: Option<Duration>,
        test: impl FnOnce(EventConnection, UnixStream) -> F,
    ) {
        let (server, client) = UnixStream::pair().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            server.set_nonblocking(true).unwrap();
            let stream = Stream::Unix(server);
            let peer = stream.peer_addr().unwrap();
            let conn = EventConnection::accepted(stream, peer, idle)
                .map_err(|unwrapped| unwrapped.error)
                .unwrap();
            tokio::time::timeout(Duration::from_secs(5), test(conn, client))
                .await
                .expect("the operation waited instead of answering");
        });
    }

    #[test]
    fn a_zero_byte_read_is_refused_without_waiting() {
        on_a_loop(None, |mut conn, _client| async move {
            assert_eq!(conn.read(0).await, Err(ConnError::InvalidArgument));
        });
    }

    #[test]
    fn reads_after_shutdown_end_at_once() {
        on_a_loop(None, |mut conn, _client| async move {
            conn.connection_mut()
                .shutdown(crate::connection::ShutdownDirection::Read)
                .unwrap();
            assert_eq!(conn.read(10).await, Ok(0));
            assert!(conn.connection_mut().received().is_empty());
        });
    }

    #[test]
    fn an_idle_timeout_too_long_to_represent_means_no_limit() {
        on_a_loop(Some(Duration::MAX), |mut conn, mut client| async move {
            client.write_all(b"hi").unwrap();
            assert_eq!(conn.read(10).await, Ok(2));
            assert_eq!(conn.connection_mut().received(), b"hi");
        });
    }

    #[test]
    fn read_or_message_wakes_for_a_message_or_the_client() {
        on_a_loop(None, |mut conn, mut client| async move {
            let store = super::super::inbox::subscribed_to_room(conn.connection_mut());
            // Published by another thread while the loop waits.
            let publisher = std::thread::spawn({
                let store = std::sync::Arc::clone(&store);
                move || store.publish("room", b"hi").unwrap()
            });
            match conn.read_or_message(10).await.unwrap() {
                Arrival::Message(m) => assert_eq!(&*m.body, b"hi"),
                other => panic!("{other:?} instead of the message"),
            }
            publisher.join().unwrap();
            // Two at once: the first call answers the doorbell for both,
            // and the second still finds its message.
            store.publish("room", b"one").unwrap();
            store.publish("room", b"two").unwrap();
            for expected in [&b"one"[..], b"two"] {
                match conn.read_or_message(10).await.unwrap() {
                    Arrival::Message(m) => assert_eq!(&*m.body, expected),
                    other => panic!("{other:?} instead of a message"),
                }
            }
            client.write_all(b"abc").unwrap();
            assert_eq!(conn.read_or_message(10).await, Ok(Arrival::Data(3)));
            assert_eq!(conn.connection_mut().received(), b"abc");
        });
    }

    #[test]
    fn a_silent_client_times_out_after_the_idle_timeout() {
        let idle = Some(Duration::from_millis(50));
        on_a_loop(idle, |mut conn, client| async move {
            // Keep the client connected (and silent) for the whole wait.
            let _client = client;
            let started = std::time::Instant::now();
            assert_eq!(conn.read(10).await, Err(ConnError::TimedOut));
            assert!(started.elapsed() >= Duration::from_millis(50));
        });
    }
}
