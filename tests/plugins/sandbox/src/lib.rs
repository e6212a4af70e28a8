//! Test plugin: tries to reach the world outside the connection and
//! reports each attempt as one line, `<what>: ok <detail>` or
//! `<what>: error <message>`, then returns:
//!
//! ```text
//! fs: ...      std::fs::read("/etc/passwd")
//! env: ...     std::env::var("HOME")
//! vars: ...    std::env::vars().count()   (always "ok <count>")
//! net: ...     std::net::TcpStream::connect("127.0.0.1:1")
//! dir: ...     std::fs::read_dir("/")
//! ```

use plughost_sdk::{Conn, Handler};

/// Probes the sandbox.
pub struct Sandbox;

fn line<T, E: std::fmt::Display>(what: &str, r: Result<T, E>, ok: impl Fn(T) -> String) -> String {
    match r {
        Ok(v) => format!("{what}: ok {}\n", ok(v)),
        Err(e) => format!("{what}: error {e}\n"),
    }
}

impl Handler for Sandbox {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let report = [
            line("fs", std::fs::read("/etc/passwd"), |d| {
                format!("{} bytes", d.len())
            }),
            line("env", std::env::var("HOME"), |v| v),
            format!("vars: ok {}\n", std::env::vars().count()),
            line("net", std::net::TcpStream::connect("127.0.0.1:1"), |_| {
                "connected".into()
            }),
            line("dir", std::fs::read_dir("/"), |d| {
                format!("{} entries", d.count())
            }),
        ];
        for l in report {
            conn.write_all(l.as_bytes())?;
        }
        Ok(())
    }
}

plughost_sdk::export!(Sandbox);
