//! The native reference server (ratio 1.00): plain blocking `std::net`,
//! one freshly spawned thread per accepted connection (no thread reuse,
//! unlike the host's pool, which keeps idle threads for 30 s), with the
//! host's settings: listen backlog 1024, SO_REUSEADDR, TCP_NODELAY on,
//! 64 KiB reads, 1 MiB thread stacks. It runs as this bench binary re-executed with
//! `--reference-server echo|http`, in its own process (so it can be pinned
//! like the host and its RSS measured alone), prints its address on stdout
//! and serves until killed.
//!
//! `echo` writes back every byte read. `http` answers every complete
//! request head (up to `\r\n\r\n`; bodies are not expected) with the same
//! response as the built-in `http-hello` plugin, keeping the connection
//! open; the answers to one read go out in one write, as the plugin does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, Socket, Type};

/// The command-line flag that turns this binary into the reference server.
pub const FLAG: &str = "--reference-server";
/// Bytes asked for per read, as the host's plugins do.
const READ_BUFFER: usize = 64 * 1024;
/// The host's listen backlog.
const BACKLOG: i32 = 1024;
/// The host's connection-thread stack size.
const THREAD_STACK: usize = 1024 * 1024;
/// The built-in `http-hello` plugin's answer to `GET /`.
pub const HELLO_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: plughost-http-hello\r\n\
Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
/// The most request bytes kept while waiting for the end of a head.
const MAX_HEAD: usize = 8 * 1024;

/// What the reference server speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Echo every byte.
    Echo,
    /// Answer every request with `Hello, World!`.
    Http,
}

impl Kind {
    /// The name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Http => "http",
        }
    }
}

/// The kind asked for with [`FLAG`], if this process is to be the
/// reference server.
pub fn requested() -> Result<Option<Kind>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == FLAG) else {
        return Ok(None);
    };
    match args.get(at + 1).map(String::as_str) {
        Some("echo") => Ok(Some(Kind::Echo)),
        Some("http") => Ok(Some(Kind::Http)),
        other => bail!("{FLAG} needs echo or http, not {other:?}"),
    }
}

/// Listens on a free loopback port, prints it, and serves until killed.
pub fn serve(kind: Kind) -> Result<()> {
    let listener = listen().context("listen on 127.0.0.1:0")?;
    println!("{}", listener.local_addr().context("local address")?);
    std::io::stdout().flush().context("print the address")?;
    for stream in listener.incoming() {
        // Accept errors (e.g. out of file descriptors) drop that
        // connection attempt only.
        let Ok(stream) = stream else { continue };
        let spawned = thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                // A connection's failure ends that connection only.
                let _ = match kind {
                    Kind::Echo => echo(stream),
                    Kind::Http => http(stream),
                };
            });
        if let Err(err) = spawned {
            eprintln!("reference server: cannot spawn a thread: {err}");
        }
    }
    Ok(())
}

/// A blocking listener on a free loopback port, set up like the host's
/// (std's own `bind` would use a backlog of 128).
fn listen() -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn http(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_BUFFER];
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = find_head_end(&pending[start..]) {
            out.extend_from_slice(HELLO_RESPONSE);
            start += end;
        }
        pending.drain(..start);
        if pending.len() > MAX_HEAD {
            return Ok(());
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
    }
}

/// The length of the first request head in `bytes`, through its blank
/// line.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}
