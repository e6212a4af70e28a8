//! The `chat` workload: one room of many clients (default 1,000) and one
//! sender, against the native chat reference (`reference.rs`, a thread per
//! member and one list of sockets written under one lock), the host with
//! the built-in `chat` plugin (the protocol world) — alone, and with the
//! room shared through a topic of the store (`--store memory`, and
//! `--store redis://…` when `redis-server` is installed) —, the
//! one room over two host processes on one Redis (the clients joining
//! each in turn, the sender on the first; CPU figures of both together),
//! the handler-world `handler-chat` (a handler per client, the room a
//! topic), and the Python and JavaScript chat guests when
//! `scripts/build-guests.sh` has built them.
//!
//! The clients are joined once per server, before any round: each reads
//! its greeting and one `* guestN joined` notice per client after it, so
//! the room has settled before anything is timed. All clients live on one
//! thread of this process (a `mio` poll over every socket).
//!
//! A round: the first client to join sends numbered lines, as many as the
//! window allows in flight: line `k + window` goes out only once the last
//! client to join (which the server writes to last: the plugin and the
//! reference both write in the order members joined) has received line
//! `k`. So the sender keeps the server busy without ever running ahead of
//! the slowest part of the fan-out, and no member's buffered output grows
//! past a window's worth of lines: the figure is the fan-out's, not what a
//! full buffer does. After the round's time the sender stops, and the
//! round ends when every receiver has every line (or fails after
//! [`DRAIN_LIMIT`]). Figure: deliveries per second, i.e. lines times
//! receivers over the time from the first line sent to the last line
//! received. Every receiver checks that it got each line once and in
//! order; a line missing, repeated or out of order, or a receiver
//! disconnected, fails the target.
//!
//! Beside the figure, the server's CPU time per delivery and its share of
//! a CPU during the round (from `/proc/PID/stat`, 10 ms ticks): on a
//! machine shared with other work, the figure depends on how much CPU the
//! server got, and these two tell that apart from what a delivery costs
//! it.

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::Settings;
use crate::load;
use crate::reference::Kind;
use crate::report::Table;
use crate::targets::{Server, guest, which};
use crate::workloads::{SPREAD, measure_all, reference_row, start_host};

/// Longest the clients may take to join and read every notice.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// Longest a round waits, after the sender stopped, for every line to
/// reach every receiver.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
/// What follows a line's number (a line is 32 bytes and its newline).
const FILLER: &[u8] = b" the quick brown fox j";
/// Bytes asked for per read.
const READ_BUFFER: usize = 64 * 1024;

