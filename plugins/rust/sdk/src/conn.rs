//! [`Conn`], the connection a handler talks over, and the [`Transport`] it
//! sits on.
//!
//! `Conn` adds what every handler needs on top of the raw WIT resource: a
//! read buffer (for [`Conn::read_line`] and [`Conn::read_exact`]), typed
//! addresses and timeouts, the `std::io` traits, and waiting for the
//! client or a topic message at once ([`Conn::read_or_message`],
//! [`Conn::read_line_or_message`]). The raw operations go
//! through the [`Transport`] trait, so the same `Conn` runs over the WIT
//! `connection` resource inside a component, over a future native (C ABI)
//! backend, or over [`testing::Script`](crate::testing::Script) in unit
//! tests.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::time::Duration;

use crate::Error;
use plughost_guest_rt::TlsSession;

/// The largest read the host serves in one call (larger requests are
/// clamped by the host).
pub const MAX_READ: usize = 1 << 20;

/// How many bytes [`Conn::read_line`] asks the transport for at a time.
const LINE_CHUNK: usize = 16 * 1024;

/// A message on a topic the instance subscribed to
/// ([`store::subscribe`](crate::store::subscribe)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// The bytes published.
    pub data: Vec<u8>,
}

/// What [`Conn::read_or_message`] (and [`Conn::read_line_or_message`])
/// returned: whichever came first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Bytes from the client (a line, from `read_line_or_message`); empty
    /// from `read_or_message` at the end of the client's stream.
    Data(Vec<u8>),
    /// A message on a subscribed topic.
    Message(Message),
}

/// The raw operations of one connection, as the host offers them.
///
/// Plugin code does not use this trait: it talks to [`Conn`]. It is public so
/// that a backend (the WIT resource, a future native ABI) or a test double can
/// be plugged under a `Conn` with [`Conn::new`].
pub trait Transport {
    /// Reads up to `max` (≥ 1) bytes; blocks until at least one byte is
    /// available. An empty vector means end of stream.
    fn read(&mut self, max: u32) -> Result<Vec<u8>, Error>;
    /// Writes all of `data`.
    fn write(&mut self, data: &[u8]) -> Result<(), Error>;
    /// Shuts down one or both directions.
    fn shutdown(&mut self, how: Shutdown) -> Result<(), Error>;
    /// The client's address.
    fn peer_addr(&self) -> SocketAddr;
    /// The address the host accepted the connection on.
    fn local_addr(&self) -> SocketAddr;
    /// Sets the read timeout in milliseconds (`None`: block without limit).
    fn set_timeout_ms(&mut self, ms: Option<u64>);
    /// The read timeout in milliseconds.
    fn timeout_ms(&self) -> Option<u64>;
    /// What the TLS handshake negotiated (`None`: a plaintext listener,
    /// or a transport that cannot tell, such as the native ABI).
    fn tls(&self) -> Option<TlsSession> {
        None
    }
    /// Waits for up to `max` bytes or a topic message, whichever comes
    /// first. A transport without topics (the native ABI) reads.
    fn read_or_message(&mut self, max: u32) -> Result<Arrival, Error> {
        self.read(max).map(Arrival::Data)
    }
}

/// One client connection, borrowed from the host for the duration of a
/// [`Handler`](crate::Handler) call.
///
/// Reads are served from an internal buffer first: bytes that
/// [`read_line`](Conn::read_line) or [`read_exact`](Conn::read_exact) fetched
/// beyond what they returned are handed out by the next read of any kind.
/// Inside a component the buffer survives from `setup` to `handle` to
/// `finish` of the same connection. Writes are not buffered: every
/// [`write_all`](Conn::write_all) goes straight to the host.
pub struct Conn<'a> {
    io: &'a mut dyn Transport,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
}

impl<'a> Conn<'a> {
    /// Wraps a transport. Backends and tests call this; handlers receive a
    /// ready `Conn`.
    pub fn new(io: &'a mut dyn Transport) -> Self {
        Self::with_buffer(io, Vec::new())
    }

    /// Wraps a transport, starting with `buffered` as already-read input.
    pub fn with_buffer(io: &'a mut dyn Transport, buffered: Vec<u8>) -> Self {
        Conn {
            io,
            buf: buffered,
            pos: 0,
        }
    }

