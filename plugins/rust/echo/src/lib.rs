//! The echo plugin: returns exactly the bytes it receives (binary-safe),
//! until the client closes its side.

use plughost_sdk::{Conn, Handler};

/// How much one read asks for.
const CHUNK: usize = 64 * 1024;

/// Echoes every byte back.
pub struct Echo;

impl Handler for Echo {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        loop {
            let data = conn.read(CHUNK)?;
            if data.is_empty() {
                return Ok(());
            }
            conn.write_all(&data)?;
        }
    }
}

plughost_sdk::export!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_sdk::testing::Script;

    #[test]
    fn echoes_binary_data_until_eof() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut client = Script::new([&b"\0\xff\r\n"[..], &big, b"end"]);
        client.run::<Echo>().unwrap();
        let mut expected = b"\0\xff\r\n".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"end");
        assert_eq!(client.written(), expected);
    }

    #[test]
    fn empty_connection_is_fine() {
        let mut client = Script::new::<[&[u8]; 0]>([]);
        client.run::<Echo>().unwrap();
        assert!(client.written().is_empty());
    }
}
