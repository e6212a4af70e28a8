//! Test plugin: reads one byte, then loops forever without calling the
//! host (for CPU-budget tests).

use std::hint::black_box;

use plughost_sdk::{Conn, Handler};

/// Burns CPU forever.
pub struct Spin;

impl Handler for Spin {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        conn.read(1)?;
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
}

plughost_sdk::export!(Spin);
