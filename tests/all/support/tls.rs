//! TLS for the tests: a throw-away certificate authority that issues
//! server certificates into PEM files ([`TestCa`]), and a rustls client
//! that trusts only it ([`TlsClient`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{IO_TIMEOUT, temp_dir};

/// A certificate authority made for one test, and the directory its
/// files go to.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A server certificate's files and its DER, to compare with what a
/// client was sent.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Issued {
    /// The `--tls-cert FILE --tls-key FILE` flags serving it.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl TestCa {
    /// A new authority writing into a fresh directory named after `label`.
    pub fn new(label: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("plughost test CA {label}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            issuer,
            dir: temp_dir(label),
        }
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a certificate for `names` into `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        self.issue_with(file, names, |_| {})
    }

    /// A certificate that expired in 2021.
    pub fn issue_expired(&self, file: &str, names: &[&str]) -> Issued {
        self.issue_with(file, names, |params| {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A client configuration trusting this authority only, offering
    /// `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    /// A client connected to `addr`, asking for `name`, handshake done.
    pub fn connect(&self, addr: SocketAddr, name: &str) -> TlsClient {
        TlsClient::over(super::connect(addr), self.client_config(&[]), name)
            .expect("the TLS handshake succeeds")
    }
}

/// A TLS client connection, read line by line.
pub struct TlsClient {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Shakes hands over `tcp` (which may have sent a PROXY header
    /// already), asking for `name`; the error is the handshake's.
    pub fn over(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: &str,
    ) -> Result<TlsClient, std::io::Error> {
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let session = ClientConnection::new(config, server_name).unwrap();
        let mut stream = StreamOwned::new(session, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream: BufReader::new(stream),
        })
    }

    fn tls(&self) -> &ClientConnection {
        &self.stream.get_ref().conn
    }

    /// The certificate the server sent.
    pub fn server_certificate(&self) -> CertificateDer<'static> {
        self.tls().peer_certificates().expect("a certificate")[0].clone()
    }

    /// The application protocol negotiated.
    pub fn alpn(&self) -> Option<String> {
        self.tls()
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// Sends `line` and a newline.
    pub fn say(&mut self, line: &str) {
        let stream = self.stream.get_mut();
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        stream.flush().unwrap();
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).unwrap();
        stream.flush().unwrap();
    }

    /// The next line, without its newline.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Reads exactly `n` bytes.
    pub fn read_exactly(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Ends the client's side cleanly (`close_notify`, then the socket's
    /// write side), so the server sees the end of the stream.
    pub fn finish_sending(&mut self) {
        let stream = self.stream.get_mut();
        stream.conn.send_close_notify();
        stream.flush().unwrap();
        stream.sock.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Reads to the end of the stream (the server's `close_notify`).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        self.try_read_to_end().unwrap()
    }

    /// The same; an error for an end without `close_notify`
    /// (`UnexpectedEof`).
    pub fn try_read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).map(|_| rest)
    }
}