/// The chat workload.
pub fn chat(settings: &Settings) {
    let (clients, window) = (settings.chat_clients, settings.chat_window);
    eprintln!("chat: {clients} clients, window {window}");
    let mut table = Table::new(
        &format!(
            "chat: {clients} clients in one room, one sender, {window} lines in flight \
             (acknowledged by the last to join)"
        ),
        "deliveries/s: lines received by all receivers together, higher is better",
        &["lines/s", "lines", "lost", "µs CPU/dlv", "srv CPU", SPREAD],
    );
    // One server per row, or two for the room across two processes.
    let mut starts: Vec<(String, Result<Vec<Server>>)> = vec![(
        reference_row(Kind::Chat),
        Server::reference(Kind::Chat, &settings.placement).map(|s| vec![s]),
    )];
    let one = |(name, server): (String, Result<Server>)| (name, server.map(|s| vec![s]));
    starts.push(one(start_host(
        "host, wasm chat (protocol world)",
        &["--plugin", "chat"],
        settings,
    )));
    starts.push(one(start_host(
        "host, wasm chat, room a topic (--store memory)",
        &["--plugin", "chat", "--store", "memory"],
        settings,
    )));
    // Kept running until the rounds are over.
    let redis = match which("redis-server") {
        Some(binary) => Some(Server::redis(&binary, &settings.placement)),
        None => {
            table.note("chat on Redis: skipped, redis-server is not installed");
            None
        }
    };
    match &redis {
        Some(Ok(redis)) => {
            let url = format!("redis://{}", redis.addr);
            let args = ["--plugin", "chat", "--store", &url];
            starts.push(one(start_host(
                "host, wasm chat, room a topic on Redis",
                &args,
                settings,
            )));
            // A room of its own (not the one-host row's, on the same Redis).
            let pair = [
                "--plugin",
                "chat",
                "--store",
                &url,
                "--store-namespace",
                "pair",
            ];
            let (name, first) =
                start_host("host x2, wasm chat, one room on Redis", &pair, settings);
            let (_, second) = start_host(&name, &pair, settings);
            starts.push((name, first.and_then(|a| Ok(vec![a, second?]))));
        }
        Some(Err(err)) => table.note(format!("chat on Redis: skipped, {err:#}")),
        None => {}
    }
    starts.push(one(start_host(
        "host, handler-chat (a handler per client, --store memory)",
        &["--plugin", "handler-chat", "--store", "memory"],
        settings,
    )));
    for language in ["python", "js"] {
        let file = format!("{language}-chat.wasm");
        match guest(&file) {
            Ok(path) => {
                let path = path.to_string_lossy();
                starts.push(one(start_host(
                    &format!("host, {language} chat (protocol world)"),
                    &["--plugin", &path],
                    settings,
                )));
            }
            Err(why) => table.note(format!("{language} chat: skipped, {why}")),
        }
    }
    // Every room is joined before any round, so that joining one (a
    // burst of notices) never falls into another's measurement.
    let targets: Vec<(String, Result<Joined>)> = starts
        .into_iter()
        .map(|(name, server)| {
            eprintln!("  {name}: joining {clients} clients");
            let joined = server.and_then(|servers| {
                let started = Instant::now();
                let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
                let room = Room::join(&addrs, clients, window)?;
                table.note(format!(
                    "{name}: {clients} clients joined and settled in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                Ok(Joined {
                    room: RefCell::new(room),
                    servers,
                })
            });
            (name, joined)
        })
        .collect();
    measure_all(
        &mut table,
        &targets,
        settings.rounds,
        |joined| {
            let before = joined.cpu_time()?;
            let mut round = joined.room.borrow_mut().round(settings.duration)?;
            round.server_cpu = joined.cpu_time()?.saturating_sub(before);
            Ok(round)
        },
        |round| round.deliveries_per_sec,
        |table, name, round, spread| {
            table.row(
                name,
                round.deliveries_per_sec,
                vec![
                    format!("{:.0}", round.lines_per_sec),
                    round.lines.to_string(),
                    "0".to_string(),
                    format!(
                        "{:.2}",
                        round.server_cpu.as_secs_f64() * 1e6 / round.deliveries.max(1) as f64
                    ),
                    format!(
                        "{:.0}%",
                        round.server_cpu.as_secs_f64() / round.took.as_secs_f64() * 100.0
                    ),
                    spread,
                ],
            );
        },
    );
    for (name, joined) in &targets {
        if let Ok(joined) = joined {
            let warnings = joined.servers.iter().flat_map(Server::warnings).collect();
            for warning in crate::idle::dedup(warnings) {
                table.note(format!("{name} logged: {warning}"));
            }
        }
    }
    table.note(
        "lost: a line missing, repeated or out of order at any receiver, or a receiver \
         disconnected, fails the target (its row says how many)",
    );
    table.print();
}

/// A server (or two) with its room of clients.
struct Joined {
    room: RefCell<Room>,
    servers: Vec<Server>,
}

impl Joined {
    /// The CPU time of the servers together.
    fn cpu_time(&self) -> Result<Duration> {
        self.servers.iter().map(Server::cpu_time).sum()
    }
}

/// What one round measured.
pub struct ChatRound {
    /// Lines received per second, all receivers together.
    pub deliveries_per_sec: f64,
    /// Lines the sender sent per second.
    pub lines_per_sec: f64,
    /// Lines sent in the round.
    pub lines: u64,
    /// Lines received, all receivers together.
    pub deliveries: u64,
    /// From the first line sent to the last received.
    pub took: Duration,
    /// The CPU time the server used in the round (set by the caller).
    pub server_cpu: Duration,
}

/// One client of the room, as this process sees it.
struct Client {
    stream: TcpStream,
    /// The bytes of an unfinished line.
    partial: Vec<u8>,
    /// Lines starting with `* ` (greeting, joined, left).
    notices: u64,
    /// N of the `guestN` its greeting named.
    guest: Option<u64>,
    /// Chat lines received this round, in order.
    lines: u64,
    /// The number the next chat line must carry.
    next_seq: u64,
    /// Chat lines that were not the next one (missing, repeated, out of
    /// order, or garbled).
    disorder: u64,
    /// The server closed this client's connection (or it failed).
    closed: bool,
}

