//! Test plugin (handler world): on connect, writes what the connection's
//! TLS handshake negotiated (`tls VERSION SUITE NAME ALPN`, `-` for what
//! the client did not send; `tls none` on a plaintext listener) and a
//! newline, then closes.

use plughost_sdk::{Conn, Handler};

/// Reports the TLS session.
pub struct TlsProbe;

impl Handler for TlsProbe {
    fn setup(conn: &mut Conn) -> Result<(), String> {
        let line = conn.tls().map_or("tls none".to_string(), |s| {
            let name = s.server_name.unwrap_or_else(|| "-".into());
            let alpn = s.alpn.unwrap_or_else(|| "-".into());
            format!("tls {} {} {name} {alpn}", s.version, s.cipher_suite)
        });
        conn.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    fn handle(_conn: &mut Conn) -> Result<(), String> {
        Ok(())
    }
}

plughost_sdk::export!(TlsProbe);
