//! The 10086 customer-service bot: a line-based UTF-8 conversation.
//!
//! On connect the bot sends [`WELCOME`]. Every message from the client gets
//! one reply, in order: `0` → [`OPERATOR`], `exit` → the bot closes the
//! connection, anything else (including an empty line) → [`RETRY`]. Every
//! reply ends with `\n`. What counts as a message is described in
//! [`split`].

pub mod split;

use plughost_sdk::{Conn, Handler};

use split::{Piece, Splitter};

/// Sent when the client connects.
pub const WELCOME: &str = "欢迎致电 10086,请输入1xxx,0转人工服务.\n";
/// The answer to `0`.
pub const OPERATOR: &str = "通过可能会被录音.balabala一大推\n";
/// The answer to anything the bot does not understand.
pub const RETRY: &str = "请重新输入.\n";
/// Sent before closing when a line is longer than [`split::MAX_LINE`].
pub const TOO_LONG: &str = "输入过长,再见.\n";

/// How much one read asks for.
const CHUNK: usize = 64 * 1024;

/// What the bot does with one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this reply and wait for the next message.
    Reply(&'static str),
    /// Close the connection.
    Close,
}

/// Decides what to do with one message (without its line terminator).
/// Surrounding whitespace is ignored; invalid UTF-8 is just not understood.
pub fn respond(message: &[u8]) -> Action {
    match String::from_utf8_lossy(message).trim() {
        "0" => Action::Reply(OPERATOR),
        "exit" => Action::Close,
        _ => Action::Reply(RETRY),
    }
}

/// The bot.
pub struct Bot;

impl Handler for Bot {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        conn.write_all(WELCOME.as_bytes())?;
        let mut splitter = Splitter::default();
        loop {
            let data = conn.read(CHUNK)?;
            if data.is_empty() {
                return Ok(());
            }
            // All replies to one packet go out in one write, in order.
            let mut out = Vec::new();
            let mut close = false;
            for piece in splitter.split(&data) {
                match piece {
                    Piece::Message(m) => match respond(m) {
                        Action::Reply(text) => out.extend_from_slice(text.as_bytes()),
                        Action::Close => {
                            close = true;
                            break;
                        }
                    },
                    Piece::TooLong => {
                        out.extend_from_slice(TOO_LONG.as_bytes());
                        close = true;
                        break;
                    }
                }
            }
            conn.write_all(&out)?;
            if close {
                return Ok(());
            }
        }
    }
}

plughost_sdk::export!(Bot);

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_sdk::testing::Script;

    fn talk(chunks: &[&[u8]]) -> String {
        let mut client = Script::new(chunks.iter().copied());
        client.run::<Bot>().unwrap();
        String::from_utf8(client.written().to_vec()).unwrap()
    }

    #[test]
    fn understands_zero_exit_and_nothing_else() {
        assert_eq!(respond(b"0"), Action::Reply(OPERATOR));
        assert_eq!(respond(b" 0\t"), Action::Reply(OPERATOR));
        assert_eq!(respond(b"exit"), Action::Close);
        assert_eq!(respond(b"1001"), Action::Reply(RETRY));
        assert_eq!(respond(b""), Action::Reply(RETRY));
        assert_eq!(respond(b"\xff0"), Action::Reply(RETRY));
    }

    #[test]
    fn seed_client_conversation() {
        // The seed clients send bare messages without a newline.
        let out = talk(&[b"0", b"hello", b"exit", b"0"]);
        assert_eq!(out, [WELCOME, OPERATOR, RETRY].concat());
    }

    #[test]
    fn several_lines_in_one_packet_get_replies_in_order() {
        let out = talk(&[b"0\r\nfoo\n\n0\nexit\n0\n"]);
        assert_eq!(out, [WELCOME, OPERATOR, RETRY, RETRY, OPERATOR].concat());
    }

    #[test]
    fn eof_ends_the_conversation() {
        assert_eq!(talk(&[]), WELCOME);
        assert_eq!(talk(&[b"0\n"]), [WELCOME, OPERATOR].concat());
    }

    #[test]
    fn overlong_line_is_refused_and_closes() {
        let long = vec![b'x'; split::MAX_LINE + 1];
        let out = talk(&[b"0\n", &long, b"0\n"]);
        assert_eq!(out, [WELCOME, OPERATOR, TOO_LONG].concat());
    }
}
