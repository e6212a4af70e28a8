//! Test plugin: `handle` echoes one read and returns; `finish` then loops
//! forever without calling the host.

use std::hint::black_box;

use plughost_sdk::{Conn, Handler};

/// Never finishes.
pub struct FinishHangs;

impl Handler for FinishHangs {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let data = conn.read(64 * 1024)?;
        conn.write_all(&data)?;
        Ok(())
    }

    fn finish(_conn: &mut Conn) {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
}

plughost_sdk::export!(FinishHangs);
