//! The admin listener (`admin = "..."` or `--admin 127.0.0.1:0`): finding
//! its address in the log, and reading `/metrics` and `/status`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::{Host, SOON, connect};

/// `GET path` on `addr` with `Connection: close`; the whole response.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

/// The admin listener's address, from the host's `admin listening on`
/// line.
pub fn admin_addr(host: &Host) -> SocketAddr {
    host.expect_log("admin listening on", SOON);
    host.logs()
        .lines()
        .find_map(|l| {
            l.split("http://")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("admin address in the log")
}

/// `/status` as JSON.
pub fn status(admin: SocketAddr) -> serde_json::Value {
    let response = http_get(admin, "/status");
    let body = response.split("\r\n\r\n").nth(1).expect("a response body");
    serde_json::from_str(body).expect("status is JSON")
}

/// Waits (bounded) until `/metrics` contains `needle`; returns the metrics.
pub fn wait_for_metric(admin: SocketAddr, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = http_get(admin, "/metrics");
        if metrics.contains(needle) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "`{needle}` not in:\n{metrics}");
        thread::sleep(Duration::from_millis(50));
    }
}
