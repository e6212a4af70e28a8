//! Test plugin: writes the operator's `greeting` configuration value (or
//! `no greeting`) and a newline on connect, then echoes.

use plughost_sdk::{Conn, Handler, config};

/// Greets, then echoes.
pub struct Greeter;

impl Handler for Greeter {
    fn setup(conn: &mut Conn) -> Result<(), String> {
        let greeting = config::get("greeting").unwrap_or_else(|| "no greeting".into());
        conn.write_all(format!("{greeting}\n").as_bytes())?;
        Ok(())
    }

    fn handle(conn: &mut Conn) -> Result<(), String> {
        loop {
            let data = conn.read(64 * 1024)?;
            if data.is_empty() {
                return Ok(());
            }
            conn.write_all(&data)?;
        }
    }
}

plughost_sdk::export!(Greeter);
