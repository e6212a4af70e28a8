//! HTTP load with wrk, and an nginx to compare with, started from a
//! generated configuration in a scratch directory and stopped afterwards.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::targets::{Placement, output_within};

/// wrk's connections; one wrk thread (the load generators get one CPU).
pub const WRK_CONNECTIONS: usize = 50;

/// What one wrk run measured.
pub struct WrkResult {
    /// Requests per second answered with a 2xx status.
    pub ok_rate: f64,
    /// Responses wrk counted as "Non-2xx or 3xx" (status 400 and up).
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout) added up.
    pub socket_errors: u64,
}

/// Runs `wrk -t1 -c50 -d<duration>` against `http://addr/`.
pub fn wrk(addr: SocketAddr, duration: Duration, placement: &Placement) -> Result<WrkResult> {
    wrk_url(&format!("http://{addr}/"), &[], duration, placement)
}

/// Runs `wrk -t1 -c50 -d<duration> <extra> url` (an `https://` URL makes
/// wrk speak TLS, without checking the certificate).
pub fn wrk_url(
    url: &str,
    extra: &[&str],
    duration: Duration,
    placement: &Placement,
) -> Result<WrkResult> {
    let mut command = Command::new("wrk");
    command
        .args(["-t1", &format!("-c{WRK_CONNECTIONS}"), "--timeout", "5s"])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(extra)
        .arg(url);
    placement.client(&mut command);
    let text =
        output_within(&mut command, duration + Duration::from_secs(30)).context("run wrk")?;
    parse_wrk(&text).with_context(|| format!("wrk output:\n{text}"))
}

/// Reads wrk's summary: `N requests in Ts`, `Requests/sec: R`, and the
/// optional `Socket errors:` and `Non-2xx or 3xx responses:` lines.
fn parse_wrk(text: &str) -> Result<WrkResult> {
    let after = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let Some(rate) = after("Requests/sec:").and_then(|v| v.parse::<f64>().ok()) else {
        bail!("no Requests/sec line");
    };
    let requests = text
        .lines()
        .find_map(|line| line.split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        .context("no `N requests in` line")?;
    let non_2xx = after("Non-2xx or 3xx responses:")
        .map(|v| v.parse::<u64>().context("Non-2xx count"))
        .transpose()?
        .unwrap_or(0);
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket_errors = after("Socket errors:").map_or(0, |v| {
        v.split(',')
            .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    });
    // Requests/sec is all requests over the run time; keep the 2xx share.
    let ok_rate = if requests == 0 {
        0.0
    } else {
        rate * requests.saturating_sub(non_2xx) as f64 / requests as f64
    };
    Ok(WrkResult {
        ok_rate,
        non_2xx,
        socket_errors,
    })
}

/// An nginx (master and 2 workers) answering `GET /` with `Hello, World!`,
/// in a scratch directory; stopped and cleaned up when dropped.
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts `nginx` from `PATH`, serving plaintext.
    pub fn start(placement: &Placement) -> Result<Nginx> {
        Self::start_with(placement, None)
    }

    /// Starts `nginx` from `PATH`, terminating TLS with `tls` (certificate
    /// and key files) if given.
    pub fn start_with(placement: &Placement, tls: Option<(&Path, &Path)>) -> Result<Nginx> {
        let dir = std::env::temp_dir().join(format!(
            "loopback-bench-nginx-{}-{}",
            std::process::id(),
            tls.is_some()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("pick a free port")?
            .port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, port, tls))
            .with_context(|| format!("write {}", conf.display()))?;
        let mut command = Command::new("nginx");
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("err.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that workers left behind by a
            // master that did not stop cleanly can be found and killed.
            .process_group(0);
        placement.server(&mut command);
        let child = command.spawn().context("start nginx")?;
        let mut nginx = Nginx {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&nginx.addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                bail!("nginx exited ({status}): {}", nginx.error_log());
            }
            if Instant::now() > deadline {
                bail!("nginx is not listening after 10 s: {}", nginx.error_log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("err.log"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SIGTERM: the master stops its workers and exits.
        // SAFETY: kill(2) on the pid of our own child, which is not reaped
        // yet, so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Any worker still alive is in the group the master led.
        // SAFETY: kill(2) on the process group we created for nginx.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The nginx configuration: everything nginx writes stays in `dir`.
fn config(dir: &Path, port: u16, tls: Option<(&Path, &Path)>) -> String {
    let d = dir.display();
    let (ssl, certificate) = match tls {
        Some((cert, key)) => (
            " ssl",
            format!(
                // The host's order of TLS 1.3 suites (AES-128-GCM first),
                // so both negotiate the same one with wrk.
                "ssl_certificate {};\n        ssl_certificate_key {};\n        \
                 ssl_prefer_server_ciphers on;\n        \
                 ssl_conf_command Ciphersuites \
                 TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384;",
                cert.display(),
                key.display()
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        "daemon off;
master_process on;
worker_processes 2;
error_log {d}/err.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {certificate}
        location = / {{ return 200 \"Hello, World!\"; }}
    }}
}}
"
    )
}
