//! Cutting the client's byte stream into messages (pure logic, no I/O).
//!
//! * Each `\n`-terminated line is one message; a `\r` before the `\n` is
//!   dropped. An empty line is a message too (the bot asks again).
//! * Bytes left without a newline at the end of a read are one message as
//!   well: simple clients send `0` and wait for the answer.
//! * If such an unterminated message is followed, at the start of the next
//!   read, by its line terminator (`\n` or `\r\n`), that terminator only
//!   completes the message already answered; it is not an empty line.
//! * A line longer than [`MAX_LINE`] bytes (terminator excluded) is
//!   refused: [`Piece::TooLong`], after which nothing more is produced.
//!   Nothing is buffered across reads, so memory stays bounded by the read
//!   size.

/// The longest message the bot accepts, in bytes.
pub const MAX_LINE: usize = 4096;

/// One piece of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A message, without its line terminator.
    Message(&'a [u8]),
    /// A line longer than [`MAX_LINE`]; the conversation should end.
    TooLong,
}

/// Splits reads into messages; remembers whether the previous read ended
/// in the middle of a line.
#[derive(Debug, Default)]
pub struct Splitter {
    after_unterminated: bool,
}

impl Splitter {
    /// The messages in one read, in order.
    pub fn split<'a>(&mut self, mut data: &'a [u8]) -> Vec<Piece<'a>> {
        if self.after_unterminated {
            if let Some(rest) = data.strip_prefix(b"\r") {
                if rest.is_empty() {
                    return Vec::new(); // still waiting for a possible "\n"
                }
                data = rest;
            }
            if let Some(rest) = data.strip_prefix(b"\n") {
                data = rest;
            }
        }
        let mut pieces = Vec::new();
        let mut lines = data.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            if last && line.is_empty() {
                // `data` was empty or ended with "\n"
                self.after_unterminated = false;
                break;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_LINE {
                pieces.push(Piece::TooLong);
                break;
            }
            pieces.push(Piece::Message(line));
            if last {
                self.after_unterminated = true;
            }
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs<'a>(s: &mut Splitter, data: &'a [u8]) -> Vec<Piece<'a>> {
        s.split(data)
    }

    #[test]
    fn lines_and_trailing_bytes_are_messages() {
        let mut s = Splitter::default();
        assert_eq!(
            msgs(&mut s, b"a\r\n\nb\nc"),
            [
                Piece::Message(b"a"),
                Piece::Message(b""),
                Piece::Message(b"b"),
                Piece::Message(b"c")
            ]
        );
        // the terminator of "c" arrives late: not an empty line
        assert_eq!(msgs(&mut s, b"\r\nd\n"), [Piece::Message(b"d")]);
        assert_eq!(msgs(&mut s, b"\n"), [Piece::Message(b"")]);
    }

    #[test]
    fn split_crlf_after_unterminated_message() {
        let mut s = Splitter::default();
        assert_eq!(msgs(&mut s, b"0"), [Piece::Message(b"0")]);
        assert_eq!(msgs(&mut s, b"\r"), []);
        assert_eq!(msgs(&mut s, b"\nexit"), [Piece::Message(b"exit")]);
    }

    #[test]
    fn empty_read_produces_nothing() {
        let mut s = Splitter::default();
        assert_eq!(msgs(&mut s, b""), []);
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut s = Splitter::default();
        let mut data = vec![b'y'; MAX_LINE];
        data.extend_from_slice(b"\r\n");
        assert_eq!(s.split(&data).len(), 1); // exactly MAX_LINE is fine
        let mut data = b"ok\n".to_vec();
        data.extend(vec![b'y'; MAX_LINE + 1]);
        data.extend_from_slice(b"\nignored\n");
        assert_eq!(s.split(&data), [Piece::Message(b"ok"), Piece::TooLong]);
    }
}