    /// Gives back the bytes read from the transport but not yet handed out.
    pub fn into_buffer(mut self) -> Vec<u8> {
        self.buf.drain(..self.pos);
        self.buf
    }

    /// The bytes read from the transport but not yet handed out.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads up to `max` bytes (at most 1 MiB is fetched per call). Returns
    /// buffered bytes first without calling the host. An empty vector means
    /// the peer closed its side (end of stream), like `recv` returning
    /// `b""`. A `max` of 0 is [`Error::InvalidArgument`].
    pub fn read(&mut self, max: usize) -> Result<Vec<u8>, Error> {
        if max == 0 {
            return Err(Error::InvalidArgument);
        }
        if self.pos < self.buf.len() {
            let n = max.min(self.buf.len() - self.pos);
            let out = self.buf[self.pos..self.pos + n].to_vec();
            self.consume(n);
            return Ok(out);
        }
        self.io.read(clamp(max))
    }

    /// Waits for whichever comes first: up to `max` bytes from the client
    /// (buffered bytes first, without calling the host; empty at the end
    /// of its stream), a message on a topic the instance subscribed to
    /// ([`store::subscribe`](crate::store::subscribe)), or the read
    /// timeout ([`Error::TimedOut`]). Without a subscription it is
    /// [`Conn::read`].
    pub fn read_or_message(&mut self, max: usize) -> Result<Arrival, Error> {
        if max == 0 {
            return Err(Error::InvalidArgument);
        }
        if self.pos < self.buf.len() {
            return self.read(max).map(Arrival::Data);
        }
        self.io.read_or_message(clamp(max))
    }

    /// [`Conn::read_line`] that also returns a topic message when one
    /// comes before the line is complete (the part read so far stays
    /// buffered): `Ok(Some(Arrival::Data(line)))` with the line and its
    /// `\n` (at end of stream, the last bytes without one),
    /// `Ok(Some(Arrival::Message(_)))`, or `Ok(None)` at end of stream
    /// with nothing buffered. Bounded by `max_len` as `read_line`.
    pub fn read_line_or_message(&mut self, max_len: usize) -> Result<Option<Arrival>, Error> {
        if max_len == 0 {
            return Err(Error::InvalidArgument);
        }
        loop {
            let pending = &self.buf[self.pos..];
            let limit = pending.len().min(max_len);
            if let Some(i) = pending[..limit].iter().position(|&b| b == b'\n') {
                let line = pending[..=i].to_vec();
                self.consume(i + 1);
                return Ok(Some(Arrival::Data(line)));
            }
            if pending.len() >= max_len {
                return Err(Error::LineTooLong);
            }
            let want = LINE_CHUNK.min(max_len - pending.len()).max(1);
            match self.io.read_or_message(clamp(want))? {
                Arrival::Message(message) => return Ok(Some(Arrival::Message(message))),
                Arrival::Data(data) if data.is_empty() => {
                    return Ok(self.take_rest().map(Arrival::Data));
                }
                Arrival::Data(data) => self.append(&data),
            }
        }
    }

