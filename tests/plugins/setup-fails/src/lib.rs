//! Test plugin: `setup` fails with `no thanks`, so the host must close the
//! connection without calling `handle` (which would write `should not run`)
//! or `finish`.

use plughost_sdk::{Conn, Handler};

/// Refuses every connection in `setup`.
pub struct SetupFails;

impl Handler for SetupFails {
    fn setup(_conn: &mut Conn) -> Result<(), String> {
        Err("no thanks".into())
    }

    fn handle(conn: &mut Conn) -> Result<(), String> {
        conn.write_all(b"should not run\n")?;
        Ok(())
    }

    fn finish(conn: &mut Conn) {
        let _ = conn.write_all(b"finish should not run\n");
    }
}

plughost_sdk::export!(SetupFails);
