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
//! `chat` is the built-in `chat` plugin's room done the plain way (see
//! [`chat`]): a thread per member and one list of sockets, written under
//! one lock.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

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
    /// One chat room, the `chat` plugin's line protocol.
    Chat,
}

impl Kind {
    /// The name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Http => "http",
            Kind::Chat => "chat",
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
        Some("chat") => Ok(Some(Kind::Chat)),
        other => bail!("{FLAG} needs echo, http or chat, not {other:?}"),
    }
}

/// Listens on a free loopback port, prints it, and serves until killed.
pub fn serve(kind: Kind) -> Result<()> {
    let listener = listen().context("listen on 127.0.0.1:0")?;
    println!("{}", listener.local_addr().context("local address")?);
    std::io::stdout().flush().context("print the address")?;
    let room = Arc::new(Room::default());
    for stream in listener.incoming() {
        // Accept errors (e.g. out of file descriptors) drop that
        // connection attempt only.
        let Ok(stream) = stream else { continue };
        // A chat member joins here, in the order connections are accepted
        // (as the plugin's `connection-made` runs), before its thread.
        let member = match kind {
            Kind::Chat => match join(&stream, &room) {
                Ok(member) => Some(member),
                Err(_) => continue,
            },
            _ => None,
        };
        let room = Arc::clone(&room);
        let spawned = thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                // A connection's failure ends that connection only.
                let _ = match (kind, member) {
                    (Kind::Echo, _) => echo(stream),
                    (Kind::Http, _) => http(stream),
                    (Kind::Chat, Some((id, name))) => chat(stream, &room, id, &name),
                    (Kind::Chat, None) => Ok(()),
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

/// How long the room waits for one member's socket to take a line before
/// it drops that member (the plugin drops one whose output passes the
/// host's write bound instead; the bench paces its sender so that neither
/// happens).
const CHAT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The chat room: every member's socket in one list, under one lock.
#[derive(Default)]
struct Room {
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    /// The last guest number given (members are `guestN`, N from 1).
    guests: u64,
    /// In the order they joined, as the plugin writes to them.
    members: Vec<Member>,
}

struct Member {
    id: u64,
    stream: TcpStream,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A member thread that panicked leaves the list as it was.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RoomState {
    /// Writes `line` to every member but `from`, in the order they
    /// joined; a member whose socket fails (or stays full for
    /// [`CHAT_WRITE_TIMEOUT`]) is dropped from the room.
    fn broadcast(&mut self, from: u64, line: &[u8]) {
        self.members.retain(|member| {
            if member.id == from {
                return true;
            }
            let sent = (&member.stream).write_all(line).is_ok();
            if !sent {
                // Its own thread sees the end and leaves.
                let _ = member.stream.shutdown(Shutdown::Both);
            }
            sent
        });
    }
}

/// A new member of the chat room, as the `chat` plugin greets one: it
/// gets `* welcome, guestN (/nick NAME to rename)`, the others get
/// `* guestN joined`; returns its id and name.
fn join(stream: &TcpStream, room: &Room) -> std::io::Result<(u64, String)> {
    stream.set_nodelay(true)?;
    let writer = stream.try_clone()?;
    writer.set_write_timeout(Some(CHAT_WRITE_TIMEOUT))?;
    let mut state = room.lock();
    state.guests += 1;
    let id = state.guests;
    let name = format!("guest{id}");
    let welcome = format!("* welcome, {name} (/nick NAME to rename)\n");
    (&writer).write_all(welcome.as_bytes())?;
    state.broadcast(id, format!("* {name} joined\n").as_bytes());
    state.members.push(Member { id, stream: writer });
    Ok((id, name))
}

/// One member of the chat room after [`join`], as the `chat` plugin
/// serves it: each line it sends (`\n`-terminated, a `\r` before it
/// dropped) is written to every other member as `guestN: line`, and
/// `* guestN left` when it goes. Without the plugin's `/nick` and `/who`
/// (the bench sends neither) and its 4 KiB line bound.
fn chat(stream: TcpStream, room: &Room, id: u64, name: &str) -> std::io::Result<()> {
    let served = chat_lines(stream, room, id, name);
    let mut state = room.lock();
    state.members.retain(|member| member.id != id);
    state.broadcast(id, format!("* {name} left\n").as_bytes());
    served
}

/// Reads member `id`'s lines until it closes, broadcasting each.
fn chat_lines(mut stream: TcpStream, room: &Room, id: u64, name: &str) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut pending: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let raw = &pending[start..start + end];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            line.clear();
            line.extend_from_slice(name.as_bytes());
            line.extend_from_slice(b": ");
            line.extend_from_slice(raw);
            line.push(b'\n');
            room.lock().broadcast(id, &line);
            start += end + 1;
        }
        pending.drain(..start);
    }
}
