//! The `tls` workload: the host terminating TLS (`--tls-cert`) against
//! nginx terminating it with the same certificate, in the same run —
//! HTTPS hello keep-alive and a new TLS connection per request (wrk) —
//! and TLS against plaintext through the host's echo (a rustls client
//! writing 256 KiB and reading it back, the same client for both).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::Settings;
use crate::http::{Nginx, WRK_CONNECTIONS, wrk_url};
use crate::report::Table;
use crate::targets::which;
use crate::workloads::{NGINX_ROW, SPREAD, Target, addresses, measure_all, start_host};

/// The block the echo client writes and then reads back.
const BLOCK: usize = 256 * 1024;

/// A certificate for `localhost` (ECDSA P-256, as rcgen makes by default)
/// in a scratch directory, and a client configuration trusting it.
struct TestCertificate {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Arc<ClientConfig>,
}

impl TestCertificate {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("loopback-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(cert.der().to_vec()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            dir,
            cert: cert_path,
            key: key_path,
            client: Arc::new(client),
        })
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn tls(settings: &Settings) {
    let certificate = match TestCertificate::new() {
        Ok(certificate) => certificate,
        Err(err) => {
            println!("TLS: skipped, no test certificate: {err:#}\n");
            return;
        }
    };
    if which("wrk").is_some() {
        https(settings, &certificate);
    } else {
        println!("HTTPS: skipped, wrk is not installed (apt-get install -y wrk)\n");
    }
    echo_blocks(settings, &certificate);
}

/// HTTPS hello: keep-alive, then a new connection (a full handshake) per
/// request; the host's two worlds and nginx.
fn https(settings: &Settings, certificate: &TestCertificate) {
    let flags = certificate.flags();
    let with_tls = |plugin: &str| {
        let mut args = vec!["--plugin".to_string(), plugin.to_string()];
        args.extend(flags.iter().cloned());
        args
    };
    let (http_hello, proto) = (with_tls("http-hello"), with_tls("proto-http-hello"));
    eprintln!("tls: starting servers");
    let targets: Vec<Target> = vec![
        start_host(
            "host, wasm http-hello (default: event loops)",
            &as_strs(&http_hello),
            settings,
        ),
        start_host(
            "host, wasm proto-http-hello (protocol world)",
            &as_strs(&proto),
            settings,
        ),
    ];
    let nginx_name = NGINX_ROW;
    let mut servers = addresses(&targets);
    let nginx = which("nginx").map(|_| {
        let nginx = Nginx::start_with(
            &settings.placement,
            Some((&certificate.cert, &certificate.key)),
        );
        let addr = nginx.as_ref().map(|n| n.addr);
        servers.push((
            nginx_name.to_string(),
            addr.map_err(|e| anyhow::anyhow!("{e:#}")),
        ));
        nginx
    });
    for (title, extra) in [
        (
            format!("HTTPS hello, keep-alive, wrk -t1 -c{WRK_CONNECTIONS}; only 2xx answers count"),
            &[][..],
        ),
        (
            format!(
                "HTTPS hello, a new TLS connection per request (Connection: close), wrk -t1 -c{WRK_CONNECTIONS}"
            ),
            &["-H", "Connection: close"][..],
        ),
    ] {
        let mut table = Table::new(
            &title,
            "2xx requests/s, higher is better",
            &["sock errs", SPREAD],
        );
        let mut nginx_rate = None;
        measure_all(
            &mut table,
            &servers,
            settings.rounds,
            |addr| {
                let url = format!("https://localhost:{}/", addr.port());
                wrk_url(&url, extra, settings.duration, &settings.placement)
            },
            |result| result.ok_rate,
            |table, name, r, spread| {
                if name == nginx_name {
                    nginx_rate = Some(r.ok_rate);
                }
                table.row(name, r.ok_rate, vec![r.socket_errors.to_string(), spread]);
            },
        );
        if let Some(rate) = nginx_rate {
            table.baseline("nginx", rate);
        } else {
            table.note("nginx: not installed (apt-get install -y nginx); no nginx column");
        }
        table.note(
            "the same ECDSA P-256 certificate for every server; wrk does not resume sessions",
        );
        table.print();
    }
    drop(nginx);
    drop(targets);
}

/// The echo, plaintext and over TLS: one connection writing a 256 KiB
/// block and reading it back, for `duration`.
fn echo_blocks(settings: &Settings, certificate: &TestCertificate) {
    let tls_args: Vec<String> = ["--plugin".to_string(), "echo".to_string()]
        .into_iter()
        .chain(certificate.flags())
        .collect();
    let tls_args = as_strs(&tls_args);
    let plain_name = "host, wasm echo, plaintext";
    let targets: Vec<Target> = vec![
        start_host(plain_name, &["--plugin", "echo"], settings),
        start_host("host, wasm echo, TLS", &tls_args, settings),
    ];
    let servers: Vec<(String, Result<(SocketAddr, bool)>)> = targets
        .iter()
        .map(|(name, server)| {
            let addr = server.as_ref().map(|s| (s.addr, name != plain_name));
            (name.clone(), addr.map_err(|e| anyhow::anyhow!("{e:#}")))
        })
        .collect();
    let mut table = Table::new(
        "Echo of 256 KiB blocks (write one, read it back), one connection",
        "MB/s, higher is better",
        &[SPREAD],
    );
    let mut plain_rate = None;
    measure_all(
        &mut table,
        &servers,
        settings.rounds,
        |&(addr, tls)| block_echo(addr, tls.then_some(&certificate.client), settings.duration),
        |rate| *rate,
        |table, name, rate, spread| {
            if name == plain_name {
                plain_rate = Some(rate);
            }
            table.row(name, rate, vec![spread]);
        },
    );
    if let Some(rate) = plain_rate {
        table.baseline("plaintext", rate);
    }
    table.note("the client is rustls (TLS) or the bare socket, in the same loop");
    table.print();
    drop(targets);
}

/// The arguments as `&str`s.
fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// MB/s (10^6 bytes) echoed in `duration`: over TLS with `tls`, else
/// plaintext.
fn block_echo(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    duration: Duration,
) -> Result<f64> {
    let tcp = TcpStream::connect(addr).context("connect")?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    match tls {
        Some(config) => {
            let name = ServerName::try_from("localhost")?;
            let session = ClientConnection::new(Arc::clone(config), name)?;
            echo_for(&mut StreamOwned::new(session, tcp), duration)
        }
        None => echo_for(&mut { tcp }, duration),
    }
}

fn echo_for(stream: &mut (impl Read + Write), duration: Duration) -> Result<f64> {
    let block = vec![7u8; BLOCK];
    let mut back = vec![0u8; BLOCK];
    let start = Instant::now();
    let mut echoed = 0usize;
    while start.elapsed() < duration {
        stream.write_all(&block).context("write a block")?;
        stream.read_exact(&mut back).context("read the echo")?;
        echoed += BLOCK;
    }
    Ok(echoed as f64 / start.elapsed().as_secs_f64() / 1e6)
}
