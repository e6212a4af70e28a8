//! TLS termination for a stream listener (`--tls-cert`/`--tls-key`, or
//! `[listener.tls]` in the configuration file): what the operator asks for
//! ([`TlsSpec`]), and the [`Terminator`] that starts a rustls session for
//! each accepted connection with the certificates in force.
//!
//! The handshake runs before the plugin sees the connection
//! (`server/preamble.rs`); the bytes of a served connection go through
//! `connection/tls.rs`. Certificates are chosen by the name the client
//! asks for (SNI) and reloaded on SIGHUP or under `--watch`
//! ([`Terminator::reload`]): new handshakes get the new ones, a broken
//! file keeps the old ones, open connections never notice.

mod certs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::ServerConnection;
use serde::Deserialize;

use self::certs::Certificates;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The certificate, then the chain up to (not including) the root.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What a listener's TLS serves: certificates (the first is the default,
/// the others are chosen when the client asks for one of their names) and
/// the application protocols offered (ALPN), in order of preference.
///
/// In the configuration file:
/// ```toml
/// [listener.tls]
/// cert = "site.pem"                  # the default certificate
/// key = "site.key"
/// alpn = ["http/1.1"]                # optional
/// handshake_timeout = "10s"          # optional
/// [[listener.tls.certificates]]     # optional: more, chosen by SNI
/// cert = "other.pem"
/// key = "other.key"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// The default certificate.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
    /// More certificates.
    #[serde(default)]
    pub certificates: Vec<CertFiles>,
    /// Application protocols (ALPN), most preferred first; empty: none
    /// negotiated, every client accepted.
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Longest a handshake may take (`None`: [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    #[serde(default, deserialize_with = "crate::config::duration")]
    pub handshake_timeout: Option<Duration>,
}

/// How long a client may take to finish its TLS handshake, unless the
/// listener says otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest handshake timeout a listener may set.
const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3600);

impl TlsSpec {
    /// The spec of `--tls-cert` and `--tls-key` (given the same number of
    /// times: the n-th key belongs to the n-th certificate) and
    /// `--tls-alpn` and `--tls-handshake-timeout`; `None` when no
    /// certificate is given.
    pub fn from_flags(
        certs: &[PathBuf],
        keys: &[PathBuf],
        alpn: &[String],
        handshake_timeout: Option<Duration>,
    ) -> Result<Option<Self>> {
        if certs.len() != keys.len() {
            bail!(
                "--tls-cert is given {} time(s) and --tls-key {}: give one key for each certificate",
                certs.len(),
                keys.len()
            );
        }
        if certs.is_empty() {
            if !alpn.is_empty() {
                bail!("--tls-alpn needs a certificate (--tls-cert and --tls-key)");
            }
            return Ok(None);
        }
        Ok(Some(Self {
            cert: None,
            key: None,
            certificates: certs
                .iter()
                .zip(keys)
                .map(|(cert, key)| CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .collect(),
            alpn: alpn.to_vec(),
            handshake_timeout,
        }))
    }

    /// Every certificate with its key, the default first.
    pub fn pairs(&self) -> Result<Vec<CertFiles>> {
        let mut pairs = Vec::new();
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => pairs.push(CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => {}
            (Some(_), None) => bail!("tls: `cert` is given without its `key`"),
            (None, Some(_)) => bail!("tls: `key` is given without its `cert`"),
        }
        pairs.extend(self.certificates.iter().cloned());
        if pairs.is_empty() {
            bail!("tls: no certificate (give `cert` and `key`, or --tls-cert and --tls-key)");
        }
        Ok(pairs)
    }

    /// Makes relative paths relative to `base` (the configuration file's
    /// directory).
    pub fn relative_to(mut self, base: &Path) -> Self {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        self.cert.as_mut().map(resolve);
        self.key.as_mut().map(resolve);
        for pair in &mut self.certificates {
            resolve(&mut pair.cert);
            resolve(&mut pair.key);
        }
        self
    }
}

/// The cryptography (ring), with the cipher suites in the order the host
/// prefers: AES-128-GCM, then ChaCha20-Poly1305, then AES-256-GCM. rustls
/// lists AES-256 first, and so do OpenSSL clients; AES-128-GCM is as
/// secure for TLS's purposes, its key schedule hashes with SHA-256 (in
/// hardware on current x86 CPUs, where SHA-384 is not), and its bulk
/// encryption is faster. Browsers ask for it first anyway.
fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |suite: &rustls::SupportedCipherSuite| {
        let name = suite.suite().as_str().unwrap_or_default();
        if name.contains("AES_128_GCM") {
            0
        } else if name.contains("CHACHA20") {
            1
        } else {
            2
        }
    };
    provider.cipher_suites.sort_by_key(rank);
    provider
}

/// Starts TLS sessions for a listener with the certificates in force.
pub struct Terminator {
    config: Arc<rustls::ServerConfig>,
    certificates: Arc<Certificates>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator").finish_non_exhaustive()
    }
}

impl Terminator {
    /// Loads every certificate of `spec`; an error names the file and what
    /// is wrong with it (missing, unreadable, no certificate or key in it,
    /// a key that does not match, expired or not valid yet).
    pub fn new(spec: &TlsSpec) -> Result<Self> {
        let provider = Arc::new(provider());
        let certificates = Arc::new(Certificates::load(spec.pairs()?, Arc::clone(&provider))?);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificates) as _);
        config.alpn_protocols = spec.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // The server's order of cipher suites, not the client's (see
        // `provider`).
        config.ignore_client_order = true;
        let handshake_timeout = spec.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
        if handshake_timeout.is_zero() || handshake_timeout > MAX_HANDSHAKE_TIMEOUT {
            bail!("tls: the handshake timeout must be more than 0 and at most 1h");
        }
        Ok(Self {
            config: Arc::new(config),
            certificates,
            handshake_timeout,
        })
    }

    /// Longest a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// A session for one accepted connection.
    pub fn session(&self) -> Result<ServerConnection> {
        ServerConnection::new(Arc::clone(&self.config)).context("cannot start a TLS session")
    }

    /// Reads every certificate file again and puts the new set in force
    /// for new handshakes; on any error the old set stays (and the error
    /// says which file is wrong).
    pub fn reload(&self) -> Result<()> {
        self.certificates.reload()
    }

    /// One line per certificate in force: its file, names and expiry.
    pub fn describe(&self) -> Vec<String> {
        self.certificates.describe()
    }

    /// The certificate and key files, to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        self.certificates.files()
    }
}
