//! Classifying the bytes at the start of the buffer as an HTTP/1.x request
//! head (pure logic, no I/O), with `httparse` plus a quick request-line
//! check so that bytes which can never become HTTP are refused at once
//! rather than after a timeout.

/// The largest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most headers accepted in one request.
pub const MAX_HEADERS: usize = 64;

/// Methods the server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// Anything else (answered with 405).
    Other,
}

/// A complete, acceptable request head (borrowing the buffer it was
/// parsed from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    /// Bytes of the head, including the blank line that ends it.
    pub len: usize,
    /// The method.
    pub method: Method,
    /// The path of the target, without the query.
    pub path: &'a str,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// Bytes of request body that follow the head (to be discarded).
    pub body_len: u64,
}

/// Why a request is refused outright (the connection is closed after the
/// error response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400: not HTTP, or malformed.
    BadRequest,
    /// 431: head larger than [`MAX_HEAD`] or more than [`MAX_HEADERS`]
    /// headers.
    HeadTooLarge,
    /// 501: a `Transfer-Encoding` (chunked bodies are not supported).
    NotImplemented,
}

/// The result of looking at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a complete head yet, but it may become one: read more.
    Partial,
    /// A complete head.
    Request(Head<'a>),
    /// Respond with an error and close.
    Reject(Reject),
}

/// Classifies the request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    if !request_line_plausible(buf) {
        return Parsed::Reject(Reject::BadRequest);
    }
    // Left uninitialised: httparse fills in only the headers it finds, so
    // a request does not pay for zeroing all 64 slots (1 KiB) first.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Parsed::Reject(Reject::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::Reject(Reject::HeadTooLarge),
        Err(httparse::Error::TooManyHeaders) => return Parsed::Reject(Reject::HeadTooLarge),
        Err(_) => return Parsed::Reject(Reject::BadRequest),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Reject(Reject::BadRequest);
    };

    let mut close = false;
    let mut keep_alive = false;
    let mut body_len: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Reject(Reject::NotImplemented);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(h.value) else {
                return Parsed::Reject(Reject::BadRequest);
            };
            if body_len.is_some_and(|m| m != n) {
                return Parsed::Reject(Reject::BadRequest);
            }
            body_len = Some(n);
        }
    }

    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = target.split('?').next().unwrap_or_default();
    Parsed::Request(Head {
        len,
        method,
        path,
        minor,
        // HTTP/1.1 is persistent unless "close"; HTTP/1.0 only on request.
        keep_alive: !close && (minor >= 1 || keep_alive),
        body_len: body_len.unwrap_or(0),
    })
}

/// `1*DIGIT`, without signs or spaces, fitting a u64.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether the first (possibly incomplete) line of `buf` can still be the
/// start of `METHOD SP target SP HTTP/x.y`. Leading empty lines are
/// skipped, as httparse does.
fn request_line_plausible(buf: &[u8]) -> bool {
    let mut rest = buf;
    loop {
        if let Some(r) = rest.strip_prefix(b"\r\n") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix(b"\n") {
            rest = r;
        } else {
            break;
        }
    }
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], true),
        None => (rest, false),
    };
    // a final "\r" may be (or become) part of the line's "\r\n"
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        // nothing yet (complete empty lines were skipped above)
        return true;
    }

    // method: 1*tchar SP
    let method_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    if method_len == 0 {
        return false;
    }
    let Some(after) = line[method_len..].strip_prefix(b" ") else {
        return !complete && method_len == line.len();
    };
    // request-target: 1*VCHAR SP
    let target_len = after.iter().take_while(|&&b| b.is_ascii_graphic()).count();
    let Some(version) = after[target_len..].strip_prefix(b" ") else {
        return !complete && target_len == after.len();
    };
    if target_len == 0 {
        return false;
    }
    // "HTTP/" DIGIT "." DIGIT
    const PATTERN: &[u8] = b"HTTP/D.D";
    if version.len() > PATTERN.len() || (complete && version.len() != PATTERN.len()) {
        return false;
    }
    version.iter().zip(PATTERN).all(|(&b, &p)| match p {
        b'D' => b.is_ascii_digit(),
        p => b == p,
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8]) -> Head<'_> {
        match parse(buf) {
            Parsed::Request(h) => h,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let h = head(b"GET /?a=b HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n");
        assert_eq!(h.len, 31);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/");
        assert!(h.keep_alive);
        assert_eq!(h.body_len, 0);
    }

    #[test]
    fn bare_newlines_and_leading_empty_lines_are_accepted() {
        let h = head(b"\r\nHEAD /x HTTP/1.1\nHost: x\n\n");
        assert_eq!(h.method, Method::Head);
        assert_eq!(h.path, "/x");
    }

    #[test]
    fn connection_semantics() {
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn bodies() {
        let h = head(b"POST /f HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((h.method, h.body_len), (Method::Other, 5));
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(parse(dup), Parsed::Reject(Reject::BadRequest));
        let bad = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(parse(bad), Parsed::Reject(Reject::BadRequest));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(chunked), Parsed::Reject(Reject::NotImplemented));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        for p in [
            &b""[..],
            b"\r",
            b"\r\n",
            b"G",
            b"GET",
            b"GET ",
            b"GET /",
            b"GET / ",
            b"GET / HT",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            b"ping",
        ] {
            assert_eq!(
                parse(p),
                Parsed::Partial,
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
    }

    #[test]
    fn garbage_is_refused_at_once() {
        for g in [
            &b"ping\n"[..],
            b"ping\r\n",
            b"hello world\n",
            b"GET /\n",
            b"GET / HTTP/1.1 extra\r\n",
            b"GET / FTP/1.0\r\n",
            b"GET / HTTP/x",
            b" GET / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
            b"GET /\x01",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"GET / HTTP/3.0\r\n\r\n",
        ] {
            assert_eq!(
                parse(g),
                Parsed::Reject(Reject::BadRequest),
                "{:?}",
                String::from_utf8_lossy(g)
            );
        }
    }

    #[test]
    fn oversized_heads() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(vec![b'a'; MAX_HEAD]);
        assert_eq!(parse(&big), Parsed::Reject(Reject::HeadTooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big), Parsed::Reject(Reject::HeadTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Parsed::Reject(Reject::HeadTooLarge));
    }
}
