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

    /// Property tests: any bytes get answers (each a whole HTTP/1.1
    /// response) and never more consumed than given; and pipelined
    /// requests give the same responses however the bytes are split
    /// across reads.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// Serves `chunks` as a plugin does: appends each to what is
        /// pending, answers, drops what was consumed; stops at a close.
        fn serve(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
            let (mut pending, mut out, mut discard) = (Vec::new(), Vec::new(), 0);
            for chunk in chunks {
                pending.extend_from_slice(chunk);
                let answered = answer_all(&pending, &mut discard, &mut out);
                assert!(answered.consumed <= pending.len());
                pending.drain(..answered.consumed);
                if answered.close {
                    return (out, true);
                }
            }
            (out, false)
        }

        fn request() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::sample::select(vec!["GET", "HEAD", "POST", "PUT"]),
                "/[a-zA-Z0-9._~/-]{0,30}(\\?[a-z=&]{0,10})?",
                vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..5),
                0usize..20,
            )
                .prop_map(|(method, path, headers, body)| {
                    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
                    for (name, value) in headers {
                        // Headers that change framing are chosen below.
                        let lower = name.to_ascii_lowercase();
                        if !["content-length", "transfer-encoding", "connection"]
                            .contains(&lower.as_str())
                        {
                            text.push_str(&format!("{name}: {value}\r\n"));
                        }
                    }
                    if body > 0 {
                        text.push_str(&format!("Content-Length: {body}\r\n"));
                    }
                    text.push_str("\r\n");
                    let mut bytes = text.into_bytes();
                    bytes.extend(std::iter::repeat_n(b'b', body));
                    bytes
                })
        }

        proptest! {
            #[test]
            fn any_bytes_get_whole_answers(buf in vec(any::<u8>(), 0..2048)) {
                let (mut out, mut discard) = (Vec::new(), 0);
                let answered = answer_all(&buf, &mut discard, &mut out);
                prop_assert!(answered.consumed <= buf.len());
                if !out.is_empty() {
                    prop_assert!(out.starts_with(b"HTTP/1.1 "));
                }
                if let request::Parsed::Request(head) = request::parse(&buf) {
                    prop_assert!(head.len <= buf.len());
                }
            }

            #[test]
            fn pipelined_requests_split_anywhere_get_the_same_answers(
                requests in vec(request(), 1..6),
                cuts in vec(any::<prop::sample::Index>(), 0..8),
            ) {
                let whole: Vec<u8> = requests.concat();
                let (expected, closed) = serve(&[&whole]);
                prop_assert!(!closed);
                prop_assert_eq!(expected.windows(9).filter(|w| w == b"HTTP/1.1 ").count(), requests.len());
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(whole.len() + 1)).collect();
                at.sort_unstable();
                let mut chunks = Vec::new();
                let mut start = 0;
                for cut in at {
                    chunks.push(&whole[start..cut]);
                    start = cut;
                }
                chunks.push(&whole[start..]);
                prop_assert_eq!(serve(&chunks), (expected, false));
            }
        }
    }
}
