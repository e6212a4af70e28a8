//! Test plugin: an echo built directly with wit-bindgen against a frozen
//! copy of the 0.1.0 contract (`tests/plugins/wit-0.1.0`), proving that
//! components built before the `config` import was added keep working.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "handler", path: "../wit-0.1.0" });

struct OldEcho;

impl Guest for OldEcho {
    fn setup(_conn: &Connection) -> Result<(), String> {
        Ok(())
    }

    fn handle(conn: &Connection) -> Result<(), String> {
        loop {
            let data = conn.read(64 * 1024).map_err(|e| format!("{e:?}"))?;
            if data.is_empty() {
                return Ok(());
            }
            conn.write(&data).map_err(|e| format!("{e:?}"))?;
        }
    }

    fn finish(_conn: &Connection) {}
}

export!(OldEcho);
