//! Test plugin: tries the network operations its client asks for, one
//! request per line, and answers each with one line, `ok <detail>` or
//! `error <message>`:
//!
//! ```text
//! connect ADDR   std::net::TcpStream::connect(ADDR), then reads one line
//!                from the server reached and reports it (`ok <line>`)
//! bind ADDR      std::net::TcpListener::bind(ADDR)  (bind and listen)
//! ```
//!
//! It returns when the client closes.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};

use plughost_sdk::{Conn, Handler};

/// Probes the network on request.
pub struct NetProbe;

/// The answer to one request line.
fn answer(request: &str) -> String {
    let (verb, addr) = request.split_once(' ').unwrap_or((request, ""));
    let result = match verb {
        "connect" => TcpStream::connect(addr).and_then(|stream| {
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line)?;
            Ok(line.trim_end().to_string())
        }),
        "bind" => TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map(|a| a.to_string()),
        other => return format!("error unknown request `{other}`\n"),
    };
    match result {
        Ok(detail) => format!("ok {detail}\n"),
        Err(err) => format!("error {err}\n"),
    }
}

impl Handler for NetProbe {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let mut pending = Vec::new();
        loop {
            let data = conn.read(64 * 1024)?;
            if data.is_empty() {
                return Ok(());
            }
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let request = String::from_utf8_lossy(&line);
                conn.write_all(answer(request.trim_end()).as_bytes())?;
            }
        }
    }
}

plughost_sdk::export!(NetProbe);
