//! Test plugin: tries the file operations its client asks for, one
//! request per line, and answers each with one line, `ok <detail>` or
//! `error <message>`:
//!
//! ```text
//! read PATH          the file's contents (`ok <text>`)
//! write PATH TEXT    creates or replaces the file with TEXT
//! append PATH TEXT   appends TEXT to an existing file
//! mkdir PATH         creates a directory
//! rename FROM TO     renames
//! remove PATH        removes a file
//! list DIR           the names in DIR, sorted, comma-separated
//! ```
//!
//! It returns when the client closes.

use std::fs;
use std::io::Write;

use plughost_sdk::{Conn, Handler};

/// Probes the file system on request.
pub struct FsProbe;

/// The answer to one request line.
fn answer(request: &str) -> String {
    let mut words = request.splitn(3, ' ');
    let (verb, path, rest) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
    );
    let result = match verb {
        "read" => fs::read_to_string(path),
        "write" => fs::write(path, rest).map(|()| String::new()),
        "append" => fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(rest.as_bytes()))
            .map(|()| String::new()),
        "mkdir" => fs::create_dir(path).map(|()| String::new()),
        "rename" => fs::rename(path, rest).map(|()| String::new()),
        "remove" => fs::remove_file(path).map(|()| String::new()),
        "list" => fs::read_dir(path).and_then(|entries| {
            let mut names = entries
                .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()?;
            names.sort();
            Ok(names.join(","))
        }),
        other => return format!("error unknown request `{other}`\n"),
    };
    match result {
        Ok(detail) => format!("ok {}\n", detail.trim_end()),
        Err(err) => format!("error {err}\n"),
    }
}

impl Handler for FsProbe {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        while let Some(line) = conn.read_line(64 * 1024)? {
            let request = String::from_utf8_lossy(&line);
            conn.write_all(answer(request.trim_end()).as_bytes())?;
        }
        Ok(())
    }
}

plughost_sdk::export!(FsProbe);