    /// Writes all of `data` (like `sendall`).
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.io.write(data)
    }

    /// Reads exactly `n` bytes. An end of stream before that is
    /// [`Error::Closed`]; the bytes received so far stay buffered.
    pub fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, Error> {
        while self.buf.len() - self.pos < n {
            let want = n - (self.buf.len() - self.pos);
            if !self.fill(want)? {
                return Err(Error::Closed);
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.consume(n);
        Ok(out)
    }

    /// Reads one line, including its `\n`.
    ///
    /// * `Ok(Some(line))`: a line ending in `\n`, or, at end of stream, the
    ///   last bytes without one.
    /// * `Ok(None)`: end of stream with nothing buffered.
    /// * `Err(Error::LineTooLong)`: no `\n` within `max_len` bytes (the
    ///   newline counts). Nothing is consumed, so the buffer never grows much
    ///   beyond `max_len`; the connection is usually best closed.
    ///
    /// Bytes after the line stay buffered for the next read.
    pub fn read_line(&mut self, max_len: usize) -> Result<Option<Vec<u8>>, Error> {
        if max_len == 0 {
            return Err(Error::InvalidArgument);
        }
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.pos..];
            let limit = pending.len().min(max_len);
            if let Some(i) = pending[scanned..limit].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                let line = pending[..end].to_vec();
                self.consume(end);
                return Ok(Some(line));
            }
            if pending.len() >= max_len {
                return Err(Error::LineTooLong);
            }
            scanned = pending.len();
            if !self.fill(LINE_CHUNK.min(max_len - pending.len()).max(1))? {
                return Ok(self.take_rest());
            }
        }
    }

    /// Shuts down one or both directions (like `socket.shutdown`).
    /// Shutting down [`Shutdown::Write`] lets the peer see end of stream
    /// while the handler can still read.
    pub fn shutdown(&mut self, how: Shutdown) -> Result<(), Error> {
        self.io.shutdown(how)
    }

    /// The client's address (`client_address` in socketserver).
    pub fn peer_addr(&self) -> SocketAddr {
        self.io.peer_addr()
    }

    /// The address the host accepted the connection on.
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addr()
    }

    /// What the TLS handshake negotiated, on a listener that terminates
    /// TLS (`host run --tls-cert`); `None` on a plaintext one.
    pub fn tls(&self) -> Option<TlsSession> {
        self.io.tls()
    }

    /// Sets the read timeout (`settimeout`); `None` blocks without limit
    /// (within the host's idle timeout). A read that times out fails with
    /// [`Error::TimedOut`] and leaves the connection usable. The timeout is
    /// kept in whole milliseconds, rounded up; zero is treated as 1 ms.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        let ms = timeout.map(|d| {
            let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
            u64::try_from(ms).unwrap_or(u64::MAX).max(1)
        });
        self.io.set_timeout_ms(ms);
    }

    /// The read timeout currently set.
    pub fn timeout(&self) -> Option<Duration> {
        self.io.timeout_ms().map(Duration::from_millis)
    }

    /// Appends one read of up to `max` bytes to the buffer; `false` at end of
    /// stream.
    fn fill(&mut self, max: usize) -> Result<bool, Error> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let data = self.io.read(clamp(max))?;
        if data.is_empty() {
            return Ok(false);
        }
        self.append(&data);
        Ok(true)
    }

    /// Appends bytes read from the transport to the buffer.
    fn append(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// At end of stream: what is buffered, if anything, emptying the
    /// buffer.
    fn take_rest(&mut self) -> Option<Vec<u8>> {
        if self.pos == self.buf.len() {
            return None;
        }
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        Some(rest)
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }
}

fn clamp(max: usize) -> u32 {
    max.min(MAX_READ) as u32
}

/// Parses the host's text address; an unparsable one (which the host does
/// not produce) becomes `0.0.0.0:port`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn parse_addr(ip: &str, port: u16) -> SocketAddr {
    let ip = ip
        .parse::<IpAddr>()
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, port)
}

impl io::Read for Conn<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.buf.len() && !self.fill(out.len())? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.consume(n);
        Ok(n)
    }
}

