//! A connection's bytes through TLS: a rustls server session over the
//! accepted socket. The plugin reads and writes plaintext; this module
//! turns that into records on the socket, in every serving mode.
//!
//! It keeps the socket's contract with its callers, so the serving modes
//! need to know one thing more than for a plain socket:
//! - a read fills as much of its buffer as the socket has for it, so a
//!   short read still means "the socket is drained" (an event loop waits
//!   for the next edge);
//! - decrypted bytes may wait in the session with the socket empty
//!   ([`TlsStream::has_buffered_input`]): look before waiting on the socket;
//! - records may wait to be sent after a write returned
//!   ([`TlsStream::unsent`]): a writer that waits for the socket flushes
//!   them ([`TlsStream::flush`]) before it is done.
//!
//! The handshake ([`TlsStream::handshake`]) runs before the plugin sees the
//! connection (`server/preamble.rs`), so what was negotiated
//! ([`TlsStream::negotiated`]) is known from the first call.

use std::io::{self, BufRead, Write};
use std::os::fd::{AsRawFd, RawFd};

use rustls::ServerConnection;

use super::Stream;
use crate::sys::socket;

/// Most plaintext taken into records per write before they are sent, so
/// unsent records stay bounded (a write of more returns a short count
/// when the socket is full).
const WRITE_CHUNK: usize = 64 * 1024;

/// What a TLS handshake settled, for the plugin and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite, as IANA names it (`TLS13_AES_128_GCM_SHA256`).
    pub cipher_suite: String,
    /// The server name the client asked for (SNI), if it named one.
    pub server_name: Option<String>,
    /// The application protocol both chose (ALPN), if any.
    pub alpn: Option<String>,
}

/// A TLS server session over an accepted socket.
pub struct TlsStream {
    session: ServerConnection,
    socket: Stream,
    /// Records made and not yet sent; `out[sent..]` is what is left.
    out: Vec<u8>,
    sent: usize,
    /// Whether the `close_notify` was made (it is sent once).
    notified: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("socket", &self.socket)
            .field("handshaking", &self.session.is_handshaking())
            .field("unsent", &self.unsent())
            .finish()
    }
}

impl TlsStream {
    /// A session that has not shaken hands yet, over a non-blocking
    /// `socket`.
    pub fn new(session: ServerConnection, socket: Stream) -> Self {
        Self {
            session,
            socket,
            out: Vec::new(),
            sent: 0,
            notified: false,
        }
    }

    /// The socket under the session.
    pub fn socket(&self) -> &Stream {
        &self.socket
    }

    /// The same, to shut down.
    pub fn socket_mut(&mut self) -> &mut Stream {
        &mut self.socket
    }

