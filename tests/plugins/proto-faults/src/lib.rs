//! Test plugin (protocol world): a line-command server with every fault a
//! shared instance can have, for the host's tests.
//!
//! On connect a client gets `hello N\n`, N counting the connections this
//! instance has seen (so a fresh instance starts again at 1). Commands,
//! one per line:
//!
//! - `spin` computes forever (the CPU deadline must cut it);
//! - `trap` panics;
//! - `hog` allocates until the memory cap stops it;
//! - `later MS` sets a timer; when it fires, the client gets `fired\n`;
//! - `count` answers `count N\n`, the connections the instance serves now;
//! - `peer` answers `peer ADDRESS\n`, the client's address as the host
//!   gives it;
//! - `kick N` writes `kicked\n` to the client greeted `hello N` and closes
//!   it; when it is gone, every other client gets `gone N\n` (written from
//!   `connection-lost`, a callback about no open connection; only for a
//!   kicked client);
//! - `tls` answers `tls VERSION SUITE NAME ALPN\n` (`tls none` without
//!   TLS), what the handshake negotiated;
//! - anything else comes back as `echo LINE\n`.
//!
//! With `fail_init = "yes"` in `[listener.config]`, `init` fails.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use plughost_protocol::{LostReason, Protocol, Timer, Transport, call_later, config};

/// The instance's state.
#[derive(Default)]
pub struct Faults {
    seen: u64,
    open: BTreeSet<Transport>,
    /// The N of each open client's `hello N`.
    numbers: HashMap<Transport, u64>,
    /// Clients kicked and not gone yet.
    kicked: BTreeSet<Transport>,
    partial: HashMap<Transport, Vec<u8>>,
    timers: HashMap<Timer, Transport>,
    hoard: Vec<Vec<u8>>,
}

impl Faults {
    fn command(&mut self, t: Transport, line: &str) {
        match line.split_once(' ').unwrap_or((line, "")) {
            ("spin", _) => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            ("trap", _) => panic!("asked to trap"),
            ("hog", _) => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            ("later", ms) => match ms.trim().parse::<u64>() {
                Ok(ms) => match call_later(Duration::from_millis(ms)) {
                    Ok(timer) => {
                        self.timers.insert(timer, t);
                    }
                    Err(err) => {
                        let _ = t.write(format!("error {err}\n").as_bytes());
                    }
                },
                Err(_) => {
                    let _ = t.write(b"error: later takes milliseconds\n");
                }
            },
            ("peer", _) => {
                let peer = t.peer_addr().map_or("none".to_string(), |a| a.to_string());
                let _ = t.write(format!("peer {peer}\n").as_bytes());
            }
            ("tls", _) => {
                let tls = t.tls().map_or("none".to_string(), |s| {
                    let name = s.server_name.unwrap_or_else(|| "-".into());
                    let alpn = s.alpn.unwrap_or_else(|| "-".into());
                    format!("{} {} {name} {alpn}", s.version, s.cipher_suite)
                });
                let _ = t.write(format!("tls {tls}\n").as_bytes());
            }
            ("kick", n) => {
                let target = self
                    .numbers
                    .iter()
                    .find(|(_, number)| n.trim().parse() == Ok(**number))
                    .map(|(target, _)| *target);
                match target {
                    Some(target) => {
                        let _ = target.write(b"kicked\n");
                        target.close();
                        self.kicked.insert(target);
                    }
                    None => {
                        let _ = t.write(b"error: no such client\n");
                    }
                }
            }
            ("count", _) => {
                let _ = t.write(format!("count {}\n", self.open.len()).as_bytes());
            }
            _ => {
                let _ = t.write(format!("echo {line}\n").as_bytes());
            }
        }
    }
}

impl Protocol for Faults {
    fn init() -> Result<Self, String> {
        if config::get("fail_init").as_deref() == Some("yes") {
            return Err("fail_init is set".into());
        }
        Ok(Self::default())
    }

    fn connection_made(&mut self, t: Transport) {
        self.seen += 1;
        self.open.insert(t);
        self.numbers.insert(t, self.seen);
        let _ = t.write(format!("hello {}\n", self.seen).as_bytes());
    }

    fn data_received(&mut self, t: Transport, data: &[u8]) {
        let mut pending = self.partial.remove(&t).unwrap_or_default();
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).trim().to_string();
            self.command(t, &line);
        }
        self.partial.insert(t, pending);
    }

    fn connection_lost(&mut self, t: Transport, _reason: LostReason) {
        self.open.remove(&t);
        self.partial.remove(&t);
        let number = self.numbers.remove(&t);
        if let (Some(number), true) = (number, self.kicked.remove(&t)) {
            for other in &self.open {
                let _ = other.write(format!("gone {number}\n").as_bytes());
            }
        }
    }

    fn timer_fired(&mut self, timer: Timer) {
        if let Some(t) = self.timers.remove(&timer) {
            let _ = t.write(b"fired\n");
        }
    }
}

plughost_protocol::export!(Faults);
