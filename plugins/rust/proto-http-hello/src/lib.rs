//! The http-hello plugin in the protocol world: the same HTTP/1.1 server
//! as `http-hello` (`GET /` → `Hello, World!`, 404, 405, keep-alive,
//! pipelining, 400/431/501 and close; see `http-core`), with one instance
//! serving every connection.
//!
//! Each connection keeps the bytes of an incomplete request and how much
//! of a request body is left to skip. The answers to one read go out in
//! one write; a client that pipelines faster than it reads is paused until
//! its answers have drained.

use std::collections::HashMap;

use plughost_protocol::{LostReason, Protocol, Transport};

/// One connection's parsing state.
#[derive(Default)]
struct Conn {
    /// The start of a request that has not fully arrived.
    partial: Vec<u8>,
    /// Request-body bytes still to skip.
    discard: u64,
}

/// The server.
#[derive(Default)]
pub struct HttpHello {
    conns: HashMap<Transport, Conn>,
    /// Responses to one read; reused.
    out: Vec<u8>,
}

impl Protocol for HttpHello {
    fn init() -> Result<Self, String> {
        Ok(Self::default())
    }

    fn connection_made(&mut self, t: Transport) {
        self.conns.insert(t, Conn::default());
    }

    fn data_received(&mut self, t: Transport, data: &[u8]) {
        let conn = self.conns.entry(t).or_default();
        self.out.clear();
        // Most reads hold whole requests: answer them in place.
        let answered = if conn.partial.is_empty() {
            let answered = http_core::answer_all(data, &mut conn.discard, &mut self.out);
            if !answered.close {
                conn.partial.extend_from_slice(&data[answered.consumed..]);
            }
            answered
        } else {
            conn.partial.extend_from_slice(data);
            let answered = http_core::answer_all(&conn.partial, &mut conn.discard, &mut self.out);
            conn.partial.drain(..answered.consumed);
            answered
        };
        if !self.out.is_empty() && t.write(&self.out).is_err() {
            t.abort("the client does not read its responses");
            return;
        }
        if answered.close {
            t.close();
        } else if t.buffered() > 0 {
            t.pause_reading();
        }
    }

    fn write_drained(&mut self, t: Transport) {
        t.resume_reading();
    }

    fn connection_lost(&mut self, t: Transport, _reason: LostReason) {
        self.conns.remove(&t);
    }
}

plughost_protocol::export!(HttpHello);

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_protocol::testing::{Ended, Harness};

    #[test]
    fn a_request_split_over_reads_is_answered_once_whole() {
        let mut server = Harness::<HttpHello>::start().unwrap();
        let t = server.connect();
        server.receive(t, b"GET / HTTP/1.1\r\nHo");
        assert!(server.take_output(t).is_empty());
        server.receive(t, b"st: x\r\n\r\nGET /nope HTTP/1.1\r\n\r\n");
        let text = String::from_utf8(server.take_output(t)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.ends_with("Not Found\n"), "{text}");
        assert_eq!(server.ended(t), None);
    }

    #[test]
    fn garbage_gets_a_400_and_the_connection_closes() {
        let mut server = Harness::<HttpHello>::start().unwrap();
        let t = server.connect();
        server.receive(t, b"ping\n");
        let text = String::from_utf8(server.take_output(t)).unwrap();
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert_eq!(server.ended(t), Some(Ended::Closed));
    }
}
