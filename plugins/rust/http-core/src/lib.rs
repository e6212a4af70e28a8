//! What both HTTP "Hello, World!" examples share — `http-hello` (one
//! instance per connection) and `proto-http-hello` (one instance for all):
//! parsing request heads ([`request`]), writing the responses
//! ([`response`]), and walking a buffer of pipelined requests
//! ([`answer_all`]). Pure logic, no plugin API.

pub mod request;
pub mod response;

use request::Parsed;

/// What [`answer_all`] found in a buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answered {
    /// Bytes of the buffer consumed (complete requests, skipped body).
    pub consumed: usize,
    /// Whether the connection must close after the responses.
    pub close: bool,
}

/// Answers every complete request in `buf` into `out`, in order, skipping
/// request bodies (`discard`: body bytes still to skip, carried between
/// calls); stops at an incomplete request, or after one that closes the
/// connection.
pub fn answer_all(buf: &[u8], discard: &mut u64, out: &mut Vec<u8>) -> Answered {
    let mut start = skip(buf, 0, discard);
    while *discard == 0 && start < buf.len() {
        match request::parse(&buf[start..]) {
            Parsed::Partial => break,
            Parsed::Reject(reject) => {
                response::reject(reject, out);
                return Answered {
                    consumed: start,
                    close: true,
                };
            }
            Parsed::Request(head) => {
                response::respond(&head, out);
                start += head.len;
                *discard = head.body_len;
                start = skip(buf, start, discard);
                if !head.keep_alive {
                    return Answered {
                        consumed: start,
                        close: true,
                    };
                }
            }
        }
    }
    Answered {
        consumed: start,
        close: false,
    }
}

/// Skips up to `discard` body bytes of `buf` from `start`; returns the new
/// start.
fn skip(buf: &[u8], start: usize, discard: &mut u64) -> usize {
    let n = (buf.len() - start).min(usize::try_from(*discard).unwrap_or(usize::MAX));
    *discard -= n as u64;
    start + n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_requests_are_answered_in_order_and_a_partial_one_waits() {
        let buf = b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\nGET / HT";
        let (mut discard, mut out) = (0, Vec::new());
        let answered = answer_all(buf, &mut discard, &mut out);
        assert_eq!(answered.consumed, 37);
        assert!(!answered.close);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("HTTP/1.1 404"), "{text}");
    }

    #[test]
    fn a_body_is_skipped_even_across_buffers() {
        let buf = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        let (mut discard, mut out) = (0, Vec::new());
        let answered = answer_all(buf, &mut discard, &mut out);
        assert_eq!(answered.consumed, buf.len());
        assert_eq!(discard, 7);
        out.clear();
        let next = b"defghijGET / HTTP/1.1\r\n\r\n";
        let answered = answer_all(next, &mut discard, &mut out);
        assert_eq!(answered.consumed, next.len());
        assert!(String::from_utf8(out).unwrap().contains("200 OK"));
    }

    #[test]
    fn garbage_is_rejected_and_closes() {
        let (mut discard, mut out) = (0, Vec::new());
        let answered = answer_all(b"ping\n", &mut discard, &mut out);
        assert!(answered.close);
        assert!(String::from_utf8(out).unwrap().starts_with("HTTP/1.1 400"));
    }
}
