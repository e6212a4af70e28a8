//! Test plugin: `handle` writes `partial\n` and fails with `handler gave
//! up`; `finish` then writes `finished\n`, so a client sees that `finish`
//! ran after the failing `handle`.

use plughost_sdk::{Conn, Handler};

/// Fails in `handle`.
pub struct HandleFails;

impl Handler for HandleFails {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        conn.write_all(b"partial\n")?;
        Err("handler gave up".into())
    }

    fn finish(conn: &mut Conn) {
        let _ = conn.write_all(b"finished\n");
    }
}

plughost_sdk::export!(HandleFails);