impl Client {
    /// Counts the complete lines in `data` (after what was left over).
    fn take(&mut self, data: &[u8]) {
        let mut partial = std::mem::take(&mut self.partial);
        let bytes: &[u8] = if partial.is_empty() {
            data
        } else {
            partial.extend_from_slice(data);
            &partial
        };
        let mut start = 0;
        while let Some(end) = bytes[start..].iter().position(|&b| b == b'\n') {
            self.line(&bytes[start..start + end]);
            start += end + 1;
        }
        let rest = bytes[start..].to_vec();
        partial.clear();
        partial.extend_from_slice(&rest);
        self.partial = partial;
    }

    /// One line without its newline: a notice, or `NAME: NUMBER …`.
    fn line(&mut self, line: &[u8]) {
        if line.starts_with(b"* ") {
            self.notices += 1;
            if let Some(rest) = line.strip_prefix(b"* welcome, guest") {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                self.guest = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|n| n.parse().ok());
            }
            return;
        }
        let seq = line
            .windows(2)
            .position(|w| w == b": ")
            .map(|at| &line[at + 2..])
            .and_then(|rest| {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                std::str::from_utf8(&rest[..digits])
                    .ok()?
                    .parse::<u64>()
                    .ok()
            });
        if seq == Some(self.next_seq) {
            self.lines += 1;
            self.next_seq += 1;
        } else {
            self.disorder += 1;
        }
    }
}

/// The clients of one room; the first is the sender.
pub struct Room {
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    /// The client that joined last (the highest guest number), whose
    /// lines acknowledge the sender's.
    last: usize,
    buf: Vec<u8>,
    /// The number the next line sent carries.
    next_seq: u64,
    window: u64,
}

impl Room {
    /// Joins `count` (at least 2) clients to the room at `addr`, one after
    /// the other, and waits until each has read its greeting and the
    /// notice of every client that joined after it (by the guest numbers
    /// the greetings give: `guestN` expects one for each number above N).
    pub fn join(addrs: &[SocketAddr], count: usize, window: usize) -> Result<Room> {
        if count < 2 {
            bail!("a chat room needs a sender and a receiver");
        }
        let mut room = Room {
            poll: Poll::new().context("create a poll")?,
            events: Events::with_capacity(count.min(4096)),
            clients: Vec::with_capacity(count),
            last: count - 1,
            buf: vec![0; READ_BUFFER],
            next_seq: 0,
            window: window.max(1) as u64,
        };
        let started = Instant::now();
        for index in 0..count {
            // In turn over the servers: the sender (the first) on the first.
            let std_stream = load::connect(addrs[index % addrs.len()])?;
            std_stream.set_nonblocking(true).context("non-blocking")?;
            let mut stream = TcpStream::from_std(std_stream);
            room.poll
                .registry()
                .register(&mut stream, Token(index), Interest::READABLE)
                .context("register a client")?;
            room.clients.push(Client {
                stream,
                partial: Vec::new(),
                notices: 0,
                guest: None,
                lines: 0,
                next_seq: 0,
                disorder: 0,
                closed: false,
            });
            // Read the notices as they come, as a client of the room would.
            if index % 32 == 31 {
                room.pump(Some(Duration::ZERO))?;
            }
        }
        // A client gets its greeting and a notice for each client after it.
        let missing = |room: &Room| {
            let newest = room.clients.iter().filter_map(|c| c.guest).max();
            room.clients
                .iter()
                .filter(|c| match (c.guest, newest) {
                    (Some(n), Some(newest)) => c.notices < 1 + newest.saturating_sub(n),
                    _ => true,
                })
                .count()
        };
        loop {
            let short = missing(&room);
            if short == 0 {
                break;
            }
            if started.elapsed() > SETTLE_LIMIT {
                bail!(
                    "the room did not settle within {SETTLE_LIMIT:?}: {short} clients still \
                     miss their greeting or join notices"
                );
            }
            room.pump(Some(Duration::from_millis(50)))?;
        }
        room.last = (0..count)
            .max_by_key(|&i| room.clients[i].guest)
            .unwrap_or(count - 1);
        if room.last == 0 {
            bail!("the sender was greeted as the newest member");
        }
        if let Some(closed) = room.clients.iter().position(|c| c.closed) {
            bail!("client {closed} was disconnected while joining");
        }
        Ok(room)
    }

