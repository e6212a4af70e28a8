//! Test plugin: `handle` returns at once; `finish` reads (and drops) what
//! the client sends until end of stream — a cleanup that a client
//! trickling bytes could keep alive for ever without the host's bound on
//! `finish` as a whole.

use plughost_sdk::{Conn, Handler};

/// Drains the client in `finish`.
pub struct FinishDrains;

impl Handler for FinishDrains {
    fn handle(_conn: &mut Conn) -> Result<(), String> {
        Ok(())
    }

    fn finish(conn: &mut Conn) {
        while let Ok(data) = conn.read(1024) {
            if data.is_empty() {
                return;
            }
        }
    }
}

plughost_sdk::export!(FinishDrains);
