//! {{name}}: a plughost connection handler. It echoes every byte back
//! (binary-safe) until the client closes its side; replace `handle` with
//! your protocol.
//!
//! The host calls `setup`, `handle` and `finish` for every connection, each
//! in a fresh instance (like Python's socketserver.BaseRequestHandler);
//! `wit/handler.wit` is the contract.

// `generate_all`: the world imports the `wasi:keyvalue` store interfaces
// too (from `wit/deps/`), and their bindings are generated here as well.
wit_bindgen::generate!({ world: "handler", path: "wit", generate_all });

use plughost::handler::connections::ErrorCode;

/// How much one read asks for (the host returns at most 1 MiB).
const CHUNK: u32 = 64 * 1024;

struct Plugin;

impl Guest for Plugin {
    fn setup(_conn: &Connection) -> Result<(), String> {
        Ok(())
    }

    fn handle(conn: &Connection) -> Result<(), String> {
        loop {
            let data = conn.read(CHUNK).map_err(|e| failed("read", e))?;
            if data.is_empty() {
                return Ok(()); // the client closed its side
            }
            conn.write(&data).map_err(|e| failed("write", e))?;
        }
    }

    fn finish(_conn: &Connection) {}
}

fn failed(what: &str, code: ErrorCode) -> String {
    format!("{what}: {code:?}")
}

export!(Plugin);
