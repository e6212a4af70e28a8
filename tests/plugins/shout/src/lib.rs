//! Test plugin: echoes every byte, ASCII letters in upper case. The reload
//! tests swap it with `echo` to tell which version served a connection.

use plughost_sdk::{Conn, Handler};

/// The upper-case echo.
pub struct Shout;

impl Handler for Shout {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        loop {
            let data = conn.read(64 * 1024)?;
            if data.is_empty() {
                return Ok(());
            }
            conn.write_all(&data.to_ascii_uppercase())?;
        }
    }
}

plughost_sdk::export!(Shout);
