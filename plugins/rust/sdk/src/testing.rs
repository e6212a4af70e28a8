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

use crate::conn::{Arrival, Message, Transport};
use crate::{Conn, Error, Handler};

/// A transport that replays prepared reads and records writes.
///
/// Each read returns the next chunk (cut to the requested size, the rest
/// stays for the next read); after the last chunk, reads return end of
/// stream. Topic messages queued with [`Script::then_message`] are
/// returned by `read_or_message` in their place in the script; a plain
/// read passes over them, as a handler that never asks for messages
/// never sees one. Writes after a write shutdown fail with
/// [`Error::Closed`].
#[derive(Debug, Default)]
pub struct Script {
    input: VecDeque<Input>,
    written: Vec<u8>,
    reads: usize,
    read_shut: bool,
    write_shut: bool,
    timeout_ms: Option<u64>,
}

/// One step of a script.
#[derive(Debug)]
enum Input {
    Chunk(Vec<u8>),
    Failure(Error),
    Message(Message),
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
                .map(|c| Input::Chunk(c.as_ref().to_vec()))
                .collect(),
            ..Script::default()
        }
    }

    /// Makes the next read (after the chunks queued so far) fail with `err`.
    pub fn then_error(mut self, err: Error) -> Self {
        self.input.push_back(Input::Failure(err));
        self
    }

    /// Queues one more chunk the client sends.
    pub fn then_chunk(mut self, chunk: &[u8]) -> Self {
        self.input.push_back(Input::Chunk(chunk.to_vec()));
        self
    }

    /// Queues a message on `topic`, arriving after what is queued so far.
    pub fn then_message(mut self, topic: &str, data: &[u8]) -> Self {
        self.input.push_back(Input::Message(Message {
            topic: topic.to_string(),
            data: data.to_vec(),
        }));
        self
    }

    /// The next step for a read of up to `max` bytes that takes messages
    /// (`with_messages`) or passes over them.
    fn next_input(&mut self, max: u32, with_messages: bool) -> Result<Arrival, Error> {
        assert!(max > 0, "the SDK never asks for zero bytes");
        self.reads += 1;
        if self.read_shut {
            return Ok(Arrival::Data(Vec::new()));
        }
        loop {
            return match self.input.pop_front() {
                None => Ok(Arrival::Data(Vec::new())),
                Some(Input::Failure(e)) => Err(e),
                Some(Input::Message(message)) if with_messages => Ok(Arrival::Message(message)),
                Some(Input::Message(_)) => continue,
                Some(Input::Chunk(mut chunk)) => {
                    let max = max as usize;
                    if chunk.len() > max {
                        let rest = chunk.split_off(max);
                        self.input.push_front(Input::Chunk(rest));
                    }
                    Ok(Arrival::Data(chunk))
                }
            };
        }
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
        match self.next_input(max, false)? {
            Arrival::Data(data) => Ok(data),
            Arrival::Message(_) => unreachable!("a plain read passes over messages"),
        }
    }

    fn read_or_message(&mut self, max: u32) -> Result<Arrival, Error> {
        self.next_input(max, true)
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
