//! Clients: connections with timeouts, round trips, bulk transfers, a
//! client that never reads, and [`Spinner`], a connection that sets a
//! `spin.wasm` instance computing and tells when the host has closed it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// A client connection to `addr` (IPv4) whose receive buffer is 4 KiB,
/// so the host's sends back up after a few KiB the client has not read;
/// read timeout set.
pub fn connect_with_small_buffer(addr: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    stream
}

/// A client connection to `addr` with timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set write timeout");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

/// Sends `message` on `stream` and reads as many bytes back.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).expect("send");
    let mut reply = vec![0; message.len()];
    stream.read_exact(&mut reply).expect("reply");
    reply
}

/// The client pausing between messages: part of what a test sends (a
/// slow client, a silent one), not a wait for the host to do something.
pub fn stay_silent_for(pause: Duration) {
    thread::sleep(pause);
}

/// Writes to `stream` without ever reading, until the peer's echo stalls
/// the socket buffers (a write fails after 5 s) or 64 MiB went through.
pub fn write_without_reading(stream: &mut TcpStream) {
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("set write timeout");
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
}

/// Reads `stream` until the host closes it (end of stream, or a reset
/// from unread input at close) and returns true; false if the read
/// timeout passed first.
pub fn read_until_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Sends `x` to `addr` and waits until the host closes the connection
/// (a plugin that computes or traps on it); fails the test if the host
/// has not closed it after 30 s.
pub fn wait_closed_after_x(addr: SocketAddr) {
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set read timeout");
    stream.write_all(b"x").expect("send x");
    assert!(
        read_until_closed(&mut stream),
        "the host did not close the connection to {addr} within 30 s"
    );
}

/// Sends with `send` on a clone of `stream`, in a thread of its own, then
/// ends the client's side; meanwhile reads everything that comes back
/// until the host closes, and returns it. Writing and reading at once, as
/// a bulk transfer through an echo needs (neither side blocks the other).
pub fn echo_to_end(
    stream: &TcpStream,
    send: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> Vec<u8> {
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || {
        send(&mut writer);
        writer
            .shutdown(Shutdown::Write)
            .expect("end the client's side");
    });
    let mut echoed = Vec::new();
    let mut reader = stream;
    reader
        .read_to_end(&mut echoed)
        .expect("the host closes after the client's end of stream");
    sender.join().expect("the sending thread panicked");
    echoed
}

/// A connection to a `spin.wasm` listener that sent `x`: its instance
/// reads that one byte, then computes without end. A thread watches for
/// the host closing the connection.
pub struct Spinner {
    host: SocketAddr,
    client: SocketAddr,
    started: Instant,
    closed: JoinHandle<bool>,
}

impl Spinner {
    /// Connects to `addr` and sends `x`.
    pub fn start(addr: SocketAddr) -> Spinner {
        let mut stream = connect(addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set read timeout");
        let client = stream.local_addr().expect("client address");
        let started = Instant::now();
        stream.write_all(b"x").expect("send x");
        let closed = thread::spawn(move || read_until_closed(&mut stream));
        Spinner {
            host: addr,
            client,
            started,
            closed,
        }
    }

    /// Starts `count` spinners on `addr`, and waits until each is spinning.
    pub fn spinning(addr: SocketAddr, count: usize) -> Vec<Spinner> {
        let spinners: Vec<Spinner> = (0..count).map(|_| Spinner::start(addr)).collect();
        for spinner in &spinners {
            spinner.wait_until_spinning();
        }
        spinners
    }

    /// Waits (bounded) until the host has taken the `x` off this
    /// connection's socket (its receive queue in `/proc/net/tcp*` is
    /// empty): the instance has read it and computes from then on.
    pub fn wait_until_spinning(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match host_receive_queue(self.host, self.client) {
                Some(0) => return,
                Some(_) => {}
                None => assert!(
                    !self.closed.is_finished(),
                    "the host closed the spinner {} before it spun",
                    self.client
                ),
            }
            assert!(
                Instant::now() < deadline,
                "the host never read the spinner {}'s byte",
                self.client
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the connection is still open (the host has not closed it).
    pub fn is_open(&self) -> bool {
        !self.closed.is_finished()
    }

    /// Waits until the host closes the connection; returns how long after
    /// the `x` was sent. Fails the test if it is still open after 60 s.
    pub fn wait_closed(self) -> Duration {
        let closed = self.closed.join().expect("the spinner's reader panicked");
        assert!(
            closed,
            "the host did not close the spinner {} within 60 s",
            self.client
        );
        self.started.elapsed()
    }
}

/// The receive queue (bytes not yet read by the host) of the host's end of
/// the TCP connection between `host` and `client`, from the kernel's socket
/// table; `None` if the socket is not (or no longer) there.
fn host_receive_queue(host: SocketAddr, client: SocketAddr) -> Option<u64> {
    let table = if host.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).expect("read the kernel's TCP socket table");
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    text.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx_queue:rx_queue ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if port(local)? != host.port() || port(remote)? != client.port() {
            return None;
        }
        u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    })
}
