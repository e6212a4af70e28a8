//! The certificates of one TLS listener: loaded and checked from PEM
//! files, chosen per handshake by the name the client asks for (SNI), and
//! swapped as a whole on reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::CertFiles;

/// One certificate in force.
#[derive(Debug)]
struct Loaded {
    files: CertFiles,
    key: Arc<CertifiedKey>,
    /// The DNS names it is valid for (lower case; `*.` wildcards kept).
    names: Vec<String>,
    /// When it expires, for the log.
    not_after: String,
}

impl Loaded {
    /// Whether it serves `name` (lower case): an exact name, or a wildcard
    /// standing for one label.
    fn serves(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => name
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => pattern == name,
            })
    }
}

/// The certificate set of a listener, the default first.
#[derive(Debug)]
pub(super) struct Certificates {
    provider: Arc<CryptoProvider>,
    in_force: ArcSwap<Vec<Loaded>>,
}

impl Certificates {
    /// Loads and checks every pair.
    pub fn load(pairs: Vec<CertFiles>, provider: Arc<CryptoProvider>) -> Result<Self> {
        let loaded = load_all(pairs, &provider)?;
        Ok(Self {
            provider,
            in_force: ArcSwap::from_pointee(loaded),
        })
    }

    /// Loads the same files again; the new set replaces the old only if
    /// every file loads.
    pub fn reload(&self) -> Result<()> {
        let pairs = self
            .in_force
            .load()
            .iter()
            .map(|l| l.files.clone())
            .collect();
        let loaded = load_all(pairs, &self.provider)?;
        self.in_force.store(Arc::new(loaded));
        Ok(())
    }

    pub fn describe(&self) -> Vec<String> {
        self.in_force
            .load()
            .iter()
            .map(|l| {
                format!(
                    "certificate {} for {} (valid until {})",
                    l.files.cert.display(),
                    if l.names.is_empty() {
                        "no DNS name".to_string()
                    } else {
                        l.names.join(", ")
                    },
                    l.not_after
                )
            })
            .collect()
    }

    pub fn files(&self) -> Vec<PathBuf> {
        self.in_force
            .load()
            .iter()
            .flat_map(|l| [l.files.cert.clone(), l.files.key.clone()])
            .collect()
    }
}

impl ResolvesServerCert for Certificates {
    /// The certificate serving the name the client asked for, else the
    /// default.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let in_force = self.in_force.load();
        let wanted = hello.server_name().map(str::to_ascii_lowercase);
        let chosen = wanted
            .and_then(|name| in_force.iter().find(|l| l.serves(&name)))
            .or_else(|| in_force.first())?;
        Some(Arc::clone(&chosen.key))
    }
}

fn load_all(pairs: Vec<CertFiles>, provider: &CryptoProvider) -> Result<Vec<Loaded>> {
    pairs
        .into_iter()
        .map(|files| load_one(files, provider))
        .collect()
}

/// Reads and checks one certificate and its key.
fn load_one(files: CertFiles, provider: &CryptoProvider) -> Result<Loaded> {
    let cert_path = &files.cert;
    let pem = read(cert_path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            anyhow!(
                "{} is not a PEM certificate file: {err}",
                cert_path.display()
            )
        })?;
    let Some(leaf) = chain.first() else {
        bail!(
            "{} holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)",
            cert_path.display()
        );
    };
    let (names, not_after) = check_leaf(leaf, cert_path)?;
    let key_pem = read(&files.key, "private key")?;
    if key_pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        bail!(
            "the private key in {} is encrypted; give the host a decrypted copy \
             (openssl pkey -in KEY -out KEY.plain), readable only by its user",
            files.key.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| {
        anyhow!(
            "{} holds no private key (expected PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\"): {err}",
            files.key.display()
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "the private key in {} does not belong to the certificate in {}",
            files.key.display(),
            cert_path.display()
        ),
        other => anyhow!("cannot use the key in {}: {other}", files.key.display()),
    })?;
    Ok(Loaded {
        files,
        key: Arc::new(key),
        names,
        not_after,
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
}

/// The leaf certificate's DNS names and expiry; an error if it is not
/// valid now.
fn check_leaf(leaf: &CertificateDer<'_>, path: &Path) -> Result<(Vec<String>, String)> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|err| {
        anyhow!(
            "{}: the certificate cannot be parsed: {err}",
            path.display()
        )
    })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        bail!(
            "the certificate in {} expired on {}",
            path.display(),
            validity.not_after
        );
    }
    if now < validity.not_before {
        bail!(
            "the certificate in {} is not valid before {}",
            path.display(),
            validity.not_before
        );
    }
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        // Old certificates name their host in the subject's common name.
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((names, validity.not_after.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(names: &[&str]) -> Loaded {
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let key =
            PrivateKeyDer::from_pem_slice(cert.signing_key.serialize_pem().as_bytes()).unwrap();
        let key = CertifiedKey::from_der(vec![cert.cert.der().clone()], key, &provider).unwrap();
        Loaded {
            files: CertFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
            },
            key: Arc::new(key),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: String::new(),
        }
    }

    #[test]
    fn a_name_is_served_exactly_or_by_a_one_label_wildcard() {
        let l = loaded(&["example.com", "*.example.org"]);
        assert!(l.serves("example.com"));
        assert!(!l.serves("www.example.com"));
        assert!(l.serves("www.example.org"));
        assert!(!l.serves("example.org"), "a wildcard needs a label");
        assert!(!l.serves("a.b.example.org"), "one label only");
        assert!(!l.serves(".example.org"));
    }
}
