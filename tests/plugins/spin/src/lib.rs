//! Test plugin: reads one byte, then loops forever without calling the
//! host (for CPU-budget tests) — unless that byte is `e`: then it echoes
//! until the client closes, a well-behaved neighbour on the same listener.

use std::hint::black_box;

use plughost_sdk::{Conn, Handler};

/// Burns CPU forever (or echoes, see the module docs).
pub struct Spin;

impl Handler for Spin {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        if conn.read(1)? == b"e" {
            loop {
                let data = conn.read(4096)?;
                if data.is_empty() {
                    return Ok(());
                }
                conn.write_all(&data)?;
            }
        }
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
}

plughost_sdk::export!(Spin);
