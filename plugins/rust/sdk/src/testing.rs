//! A scripted [`Transport`] for unit-testing handlers natively (no host, no
//! wasm): feed it the chunks a client would send, run your handler on a
//! [`Conn`] over it, and inspect what was written.
//!
//! ```
//! use plughost_sdk::testing::Script;
//! use plughost_sdk::{Conn, Handler};
//!
//! struct Upper;
//! impl Handler for Upper {
//!     fn handle(conn: &mut Conn) -> Result<(), String> {
//!         loop {
//!             let data = conn.read(1024)?;
//!             if data.is_empty() {
//!                 return Ok(());
//!             }
//!             conn.write_all(&data.to_ascii_uppercase())?;
//!         }
//!     }
//! }
//!
//! let mut script = Script::new([&b"ab"[..], b"c"]);
//! script.run::<Upper>().unwrap();
//! assert_eq!(script.written(), b"ABC");
//! ```

use std::collections::VecDeque;
use std::net::{Shutdown, SocketAddr};

use crate::conn::Transport;
use crate::{Conn, Error, Handler};

/// A transport that replays prepared reads and records writes.
///
/// Each read returns the next chunk (cut to the requested size, the rest
/// stays for the next read); after the last chunk, reads return end of
/// stream. Writes after a write shutdown fail with [`Error::Closed`].
#[derive(Debug, Default)]
pub struct Script {
    input: VecDeque<Result<Vec<u8>, Error>>,
    written: Vec<u8>,
    reads: usize,
    read_shut: bool,
    write_shut: bool,
    timeout_ms: Option<u64>,
}

impl Script {
    /// A script whose reads return `chunks`, in order, then end of stream.
    pub fn new<I>(chunks: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        Script {
            input: chunks
                .into_iter()
                .map(|c| Ok(c.as_ref().to_vec()))
                .collect(),
            ..Script::default()
        }
    }

    /// Makes the next read (after the chunks queued so far) fail with `err`.
    pub fn then_error(mut self, err: Error) -> Self {
        self.input.push_back(Err(err));
        self
    }

    /// Runs `setup`, `handle` and `finish` as the host does: `finish` runs
    /// after `handle` whatever its result; a failing `setup` skips both.
    /// Returns the first error.
    pub fn run<H: Handler>(&mut self) -> Result<(), String> {
        let mut conn = Conn::new(self);
        H::setup(&mut conn)?;
        let result = H::handle(&mut conn);
        H::finish(&mut conn);
        result
    }

    /// Everything written so far.
    pub fn written(&self) -> &[u8] {
        &self.written
    }

    /// How many reads reached the transport.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// Whether the handler shut down its write side.
    pub fn write_shut(&self) -> bool {
        self.write_shut
    }
}

impl Transport for Script {
    fn read(&mut self, max: u32) -> Result<Vec<u8>, Error> {
        assert!(max > 0, "the SDK never asks for zero bytes");
        self.reads += 1;
        if self.read_shut {
            return Ok(Vec::new());
        }
        match self.input.pop_front() {
            None => Ok(Vec::new()),
            Some(Err(e)) => Err(e),
            Some(Ok(mut chunk)) => {
                let max = max as usize;
                if chunk.len() > max {
                    let rest = chunk.split_off(max);
                    self.input.push_front(Ok(rest));
                }
                Ok(chunk)
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.write_shut {
            return Err(Error::Closed);
        }
        self.written.extend_from_slice(data);
        Ok(())
    }

    fn shutdown(&mut self, how: Shutdown) -> Result<(), Error> {
        match how {
            Shutdown::Read => self.read_shut = true,
            Shutdown::Write => self.write_shut = true,
            Shutdown::Both => {
                self.read_shut = true;
                self.write_shut = true;
            }
        }
        Ok(())
    }

    fn peer_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8000))
    }

    fn set_timeout_ms(&mut self, ms: Option<u64>) {
        self.timeout_ms = ms;
    }

    fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
    }
}
