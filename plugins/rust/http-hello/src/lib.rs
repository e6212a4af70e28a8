//! The http-hello plugin: a tiny HTTP/1.1 server.
//!
//! * `GET /` and `HEAD /` → `200 OK`, `text/plain`, `Hello, World!`
//!   (`HEAD` without the body); other paths → `404`; other methods → `405`
//!   with `Allow: GET, HEAD`. The query string is ignored.
//! * Keep-alive and pipelining: every complete request in the buffer is
//!   answered, in order, and the answers to one read go out in one write.
//!   HTTP/1.1 connections stay open unless the request says
//!   `Connection: close`; HTTP/1.0 ones close after the response unless the
//!   request says `Connection: keep-alive` (then the response says so too).
//! * Request bodies (`Content-Length`) are read and discarded as they
//!   arrive, never buffered. `Transfer-Encoding` → `501` and close.
//! * Bytes that cannot be HTTP → `400` and close as soon as that is certain
//!   (a client sending `ping\n` gets its 400 at once); a head over 8 KiB or
//!   with more than 64 headers → `431` and close.
//! * Every response carries `Content-Length`. Before closing, the server
//!   shuts down its write side and briefly drains what the client still
//!   sends, so that the client reads the last response rather than a reset.

use std::net::Shutdown;
use std::time::Duration;

use plughost_sdk::{Conn, Error, Handler};

/// How much one read asks for.
const CHUNK: usize = 64 * 1024;

/// The server.
pub struct HttpHello;

impl Handler for HttpHello {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let mut buf: Vec<u8> = Vec::new();
        // Body bytes still to be skipped.
        let mut discard: u64 = 0;
        // Responses to one read, sent in one write; reused.
        let mut out = Vec::new();
        loop {
            out.clear();
            let answered = http_core::answer_all(&buf, &mut discard, &mut out);
            buf.drain(..answered.consumed);
            if !out.is_empty() {
                conn.write_all(&out)?;
            }
            if answered.close {
                linger(conn);
                return Ok(());
            }
            match conn.read(CHUNK) {
                Ok(data) if data.is_empty() => return Ok(()),
                Ok(data) => buf.extend_from_slice(&data),
                // the client went away: nothing left to answer
                Err(Error::Reset | Error::Closed | Error::BrokenPipe) => return Ok(()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

plughost_sdk::export!(HttpHello);

/// Closes gracefully: end our side, then read and drop what the client
/// still sends (bounded), so the kernel does not answer it with a reset
/// that could destroy the response in flight.
fn linger(conn: &mut Conn) {
    if conn.shutdown(Shutdown::Write).is_err() {
        return;
    }
    conn.set_timeout(Some(Duration::from_millis(250)));
    let mut budget: usize = 256 * 1024;
    for _ in 0..8 {
        match conn.read(CHUNK.min(budget)) {
            Ok(data) if !data.is_empty() && data.len() < budget => budget -= data.len(),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_sdk::testing::Script;

    fn serve(chunks: &[&[u8]]) -> (String, Script) {
        let mut client = Script::new(chunks.iter().copied());
        client.run::<HttpHello>().unwrap();
        (
            String::from_utf8_lossy(client.written()).into_owned(),
            client,
        )
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (out, client) = serve(&[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\nGE",
            b"T / HTTP/1.1\r\n\r\n",
        ]);
        let statuses: Vec<&str> = out
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|r| r.split("\r\n").next().unwrap())
            .collect();
        assert_eq!(statuses, ["200 OK", "404 Not Found", "200 OK", "200 OK"]);
        assert_eq!(count(&out, "Hello, World!"), 2);
        assert!(!client.write_shut()); // ended by the client's EOF
    }

    #[test]
    fn bodies_are_skipped_across_reads() {
        let (out, _) = serve(&[
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123",
            b"456",
            b"789GET / HTTP/1.1\r\n\r\n",
        ]);
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        assert_eq!(count(&out, "HTTP/1.1 200 OK"), 1, "{out}");
    }

    #[test]
    fn connection_close_is_honoured() {
        let (out, client) =
            serve(&[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(count(&out, "HTTP/1.1 200 OK"), 1);
        assert!(out.contains("Connection: close\r\n"));
        assert!(client.write_shut());
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (out, _) = serve(&[b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(count(&out, "200 OK"), 1);
        let (out, _) =
            serve(&[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(count(&out, "200 OK"), 2);
    }

    #[test]
    fn garbage_gets_400_immediately() {
        // Two reads are scripted; the second must never be needed for the 400.
        let mut client = Script::new([&b"ping\n"[..], b"more"]);
        client.run::<HttpHello>().unwrap();
        let out = String::from_utf8_lossy(client.written()).into_owned();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(client.write_shut());
        // first read got "ping\n"; the rest were lingering drains
        assert!(client.reads() >= 1);
    }

    #[test]
    fn huge_head_gets_431() {
        let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        head.extend(vec![b'a'; 10_000]);
        let (out, _) = serve(&[&head[..4000], &head[4000..]]);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[test]
    fn chunked_gets_501() {
        let (out, _) = serve(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ]);
        assert!(out.starts_with("HTTP/1.1 501 "), "{out}");
    }
}