    /// One step of the handshake on a non-blocking socket: `true` once it
    /// is done and everything it produced is sent, `false` while it waits
    /// for the socket (readable or writable: wait for either). An error
    /// says why it failed; the alert that tells the client is sent first
    /// when the socket takes it.
    pub fn handshake(&mut self) -> io::Result<bool> {
        loop {
            self.collect_records();
            if !self.flush(socket::DONT_WAIT)? {
                return Ok(false);
            }
            if !self.session.is_handshaking() {
                return Ok(true);
            }
            match self.read_records(socket::DONT_WAIT) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection during the handshake",
                    ));
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
            self.process()?;
        }
    }

    /// What the handshake settled.
    pub fn negotiated(&self) -> Negotiated {
        let version = match self.session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher_suite = self
            .session
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or_default()
            .to_string();
        Negotiated {
            version,
            cipher_suite,
            server_name: self.session.server_name().map(str::to_string),
            alpn: self
                .session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }

    /// Whether a read would be answered without the socket: decrypted
    /// bytes wait in the session (the socket may be empty), or the stream
    /// has ended.
    pub fn has_buffered_input(&mut self) -> bool {
        match self.session.reader().fill_buf() {
            Ok(_) => true,
            Err(err) => err.kind() != io::ErrorKind::WouldBlock,
        }
    }

    /// Reads up to `max` decrypted bytes, handing them to `take` in
    /// pieces; receives records with `recv` `flags` (`DONT_WAIT`, or 0 to
    /// wait as the socket does) until the first byte is there, then takes
    /// what the socket has without waiting, so that a short read means the
    /// socket is drained. 0 at the end of the stream (the client's
    /// `close_notify`, or the socket closing without one); `WouldBlock`
    /// when nothing arrived.
    pub fn read(
        &mut self,
        max: usize,
        flags: libc::c_int,
        take: &mut dyn FnMut(&[u8]),
    ) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            let mut reader = self.session.reader();
            match reader.fill_buf() {
                // The client's `close_notify`: the end of the stream.
                Ok([]) => return Ok(filled),
                Ok(chunk) => {
                    let n = chunk.len().min(max - filled);
                    take(&chunk[..n]);
                    reader.consume(n);
                    filled += n;
                    if filled == max {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without a `close_notify`: many clients
                // end so; the plugin sees the end of the stream.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(err) => return partial(filled, err),
            }
            let flags = if filled > 0 {
                flags | socket::DONT_WAIT
            } else {
                flags
            };
            if let Err(err) = self.read_records(flags) {
                return partial(filled, err);
            }
            if let Err(err) = self.process() {
                return partial(filled, err);
            }
        }
    }

    /// Encrypts and sends some of `data`: first what earlier writes left
    /// unsent (`None` when the socket still does not take it), then up to
    /// all of `data`, [`WRITE_CHUNK`] at a time, stopping when the socket
    /// is full. Sends with `send` `flags` (0 waits as the socket does).
    pub fn write(&mut self, data: &[u8], flags: libc::c_int) -> io::Result<Option<usize>> {
        if !self.flush(flags)? {
            return Ok(None);
        }
        let mut taken = 0;
        while taken < data.len() {
            let end = data.len().min(taken + WRITE_CHUNK);
            taken += self.session.writer().write(&data[taken..end])?;
            self.collect_records();
            if !self.flush(flags)? {
                break;
            }
        }
        Ok(Some(taken))
    }

    /// Sends what is unsent; `true` when nothing is left, `false` when the
    /// socket does not take more now.
    pub fn flush(&mut self, flags: libc::c_int) -> io::Result<bool> {
        while self.sent < self.out.len() {
            let rest = &self.out[self.sent..];
            match socket::send(self.socket.as_raw_fd(), rest, flags) {
                Ok(n) => self.sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(true)
    }

    /// Bytes of records made and not yet sent.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Tells the client no more data follows (`close_notify`) and sends
    /// it with `flags`, as far as the socket takes it.
    pub fn close_notify(&mut self, flags: libc::c_int) -> io::Result<()> {
        if !std::mem::replace(&mut self.notified, true) {
            self.session.send_close_notify();
            self.collect_records();
        }
        self.flush(flags).map(|_| ())
    }

    /// Moves every record the session made into `out`.
    fn collect_records(&mut self) {
        while self.session.wants_write() {
            // Writing into a vector cannot fail.
            if self.session.write_tls(&mut self.out).is_err() {
                break;
            }
        }
    }

    /// One `recv` of records into the session: how many bytes (0 at the
    /// end of the stream).
    fn read_records(&mut self, flags: libc::c_int) -> io::Result<usize> {
        let mut source = SocketSource {
            fd: self.socket.as_raw_fd(),
            flags,
        };
        self.session.read_tls(&mut source)
    }

    /// Decrypts what arrived; what the session answers (alerts, tickets,
    /// key updates) is sent without waiting. An error names why the
    /// session failed.
    fn process(&mut self) -> io::Result<()> {
        let processed = self.session.process_new_packets();
        self.collect_records();
        // The answer goes out if the socket takes it; a full socket only
        // delays it to the next write or flush.
        let _ = self.flush(socket::DONT_WAIT);
        processed
            .map(|_| ())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, describe(&err)))
    }
}

impl AsRawFd for TlsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The bytes that did arrive, or the error when none did (the next read
/// reports it).
fn partial(filled: usize, err: io::Error) -> io::Result<usize> {
    if filled > 0 { Ok(filled) } else { Err(err) }
}

/// A TLS failure in words an operator acts on.
fn describe(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the client does not speak TLS (plaintext on a TLS listener?)".to_string()
        }
        rustls::Error::NoApplicationProtocol => {
            "the client offered no application protocol (ALPN) this listener serves".to_string()
        }
        other => other.to_string(),
    }
}

/// `recv` on a socket with flags, as the session's record source.
struct SocketSource {
    fd: RawFd,
    flags: libc::c_int,
}

impl io::Read for SocketSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        unsafe { socket::recv(self.fd, buf.as_mut_ptr(), buf.len(), self.flags) }
    }
}

/// A TLS connection over a Unix socket pair for unit tests: the host's
/// side, served by rustls with a certificate from a CA made for the test,
/// and the client's side (blocking, trusting that CA), handshake done.
#[cfg(test)]
pub(crate) mod testing {
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};

    use super::TlsStream;
    use crate::connection::Stream;
    use crate::sys::socket;

    /// The client's side.
    pub type Client = StreamOwned<ClientConnection, UnixStream>;

    /// The pair; `server_send_buffer` sets the host side's `SO_SNDBUF`.
    pub fn pair(server_send_buffer: Option<usize>) -> (TlsStream, Client) {
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let (server, client) = UnixStream::pair().unwrap();
        if let Some(size) = server_send_buffer {
            socket2::SockRef::from(&server)
                .set_send_buffer_size(size)
                .unwrap();
            socket2::SockRef::from(&client)
                .set_recv_buffer_size(size)
                .unwrap();
        }
        server.set_nonblocking(true).unwrap();
        let session = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let mut tls = TlsStream::new(session, Stream::Unix(server));
        let name = ServerName::try_from("localhost").unwrap();
        let client_session = ClientConnection::new(Arc::new(client_config), name).unwrap();
        let shaking = std::thread::spawn(move || {
            let mut client = StreamOwned::new(client_session, client);
            while client.conn.is_handshaking() {
                client.conn.complete_io(&mut client.sock).unwrap();
            }
            client
        });
        while !tls.handshake().unwrap() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&tls);
            socket::wait_readable(&[fd], Some(Duration::from_millis(10))).unwrap();
        }
        (tls, shaking.join().unwrap())
    }
}
