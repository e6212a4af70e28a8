//! A real Redis for the store tests: `redis-server` (Debian's package,
//! which `scripts/setup.sh` installs) on a free loopback port, without
//! persistence, killed when dropped. [`Redis::start`] returns `None`,
//! saying so, where `redis-server` is not installed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{SOON, free_port};

/// A running `redis-server`.
pub struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    /// Starts one on a free port, or `None` (with a message) if
    /// `redis-server` is missing.
    pub fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: redis-server is not installed (scripts/setup.sh installs it)");
            return None;
        }
        Some(Self::on(free_port()))
    }

    /// Starts one on `port` and waits until it answers PING. A
    /// `redis-server` that exits first (it could not bind the port) fails
    /// the test at once with its own words, rather than after a timeout or,
    /// worse, after a PING that another server on the port answered.
    fn on(port: u16) -> Self {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut output = child.stdout.take().expect("redis-server's stdout");
        let said = thread::spawn(move || {
            let mut text = String::new();
            let _ = output.read_to_string(&mut text);
            text
        });
        let mut redis = Self { port, child };
        let deadline = Instant::now() + SOON;
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!(
                    "redis-server on {port} exited ({status}) before it answered:\n{}",
                    said.join().unwrap_or_default()
                );
            }
            if redis.answers() {
                return redis;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {port} within {SOON:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL hosts are given (`--store`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it answers PING now.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Kills it (SIGKILL: an outage, not a shutdown) and waits for the end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::on(self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
