//! Test plugin: echoes like `echo`, but panics, which traps the instance,
//! as soon as the bytes `trap` have been received (also when they arrive
//! split across reads).

use plughost_sdk::{Conn, Handler};

/// The echo that traps.
pub struct Trap;

impl Handler for Trap {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let data = conn.read(64 * 1024)?;
            if data.is_empty() {
                return Ok(());
            }
            tail.extend_from_slice(&data);
            if tail.windows(4).any(|w| w == b"trap") {
                panic!("asked to trap");
            }
            tail.drain(..tail.len().saturating_sub(3));
            conn.write_all(&data)?;
        }
    }
}

plughost_sdk::export!(Trap);
