//! The host's side of one accepted connection: the socket (TCP or Unix,
//! either under TLS: [`tls`]) plus the counters and settings the plugin
//! contract exposes (read, write, shutdown, addresses, TLS, read timeout).
//!
//! Every plugin kind drives a connection through this type, so byte counts,
//! error mapping and limits are the same whether a WASM or a native plugin
//! serves it. Its serving mode is fixed when it is wrapped: a
//! [`Connection::blocking`] one is served on a thread of its own (its
//! timeouts are socket options); an [`event::EventConnection`] is
//! non-blocking, registered with an event loop, and applies the same
//! timeouts as timers. The connections of a shared instance (the
//! `protocol` world) are non-blocking too, in [`shared::SharedIo`]. A
//! handler-world connection whose instance subscribed to topics holds an
//! [`inbox::Inbox`], so `read-or-message` wakes for either.

pub mod event;
pub mod inbox;
pub mod shared;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::inbox::{Arrival, Inbox};
use self::tls::{Negotiated, TlsStream};
use crate::address::PeerAddr;
use crate::sys::{doorbell, socket};

/// The most bytes a single `read` hands to a plugin.
pub const MAX_READ_CHUNK: usize = 1024 * 1024;

/// From this many bytes on, a read marks the connection as carrying a bulk
/// transfer (see [`Connection::queued_for_read`]).
const STREAMING_READ: usize = 16 * 1024;

/// Why a connection operation failed, as the plugin contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The connection (or this direction of it) is closed.
    #[error("connection closed")]
    Closed,
    /// The read timeout expired before any byte arrived.
    #[error("read timed out")]
    TimedOut,
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    Reset,
    /// The peer stopped accepting data, or the write failed for a transport reason.
    #[error("broken pipe")]
    BrokenPipe,
    /// An argument was out of range.
    #[error("invalid argument")]
    InvalidArgument,
    /// Any other I/O failure.
    #[error("I/O error")]
    Other,
}

impl ConnError {
    fn from_io(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnError::TimedOut,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ConnError::Reset,
            io::ErrorKind::BrokenPipe => ConnError::BrokenPipe,
            io::ErrorKind::NotConnected | io::ErrorKind::UnexpectedEof => ConnError::Closed,
            io::ErrorKind::InvalidInput => ConnError::InvalidArgument,
            _ => ConnError::Other,
        }
    }
}

/// `From<ConnError>` for an `error-code` of the plugin contract: a WIT
/// bindings' type or the native ABI's (the same variants), so every plugin
/// kind maps transport errors one way.
macro_rules! error_code_from_conn_error {
    ($code:ty) => {
        impl From<$crate::connection::ConnError> for $code {
            fn from(err: $crate::connection::ConnError) -> Self {
                use $crate::connection::ConnError;
                match err {
                    ConnError::Closed => Self::Closed,
                    ConnError::TimedOut => Self::TimedOut,
                    ConnError::Reset => Self::Reset,
                    ConnError::BrokenPipe => Self::BrokenPipe,
                    ConnError::InvalidArgument => Self::InvalidArgument,
                    ConnError::Other => Self::Other,
                }
            }
        }
    };
}
pub(crate) use error_code_from_conn_error;

/// Which direction(s) `shutdown` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownDirection {
    /// No more reads.
    Read,
    /// No more writes: the peer sees end of stream.
    Write,
    /// Both directions.
    Both,
}