impl io::Write for Conn<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        Conn::write_all(self, data).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Script;

    #[test]
    fn read_line_splits_and_keeps_leftovers() {
        let mut t = Script::new([&b"one\ntwo\nthr"[..], b"ee\nrest"]);
        let mut c = Conn::new(&mut t);
        assert_eq!(c.read_line(100).unwrap().unwrap(), b"one\n");
        assert_eq!(c.buffered(), b"two\nthr");
        assert_eq!(c.read_line(100).unwrap().unwrap(), b"two\n");
        assert_eq!(c.read_line(100).unwrap().unwrap(), b"three\n");
        assert_eq!(c.read(2).unwrap(), b"re");
        assert_eq!(c.read_line(100).unwrap().unwrap(), b"st");
        assert_eq!(c.read_line(100).unwrap(), None);
        assert_eq!(c.read(10).unwrap(), b"");
    }

    #[test]
    fn read_line_is_bounded() {
        let mut t = Script::new([&b"abcdef"[..], b"ghij\n"]);
        let mut c = Conn::new(&mut t);
        assert_eq!(c.read_line(8), Err(Error::LineTooLong));
        assert!(c.buffered().len() <= 8);
        // exactly max_len including the newline is fine
        let mut t = Script::new([&b"abc"[..], b"d\nx"]);
        let mut c = Conn::new(&mut t);
        assert_eq!(c.read_line(5).unwrap().unwrap(), b"abcd\n");
        // read_line never reads past max_len, so "x" is still unread
        assert_eq!(c.buffered(), b"");
        assert_eq!(c.read(10).unwrap(), b"x");
    }

    #[test]
    fn read_exact_spans_reads_and_reports_early_eof() {
        let mut t = Script::new([&b"ab"[..], b"cde", b"f"]);
        let mut c = Conn::new(&mut t);
        assert_eq!(c.read_exact(4).unwrap(), b"abcd");
        assert_eq!(c.read_exact(3), Err(Error::Closed));
        assert_eq!(c.buffered(), b"ef");
    }

    #[test]
    fn io_traits_work() {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut t = Script::new([&b"hello "[..], b"world\nbye"]);
        {
            let mut c = Conn::new(&mut t);
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            assert_eq!(s, "hello world\nbye");
            writeln!(c, "n={}", 3).unwrap();
        }
        assert_eq!(t.written(), b"n=3\n");
        let mut t = Script::new([&b"a\nb\n"[..]]);
        let lines: Vec<String> = BufReader::new(Conn::new(&mut t))
            .lines()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines, ["a", "b"]);
    }

    #[test]
    fn timeouts_round_up_to_milliseconds() {
        let mut t = Script::new::<[&[u8]; 0]>([]);
        let mut c = Conn::new(&mut t);
        c.set_timeout(Some(Duration::from_micros(1500)));
        assert_eq!(c.timeout(), Some(Duration::from_millis(2)));
        c.set_timeout(Some(Duration::ZERO));
        assert_eq!(c.timeout(), Some(Duration::from_millis(1)));
        c.set_timeout(None);
        assert_eq!(c.timeout(), None);
        assert_eq!(c.read(0), Err(Error::InvalidArgument));
    }

    #[test]
    fn a_message_comes_between_lines_and_the_partial_line_waits() {
        let mut t = Script::new([&b"hel"[..]])
            .then_message("room", b"hi")
            .then_chunk(b"lo\nbye");
        let mut c = Conn::new(&mut t);
        let message = Arrival::Message(Message {
            topic: "room".into(),
            data: b"hi".to_vec(),
        });
        assert_eq!(c.read_line_or_message(100).unwrap(), Some(message));
        assert_eq!(c.buffered(), b"hel");
        let line = c.read_line_or_message(100).unwrap();
        assert_eq!(line, Some(Arrival::Data(b"hello\n".to_vec())));
        let rest = c.read_line_or_message(100).unwrap();
        assert_eq!(rest, Some(Arrival::Data(b"bye".to_vec())));
        assert_eq!(c.read_line_or_message(100).unwrap(), None);
        assert_eq!(c.read_line_or_message(0), Err(Error::InvalidArgument));
    }

    #[test]
    fn read_or_message_hands_out_buffered_bytes_first() {
        let mut t = Script::new([&b"a\nbc"[..]]).then_message("t", b"m");
        let mut c = Conn::new(&mut t);
        assert_eq!(c.read_line(10).unwrap().unwrap(), b"a\n");
        assert_eq!(
            c.read_or_message(10).unwrap(),
            Arrival::Data(b"bc".to_vec())
        );
        assert!(matches!(
            c.read_or_message(10).unwrap(),
            Arrival::Message(_)
        ));
        assert_eq!(c.read_or_message(10).unwrap(), Arrival::Data(Vec::new()));
        let mut t = Script::new([&b"abcdef"[..]]);
        let mut c = Conn::new(&mut t);
        assert_eq!(c.read_line_or_message(4), Err(Error::LineTooLong));
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_addr("::1", 80),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_addr("bogus", 7),
            "0.0.0.0:7".parse::<SocketAddr>().unwrap()
        );
    }
}
