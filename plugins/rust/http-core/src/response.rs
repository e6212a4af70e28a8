//! Building responses (pure logic, no I/O).

use crate::request::{Head, Method, Reject};

/// The body of `GET /`.
pub const HELLO: &[u8] = b"Hello, World!";

/// Appends the response to `head` to `out`.
pub fn respond(head: &Head, out: &mut Vec<u8>) {
    let (status, extra, body): (&str, &str, &[u8]) = match head.method {
        Method::Other => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            b"Method Not Allowed\n",
        ),
        _ if head.path == "/" => ("200 OK", "", HELLO),
        _ => ("404 Not Found", "", b"Not Found\n"),
    };
    let connection = match (head.keep_alive, head.minor) {
        (false, _) => "Connection: close\r\n",
        (true, 0) => "Connection: keep-alive\r\n",
        (true, _) => "",
    };
    let send_body = head.method != Method::Head;
    write(out, status, &[extra, connection], body, send_body);
}

/// Appends the error response for `reject` (always `Connection: close`).
pub fn reject(reject: Reject, out: &mut Vec<u8>) {
    let (status, body): (&str, &[u8]) = match reject {
        Reject::BadRequest => ("400 Bad Request", b"Bad Request\n"),
        Reject::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            b"Request Header Fields Too Large\n",
        ),
        Reject::NotImplemented => ("501 Not Implemented", b"Transfer-Encoding not supported\n"),
    };
    write(out, status, &["Connection: close\r\n"], body, true);
}

fn write(out: &mut Vec<u8>, status: &str, headers: &[&str], body: &[u8], send_body: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nServer: plughost-http-hello\r\nContent-Type: text/plain\r\n");
    for h in headers {
        out.extend_from_slice(h.as_bytes());
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len());
    out.extend_from_slice(b"\r\n\r\n");
    if send_body {
        out.extend_from_slice(body);
    }
}

/// Appends `n` in decimal (no `format!`: this runs for every response).
fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Parsed, parse};

    fn answer(req: &[u8]) -> String {
        let mut out = Vec::new();
        match parse(req) {
            Parsed::Request(h) => respond(&h, &mut out),
            Parsed::Reject(r) => reject(r, &mut out),
            Parsed::Partial => panic!("partial"),
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 13, 100, 65_535, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn hello() {
        assert_eq!(
            answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nServer: plughost-http-hello\r\nContent-Type: text/plain\r\n\
             Content-Length: 13\r\n\r\nHello, World!"
        );
    }

    #[test]
    fn head_has_length_but_no_body() {
        let r = answer(b"HEAD / HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("Content-Length: 13\r\n\r\n"), "{r}");
    }

    #[test]
    fn errors() {
        let r = answer(b"GET /nope HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.contains("Connection: close\r\n"), "{r}");
        let r = answer(b"GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.contains("Connection: keep-alive\r\n"), "{r}");
        let r = answer(b"DELETE / HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("Allow: GET, HEAD\r\n"), "{r}");
        let r = answer(b"ping\n");
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        assert!(r.contains("Connection: close\r\nContent-Length: 12\r\n\r\nBad Request\n"));
    }
}