/// An accepted stream socket.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream socket connection.
    Unix(UnixStream),
    /// Either, under a TLS session whose handshake is done: reads and
    /// writes carry plaintext.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        Ok(match self {
            Stream::Tcp(s) => PeerAddr::Ip(s.peer_addr()?),
            Stream::Unix(s) => PeerAddr::Unix(s.peer_addr()?.as_pathname().map(Into::into)),
            Stream::Tls(s) => s.socket().peer_addr()?,
        })
    }

    /// The address it was accepted on.
    pub fn local_addr(&self) -> io::Result<PeerAddr> {
        Ok(match self {
            Stream::Tcp(s) => PeerAddr::Ip(s.local_addr()?),
            Stream::Unix(s) => PeerAddr::Unix(s.local_addr()?.as_pathname().map(Into::into)),
            Stream::Tls(s) => s.socket().local_addr()?,
        })
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tls(s) => s.socket().set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
            Stream::Tls(s) => s.socket().set_write_timeout(timeout),
        }
    }

    /// Shuts `how` down; under TLS, ending the write side first tells the
    /// client so (`close_notify`).
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tls(s) => {
                if how != Shutdown::Read {
                    // As far as the socket takes it now; the socket's own
                    // shutdown follows either way.
                    let _ = s.close_notify(0);
                }
                s.socket_mut().shutdown(how)
            }
        }
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(nonblocking),
            Stream::Unix(s) => s.set_nonblocking(nonblocking),
            Stream::Tls(s) => s.socket().set_nonblocking(nonblocking),
        }
    }

    /// What every connection gets, however its plugin waits: no Nagle
    /// delay, urgent bytes inline.
    fn prepare(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_nodelay(true)?;
                // Urgent (out-of-band) bytes stay in the stream, where the
                // plugin reads them like any other, instead of vanishing
                // from it (Unix stream sockets have them too, since Linux
                // 5.15).
                socket2::SockRef::from(s).set_out_of_band_inline(true)
            }
            Stream::Unix(s) => socket2::SockRef::from(s).set_out_of_band_inline(true),
            Stream::Tls(s) => s.socket().prepare(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => tls_read_into(s, buf, 0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf, 0)?.ok_or(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS read (see [`TlsStream::read`]) that waits for its first byte at
/// most `wait` in all: the socket's own timeout would start again with
/// every partial record, so a client trickling a record byte by byte could
/// hold the read forever.
fn tls_read_within(
    tls: &mut TlsStream,
    max: usize,
    wait: Option<Duration>,
    take: &mut dyn FnMut(&[u8]),
) -> io::Result<usize> {
    let deadline = wait.and_then(|wait| Instant::now().checked_add(wait));
    loop {
        match tls.read(max, socket::DONT_WAIT, take) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if !socket::wait_readable(&[tls.as_raw_fd()], left)? {
                    return Err(err);
                }
            }
            other => return other,
        }
    }
}

/// One TLS read into `buf` with `recv` `flags` (see [`TlsStream::read`]).
fn tls_read_into(tls: &mut TlsStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    let max = buf.len();
    tls.read(max, flags, &mut copy_into(buf))
}

/// What a TLS read hands its pieces to when they go to `buf`: each after
/// the one before (the read never hands over more than `buf` holds).
fn copy_into(buf: &mut [u8]) -> impl FnMut(&[u8]) + '_ {
    let mut at = 0;
    move |chunk| {
        buf[at..at + chunk.len()].copy_from_slice(chunk);
        at += chunk.len();
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// A stream that could not be wrapped for serving, and why (usually the
/// peer is already gone).
#[derive(Debug)]
pub struct Unwrapped {
    /// The stream, still open.
    pub stream: Stream,
    /// What failed.
    pub error: io::Error,
}

/// One accepted client connection, owned by the host.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    peer: PeerAddr,
    local: PeerAddr,
    read_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// Set while `finish` runs: when its reads and writes must be done.
    finish_deadline: Option<Instant>,
    read_closed: bool,
    write_closed: bool,
    bytes_in: u64,
    bytes_out: u64,
    /// What the last [`Connection::read`] received, reused for every read.
    received: Vec<u8>,
    /// Whether the last read was large (see [`STREAMING_READ`]): the peer
    /// is sending a bulk transfer.
    streaming: bool,
    /// Topic messages, once the instance subscribed (never removed: an
    /// event loop may have its doorbell registered).
    inbox: Option<Inbox>,
}