    /// Waits up to `timeout` for readable clients and reads them.
    fn pump(&mut self, timeout: Option<Duration>) -> Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(err) => return Err(err).context("poll"),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for index in ready {
            self.read(index);
        }
        Ok(())
    }

    /// Reads what client `index` has. A read that fills less than the
    /// buffer took everything queued; bytes arriving after it raise a new
    /// (edge-triggered) event, so one read per event is enough then.
    fn read(&mut self, index: usize) {
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        loop {
            match client.stream.read(&mut self.buf) {
                Ok(0) => {
                    client.closed = true;
                    return;
                }
                Ok(n) => {
                    client.take(&self.buf[..n]);
                    if n < self.buf.len() {
                        return;
                    }
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    client.closed = true;
                    return;
                }
            }
        }
    }

    /// One measured round of `duration` of sending (see the module's
    /// documentation).
    pub fn round(&mut self, duration: Duration) -> Result<ChatRound> {
        let last = self.last;
        let receivers = self.clients.len() as u64 - 1;
        for client in &mut self.clients[1..] {
            client.lines = 0;
            if client.closed {
                bail!("a receiver was disconnected");
            }
        }
        let first = self.next_seq;
        let mut sent = 0u64;
        let mut outbox: Vec<u8> = Vec::new();
        let mut written = 0;
        let started = Instant::now();
        let stop_sending = started + duration;
        let give_up = stop_sending + DRAIN_LIMIT;
        let finished = loop {
            let now = Instant::now();
            let sending = now < stop_sending;
            if sending {
                let acked = self.clients[last].lines;
                while sent < acked + self.window {
                    outbox.extend_from_slice(format!("{:010}", first + sent).as_bytes());
                    outbox.extend_from_slice(FILLER);
                    outbox.push(b'\n');
                    sent += 1;
                }
            }
            if written < outbox.len() {
                match self.clients[0].stream.write(&outbox[written..]) {
                    Ok(n) => written += n,
                    Err(err)
                        if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    }
                    Err(err) => return Err(err).context("the sender's write"),
                }
                if written == outbox.len() {
                    outbox.clear();
                    written = 0;
                }
            }
            if !sending && outbox.is_empty() && self.clients[1..].iter().all(|c| c.lines >= sent) {
                break Some(Instant::now());
            }
            if now > give_up || self.clients.iter().any(|c| c.closed) {
                break None;
            }
            // Wake for the sender's next write, or the end of sending.
            let wait = if !outbox.is_empty() {
                Duration::from_millis(1)
            } else if sending {
                stop_sending
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(10))
            } else {
                Duration::from_millis(10)
            };
            self.pump(Some(wait))?;
        };
        self.next_seq = first + sent;
        let disorder: u64 = self.clients[1..].iter().map(|c| c.disorder).sum();
        let missing: u64 = self.clients[1..]
            .iter()
            .map(|c| sent.saturating_sub(c.lines))
            .sum();
        let closed = self.clients.iter().filter(|c| c.closed).count();
        if disorder > 0 || missing > 0 || closed > 0 || finished.is_none() {
            let short = self.clients[1..].iter().filter(|c| c.lines < sent).count();
            return Err(anyhow!(
                "LOST: {missing} of {} deliveries missing at {short} receivers, {disorder} \
                 out of order or repeated, {closed} clients disconnected{}",
                sent * receivers,
                if finished.is_none() {
                    format!(" (not all delivered within {DRAIN_LIMIT:?} of the last line)")
                } else {
                    String::new()
                }
            ));
        }
        let took = finished
            .unwrap_or_else(Instant::now)
            .duration_since(started);
        let secs = took.as_secs_f64();
        Ok(ChatRound {
            deliveries_per_sec: (sent * receivers) as f64 / secs,
            lines_per_sec: sent as f64 / secs,
            lines: sent,
            deliveries: sent * receivers,
            took,
            server_cpu: Duration::ZERO,
        })
    }
}