impl Connection {
    /// Wraps a stream accepted from `peer` for a plugin served on the
    /// calling thread: the socket blocks, and `idle_timeout` (which bounds
    /// every read the plugin did not give a shorter timeout, and every
    /// write to a client that stopped reading) is set on it as socket
    /// options.
    ///
    /// On failure the stream comes back with the error, so the caller
    /// decides when it closes (after unregistering it, say).
    pub fn blocking(
        stream: Stream,
        peer: PeerAddr,
        idle_timeout: Option<Duration>,
    ) -> Result<Self, Unwrapped> {
        let prepared = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(idle_timeout))
            .and_then(|()| stream.set_write_timeout(idle_timeout));
        match prepared {
            Ok(()) => Self::wrap(stream, peer, idle_timeout),
            Err(error) => Err(Unwrapped { stream, error }),
        }
    }

    /// Wraps a stream for an event loop, which applies `idle_timeout` with
    /// its timers (see [`EventConnection`](event::EventConnection)). The
    /// stream must be non-blocking, as the listener accepts it.
    pub(crate) fn non_blocking(
        stream: Stream,
        peer: PeerAddr,
        idle_timeout: Option<Duration>,
    ) -> Result<Self, Unwrapped> {
        Self::wrap(stream, peer, idle_timeout)
    }

    fn wrap(
        stream: Stream,
        peer: PeerAddr,
        idle_timeout: Option<Duration>,
    ) -> Result<Self, Unwrapped> {
        let local = match stream.local_addr().and_then(|local| {
            stream.prepare()?;
            Ok(local)
        }) {
            Ok(local) => local,
            Err(error) => return Err(Unwrapped { stream, error }),
        };
        Ok(Self {
            stream,
            peer,
            local,
            read_timeout: None,
            idle_timeout,
            finish_deadline: None,
            read_closed: false,
            write_closed: false,
            bytes_in: 0,
            bytes_out: 0,
            received: Vec::new(),
            streaming: false,
            inbox: None,
        })
    }

    /// The connection's inbox for topic messages, made at the first call
    /// (it holds a descriptor, which may be refused).
    pub fn inbox(&mut self) -> io::Result<&mut Inbox> {
        let inbox = match self.inbox.take() {
            Some(inbox) => inbox,
            None => Inbox::new()?,
        };
        Ok(self.inbox.insert(inbox))
    }

    /// The inbox, if the instance ever subscribed.
    pub(crate) fn existing_inbox(&self) -> Option<&Inbox> {
        self.inbox.as_ref()
    }

    /// The same, to change.
    pub(crate) fn existing_inbox_mut(&mut self) -> Option<&mut Inbox> {
        self.inbox.as_mut()
    }

    /// Waits for whichever comes first: bytes from the client (as
    /// [`Connection::read`]) or a message on a subscribed topic; the read's
    /// timeout bounds the wait. Without a subscription, a read.
    pub fn read_or_message(&mut self, max: usize) -> Result<Arrival, ConnError> {
        let Some(bell) = self
            .inbox
            .as_ref()
            .map(|inbox| Arc::clone(inbox.doorbell()))
        else {
            return self.read(max).map(Arrival::Data);
        };
        let deadline = self
            .read_wait()
            .and_then(|wait| Instant::now().checked_add(wait));
        loop {
            if let Some(arrival) = self.arrival_now(max)? {
                return Ok(arrival);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let woken = doorbell::wait_for_either(self.stream.as_raw_fd(), &bell, left)
                .map_err(|err| ConnError::from_io(&err))?;
            if !woken {
                return Err(ConnError::TimedOut);
            }
        }
    }

    /// What is already here for a `read-or-message`: a waiting message or
    /// the bytes a read that does not wait gets (see [`Inbox::next`]).
    pub(crate) fn arrival_now(&mut self, max: usize) -> Result<Option<Arrival>, ConnError> {
        let Some(mut inbox) = self.inbox.take() else {
            return Ok(self.try_read(max)?.map(Arrival::Data));
        };
        let arrival = inbox.next(|| self.try_read(max));
        self.inbox = Some(inbox);
        arrival
    }

    /// Reads up to `max` bytes (clamped to [`MAX_READ_CHUNK`]) into the
    /// connection's receive buffer, where [`Connection::received`] holds
    /// them until the next read: how many arrived, 0 when the peer closed
    /// its side. The buffer is reused, so a read allocates nothing, and a
    /// caller copies the bytes once, to where they go.
    pub fn read(&mut self, max: usize) -> Result<usize, ConnError> {
        self.before_blocking_io();
        self.receive(max, 0)?.ok_or(ConnError::TimedOut)
    }

    /// One non-blocking attempt at [`Connection::read`]: `None` when no
    /// byte is available yet.
    pub fn try_read(&mut self, max: usize) -> Result<Option<usize>, ConnError> {
        self.receive(max, socket::DONT_WAIT)
    }

    /// The bytes the last read received (empty after an error).
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// Receives up to `max` bytes with `recv` `flags` into the receive
    /// buffer; `None` when the socket would block (a read timeout on a
    /// blocking socket).
    fn receive(&mut self, max: usize, flags: libc::c_int) -> Result<Option<usize>, ConnError> {
        if let Some(answer) = self.answer_without_socket(max) {
            return answer.map(Some);
        }
        let want = max.min(MAX_READ_CHUNK);
        let wait = self.read_wait();
        if let Stream::Tls(tls) = &mut self.stream {
            let received = &mut self.received;
            let mut take = |chunk: &[u8]| received.extend_from_slice(chunk);
            let result = if flags & socket::DONT_WAIT != 0 {
                tls.read(want, flags, &mut take)
            } else {
                tls_read_within(tls, want, wait, &mut take)
            };
            self.streaming = false;
            return self.count_received(result);
        }
        self.received.reserve(want);
        let spare = self.received.as_mut_ptr();
        // SAFETY: `reserve` made the (cleared) buffer valid for `want` bytes.
        match unsafe { self.recv(spare, want, flags) } {
            Ok(n) => {
                // SAFETY: `recv` initialised the first `n` bytes.
                unsafe { self.received.set_len(n) };
                self.streaming = n >= STREAMING_READ;
                Ok(Some(n))
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(err) => Err(ConnError::from_io(&err)),
        }
    }

    /// Counts what a read outside `recv` (TLS) received: `None` when it
    /// would block.
    fn count_received(&mut self, result: io::Result<usize>) -> Result<Option<usize>, ConnError> {
        match result {
            Ok(n) => {
                self.bytes_in += n as u64;
                Ok(Some(n))
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(err) => Err(ConnError::from_io(&err)),
        }
    }

    /// Empties the receive buffer for a read of up to `max` bytes, and
    /// answers that read when it needs no socket (see
    /// [`Connection::read_without_socket`]).
    pub(crate) fn answer_without_socket(&mut self, max: usize) -> Option<Result<usize, ConnError>> {
        self.received.clear();
        self.read_without_socket(max)
    }

    /// The answer to a read of up to `max` bytes when it needs no socket:
    /// a zero-byte read is refused, a read after shutting the read side
    /// down is at end of stream.
    fn read_without_socket(&self, max: usize) -> Option<Result<usize, ConnError>> {
        if max == 0 {
            Some(Err(ConnError::InvalidArgument))
        } else if self.read_closed {
            Some(Ok(0))
        } else {
            None
        }
    }

    /// One `recv` of up to `len` bytes into `buf` with `flags`, repeated
    /// when a signal interrupts it; counts the bytes that arrived.
    ///
    /// # Safety
    ///
    /// `buf` must be valid for writes of `len` bytes.
    unsafe fn recv(&mut self, buf: *mut u8, len: usize, flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: the caller vouches for `buf` and `len`.
        let n = unsafe { socket::recv(self.stream.as_raw_fd(), buf, len, flags) }?;
        self.bytes_in += n as u64;
        Ok(n)
    }

    /// While the connection carries a bulk transfer (its last read was
    /// large), how many bytes a read of up to `max` can take from the
    /// socket at once: they are already queued, so a caller can size a
    /// buffer for exactly them and [`Connection::receive_queued`] them.
    /// `None` when nothing is queued, or the transfer is not bulk (one
    /// system call more per read would cost small messages more than it
    /// saves them), or the read would not reach the socket.
    pub fn queued_for_read(&self, max: usize) -> Option<usize> {
        // Under TLS the socket's queue is records, not the plugin's bytes
        // (and TLS reads never mark a bulk transfer).
        if !self.streaming || self.read_without_socket(max).is_some() {
            return None;
        }
        let queued = socket::bytes_queued(self.stream.as_raw_fd()).filter(|&q| q > 0)?;
        Some(queued.min(max).min(MAX_READ_CHUNK))
    }

    /// Receives the `buf.len()` bytes that [`Connection::queued_for_read`]
    /// reported as queued, without waiting; returns how many arrived.
    /// Nobody else reads the socket and urgent data arrives inline, so
    /// that is all of them unless the connection fails part-way: then the
    /// bytes that did arrive are returned (the next read reports the
    /// failure), and only a failure before the first byte is an error.
    pub fn receive_queued(&mut self, buf: &mut [u8]) -> Result<usize, ConnError> {
        let mut filled = 0;
        let failure = loop {
            let rest = &mut buf[filled..];
            if rest.is_empty() {
                break None;
            }
            // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
            match unsafe { self.recv(rest.as_mut_ptr(), rest.len(), socket::DONT_WAIT) } {
                Ok(n) if n > 0 => filled += n,
                // The queued bytes stopped short of what was counted.
                Ok(_) => break Some(ConnError::Other),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    break Some(ConnError::Other);
                }
                Err(err) => break Some(ConnError::from_io(&err)),
            }
        };
        self.streaming = filled >= STREAMING_READ;
        match failure {
            Some(err) if filled == 0 => Err(err),
            _ => Ok(filled),
        }
    }

    /// One non-blocking read into `buf`: how many bytes arrived (0 at the
    /// end of the stream), or `None` when none is available yet.
    pub fn try_read_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ConnError> {
        if let Some(answer) = self.read_without_socket(buf.len()) {
            return answer.map(Some);
        }
        if let Stream::Tls(tls) = &mut self.stream {
            let result = tls_read_into(tls, buf, socket::DONT_WAIT);
            return self.count_received(result);
        }
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        match unsafe { self.recv(buf.as_mut_ptr(), buf.len(), socket::DONT_WAIT) } {
            Ok(n) => Ok(Some(n)),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(err) => Err(ConnError::from_io(&err)),
        }
    }

    /// Reads into `buf`, returning how many bytes arrived (0 = end of stream).
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, ConnError> {
        if self.read_closed {
            return Ok(0);
        }
        let wait = self.read_wait();
        if let Stream::Tls(tls) = &mut self.stream {
            let max = buf.len();
            let result = tls_read_within(tls, max, wait, &mut copy_into(buf));
            return self.count_received(result)?.ok_or(ConnError::TimedOut);
        }
        self.before_blocking_io();
        loop {
            match self.stream.read(buf) {
                Ok(n) => {
                    self.bytes_in += n as u64;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(ConnError::from_io(&err)),
            }
        }
    }

    /// Writes all of `data`.
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), ConnError> {
        let mut rest = data;
        while !rest.is_empty() {
            self.before_blocking_io();
            // A blocking write that would block has timed out: the peer
            // stopped reading.
            let n = self.try_write(rest)?.ok_or(ConnError::BrokenPipe)?;
            rest = &rest[n..];
        }
        // TLS records the socket did not take within its timeout: the
        // client stopped reading, as for a plain write that times out.
        while self.unsent() > 0 {
            self.before_blocking_io();
            self.try_flush()?.ok_or(ConnError::BrokenPipe)?;
        }
        Ok(())
    }

    /// Writes some of `data` (all of it, on a blocking socket, unless the
    /// write timeout expires): how many bytes went out, or `None` when the
    /// socket would block.
    pub fn try_write(&mut self, data: &[u8]) -> Result<Option<usize>, ConnError> {
        if self.write_closed {
            return Err(ConnError::Closed);
        }
        loop {
            match self.stream.write(data) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => {
                    self.bytes_out += n as u64;
                    return Ok(Some(n));
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) => {
                    return Err(match ConnError::from_io(&err) {
                        ConnError::TimedOut => ConnError::BrokenPipe,
                        other => other,
                    });
                }
            }
        }
    }

    /// Sends what TLS left unsent after a write ([`Connection::unsent`]):
    /// `None` while the socket does not take it.
    pub fn try_flush(&mut self) -> Result<Option<()>, ConnError> {
        let Stream::Tls(tls) = &mut self.stream else {
            return Ok(Some(()));
        };
        match tls.flush(0) {
            Ok(true) => Ok(Some(())),
            Ok(false) => Ok(None),
            Err(err) => Err(ConnError::from_io(&err)),
        }
    }

    /// Bytes a write took that are not on the socket yet (TLS records a
    /// full socket did not take; always 0 without TLS). A writer that
    /// waits for the socket sends them with [`Connection::try_flush`].
    pub fn unsent(&self) -> usize {
        match &self.stream {
            Stream::Tls(tls) => tls.unsent(),
            _ => 0,
        }
    }

    /// Whether a read would be answered without waiting for the socket
    /// (TLS: decrypted bytes wait in the session). Look before waiting
    /// for the socket to become readable.
    pub fn has_buffered_input(&mut self) -> bool {
        match &mut self.stream {
            Stream::Tls(tls) => tls.has_buffered_input(),
            _ => false,
        }
    }

    /// Under TLS, tells the client the stream ends here (`close_notify`,
    /// sent if the socket takes it now): for a connection that ends in
    /// order. One cut short (an abort, a trap, a timeout) closes without
    /// it, so the client can tell the difference.
    pub fn notify_close(&mut self) {
        if let Stream::Tls(tls) = &mut self.stream {
            let _ = tls.close_notify(socket::DONT_WAIT);
        }
    }

    /// What TLS negotiated, on a TLS listener.
    pub fn tls(&self) -> Option<Negotiated> {
        match &self.stream {
            Stream::Tls(tls) => Some(tls.negotiated()),
            _ => None,
        }
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&mut self, how: ShutdownDirection) -> Result<(), ConnError> {
        let (std_how, read, write) = match how {
            ShutdownDirection::Read => (Shutdown::Read, true, false),
            ShutdownDirection::Write => (Shutdown::Write, false, true),
            ShutdownDirection::Both => (Shutdown::Both, true, true),
        };
        match self.stream.shutdown(std_how) {
            Ok(()) => {}
            // Already closed by the peer: the direction is shut either way.
            Err(err) if err.kind() == io::ErrorKind::NotConnected => {}
            Err(err) => return Err(ConnError::from_io(&err)),
        }
        self.read_closed |= read;
        self.write_closed |= write;
        Ok(())
    }

    /// The client's address.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    /// The address the connection was accepted on.
    pub fn local_addr(&self) -> &PeerAddr {
        &self.local
    }

    /// Sets the plugin's read timeout (`None` = wait up to the idle timeout).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ConnError> {
        self.read_timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        self.stream
            .set_read_timeout(self.read_wait())
            .map_err(|err| ConnError::from_io(&err))
    }

    /// Bounds all later reads and writes together by `limit` (used while
    /// `finish` runs, so cleanup cannot hold a connection open
    /// indefinitely, however slowly the client trickles). The socket
    /// timeouts follow before each read or write, so a `finish` that does
    /// no I/O costs no system call.
    pub fn limit_blocking(&mut self, limit: Duration) {
        // A limit too far away to represent is no limit.
        self.finish_deadline = Instant::now().checked_add(limit);
    }

    /// With a `finish` deadline, sets the socket timeouts (blocking mode)
    /// to what is left of it before each operation.
    fn before_blocking_io(&self) {
        if self.finish_deadline.is_some() {
            // Failing to tighten a timeout only means the idle bound applies.
            let _ = self.stream.set_read_timeout(self.read_wait());
            let _ = self.stream.set_write_timeout(self.write_wait());
        }
    }

    /// Longest a read may wait for the first byte: the plugin's timeout,
    /// else the idle timeout, within the `finish` bound.
    pub fn read_wait(&self) -> Option<Duration> {
        let wait = match (self.read_timeout, self.idle_timeout) {
            (Some(t), Some(idle)) => Some(t.min(idle)),
            (t, idle) => t.or(idle),
        };
        self.within_limit(wait)
    }

    /// Longest a write may wait for the peer to make room.
    pub fn write_wait(&self) -> Option<Duration> {
        self.within_limit(self.idle_timeout)
    }

    fn within_limit(&self, wait: Option<Duration>) -> Option<Duration> {
        // At least 1 ms: a zero socket timeout would mean "no timeout".
        let left = self.finish_deadline.map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        match (wait, left) {
            (Some(t), Some(left)) => Some(t.min(left)),
            (t, left) => t.or(left),
        }
    }

    /// The plugin's read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Bytes received from the peer so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes sent to the peer so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    /// A connection over one end of a Unix socket pair (5 s idle timeout)
    /// and the client's end.
    fn connection_and_client() -> (Connection, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        let peer = Stream::Unix(server.try_clone().unwrap())
            .peer_addr()
            .unwrap();
        let conn = Connection::blocking(Stream::Unix(server), peer, Some(Duration::from_secs(5)))
            .map_err(|unwrapped| unwrapped.error)
            .unwrap();
        (conn, client)
    }

    fn message_text(arrival: Arrival) -> String {
        match arrival {
            Arrival::Message(m) => String::from_utf8_lossy(&m.body).into_owned(),
            Arrival::Data(n) => panic!("{n} bytes instead of a message"),
        }
    }

    /// A blocking TLS connection over a socket pair with a small send
    /// buffer (`idle` bounds its waits), and the client's end.
    fn tls_connection_and_client(idle: Duration) -> (Connection, tls::testing::Client) {
        let (tls, client) = tls::testing::pair(Some(4096));
        let stream = Stream::Tls(Box::new(tls));
        let peer = stream.peer_addr().unwrap();
        let conn = Connection::blocking(stream, peer, Some(idle))
            .map_err(|unwrapped| unwrapped.error)
            .unwrap();
        (conn, client)
    }

    #[test]
    fn a_tls_write_the_client_never_reads_fails_instead_of_leaving_records_behind() {
        let (mut conn, _client) = tls_connection_and_client(Duration::from_millis(50));
        // One chunk's worth: taken into records whole, more than the
        // socket holds.
        let data = vec![1u8; 64 * 1024];
        assert_eq!(conn.write_all(&data), Err(ConnError::BrokenPipe));
    }

    #[test]
    fn a_record_trickling_in_does_not_renew_a_tls_reads_timeout() {
        let (mut conn, mut client) = tls_connection_and_client(Duration::from_millis(200));
        let trickling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let still = Arc::clone(&trickling);
        let trickler = std::thread::spawn(move || {
            // The header of a 16 KiB record, then its body byte by byte,
            // each byte well within the timeout of the one before.
            let sock = &mut client.sock;
            sock.write_all(&[0x17, 0x03, 0x03, 0x40, 0x00]).unwrap();
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                if sock.write_all(&[0]).is_err() {
                    break;
                }
            }
            still.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(conn.read(100), Err(ConnError::TimedOut));
        assert!(
            trickling.load(std::sync::atomic::Ordering::SeqCst),
            "the read timed out while the record was still trickling in"
        );
        trickler.join().unwrap();
    }

    #[test]
    fn read_or_message_wakes_for_a_message_from_another_thread() {
        let (mut conn, _client) = connection_and_client();
        let store = inbox::subscribed_to_room(&mut conn);
        let publisher = std::thread::spawn({
            let store = std::sync::Arc::clone(&store);
            move || store.publish("room", b"hello").unwrap()
        });
        assert_eq!(message_text(conn.read_or_message(100).unwrap()), "hello");
        publisher.join().unwrap();
    }

    #[test]
    fn read_or_message_takes_turns_and_times_out_like_a_read() {
        let (mut conn, mut client) = connection_and_client();
        let store = inbox::subscribed_to_room(&mut conn);
        for n in 0..3 {
            store.publish("room", format!("m{n}").as_bytes()).unwrap();
        }
        client.write_all(b"abc").unwrap();
        // Client bytes first, then a message, then the client again...
        let mut arrivals = Vec::new();
        for _ in 0..4 {
            arrivals.push(match conn.read_or_message(1).unwrap() {
                Arrival::Data(n) => String::from_utf8_lossy(&conn.received()[..n]).into_owned(),
                message => message_text(message),
            });
        }
        assert_eq!(arrivals, ["a", "m0", "b", "m1"]);
        assert_eq!(conn.read_or_message(1), Ok(Arrival::Data(1)));
        assert_eq!(message_text(conn.read_or_message(1).unwrap()), "m2");
        conn.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        assert_eq!(conn.read_or_message(1), Err(ConnError::TimedOut));
        drop(client);
        assert_eq!(conn.read_or_message(1), Ok(Arrival::Data(0)));
    }

    #[test]
    fn read_or_message_without_a_subscription_is_a_read() {
        let (mut conn, mut client) = connection_and_client();
        client.write_all(b"xy").unwrap();
        assert_eq!(conn.read_or_message(10), Ok(Arrival::Data(2)));
        assert!(conn.existing_inbox().is_none());
    }

    #[test]
    fn reads_return_exactly_what_arrived_before_and_after_a_large_one() {
        let (mut conn, mut client) = connection_and_client();
        client.write_all(b"small").unwrap();
        assert_eq!(read(&mut conn, 64 * 1024), b"small");
        let buffer = conn.received().as_ptr();
        // Queued whole on the socket pair, so one read takes all of it.
        let big: Vec<u8> = (0..48 * 1024u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&big).unwrap();
        assert_eq!(read(&mut conn, 64 * 1024), big);
        assert_eq!(conn.received().as_ptr(), buffer, "the buffer is reused");
        client.write_all(b"again").unwrap();
        assert_eq!(read(&mut conn, 64 * 1024), b"again");
        assert_eq!(conn.bytes_in(), 10 + big.len() as u64);
        conn.shutdown(ShutdownDirection::Read).unwrap();
        assert_eq!(conn.read(64), Ok(0));
        assert!(conn.received().is_empty(), "end of stream leaves nothing");
    }

    /// One read of up to `max` bytes, as a vector.
    fn read(conn: &mut Connection, max: usize) -> Vec<u8> {
        let n = conn.read(max).unwrap();
        assert_eq!(conn.received().len(), n);
        conn.received().to_vec()
    }

    #[test]
    fn queued_bytes_are_offered_only_while_a_bulk_transfer_runs() {
        let (mut conn, mut client) = connection_and_client();
        client.write_all(b"small").unwrap();
        assert_eq!(read(&mut conn, 64 * 1024), b"small");
        client.write_all(b"queued").unwrap();
        assert_eq!(
            conn.queued_for_read(64 * 1024),
            None,
            "after a small read, reads go the usual way"
        );
        assert_eq!(read(&mut conn, 64 * 1024), b"queued");

        let big: Vec<u8> = (0..20 * 1024u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&big).unwrap();
        assert_eq!(read(&mut conn, 64 * 1024), big);
        assert_eq!(conn.queued_for_read(64 * 1024), None, "nothing queued");
        client.write_all(&big).unwrap();
        assert_eq!(conn.queued_for_read(0), None, "a zero-byte read");
        // At most what the read asks for, then what is left.
        assert_eq!(conn.queued_for_read(8 * 1024), Some(8 * 1024));
        let mut first = vec![0; 8 * 1024];
        assert_eq!(conn.receive_queued(&mut first), Ok(first.len()));
        assert_eq!(first, big[..8 * 1024]);
        // A small receive ends the bulk mode until the next large read.
        assert_eq!(conn.queued_for_read(64 * 1024), None);
        let rest = read(&mut conn, 64 * 1024);
        assert_eq!(rest, big[8 * 1024..]);
        assert_eq!(conn.bytes_in(), 11 + 2 * big.len() as u64);

        client.write_all(&big).unwrap();
        conn.read(64 * 1024).unwrap();
        client.write_all(&big).unwrap();
        let queued = conn.queued_for_read(64 * 1024).unwrap();
        assert_eq!(queued, big.len());
        let mut whole = vec![0; queued];
        assert_eq!(conn.receive_queued(&mut whole), Ok(queued));
        assert_eq!(whole, big);
        assert_eq!(
            conn.queued_for_read(64 * 1024),
            None,
            "nothing queued after all of it was received"
        );
        client.write_all(b"x").unwrap();
        conn.shutdown(ShutdownDirection::Read).unwrap();
        assert_eq!(
            conn.queued_for_read(64 * 1024),
            None,
            "the read side is closed"
        );
    }

    #[test]
    fn a_queued_receive_that_stops_short_keeps_what_arrived_and_never_waits() {
        let (mut conn, mut client) = connection_and_client();
        client.write_all(b"abc").unwrap();
        let mut buf = [0; 4];
        assert_eq!(conn.receive_queued(&mut buf), Ok(3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(conn.bytes_in(), 3);
        assert_eq!(
            conn.receive_queued(&mut buf),
            Err(ConnError::Other),
            "nothing queued at all"
        );
    }

    #[test]
    fn urgent_bytes_on_a_unix_socket_stay_in_the_stream() {
        let (mut conn, client) = connection_and_client();
        let client = socket2::SockRef::from(&client);
        client.send(b"ab").unwrap();
        client.send_out_of_band(b"!").unwrap();
        client.send(b"cd").unwrap();
        let mut received = Vec::new();
        while received.len() < 5 {
            received.extend(read(&mut conn, 64));
        }
        assert_eq!(received, b"ab!cd");
    }
}
