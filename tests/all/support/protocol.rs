//! Clients and checks for protocol-world plugins: [`LineClient`] (a
//! connection read line by line), and the behaviour every build of the
//! `chat` example must show, whatever language (or world: the
//! handler-world `handler-chat` too) it was written in ([`check_chat`], [`check_chat_cuts_a_client_that_never_reads`],
//! [`check_chat_cuts_an_endless_line`]).
//! `proto-echo` and `proto-http-hello` are held to the handler world's
//! own checks (`checks::check_echo`, `checks::check_http`).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::{Host, SOON, connect};

/// A connection whose replies are read a line at a time.
pub struct LineClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = connect(addr);
        let writer = stream.try_clone().expect("clone the stream");
        Self {
            writer,
            reader: BufReader::new(stream),
        }
    }

    /// Connects to `addr` with a 4 KiB receive buffer, so that a client
    /// that stops reading backs up into the host sooner.
    pub fn connect_with_small_buffer(addr: SocketAddr) -> Self {
        let stream = super::clients::connect_with_small_buffer(addr);
        Self {
            writer: stream.try_clone().expect("clone the stream"),
            reader: BufReader::new(stream),
        }
    }

    /// The next line, without its `\n`; panics at the end of the stream
    /// or after the read timeout.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("a line");
        assert!(n > 0, "the connection closed instead of sending a line");
        line.trim_end_matches('\n').to_string()
    }

    /// Reads the next line and checks it is `expected`.
    pub fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends `line` and a `\n`.
    pub fn say(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// Whether the host closed the connection: reads until the end of the
    /// stream (true) or a reset; false if a line arrives instead.
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(err) => matches!(
                err.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ),
        }
    }
}

/// A chat client that read its greeting: its name is `guestN`.
fn join(addr: SocketAddr, n: u32) -> LineClient {
    let mut client = LineClient::connect(addr);
    client.expect(&format!("* welcome, guest{n} (/nick NAME to rename)"));
    client
}

/// chat: arrival names and notices, lines to everyone else, /nick, /who,
/// the leave notice. Needs a fresh host (the first client is guest1).
pub fn check_chat(host: &Host) {
    let addr = host.addr();
    let mut a = join(addr, 1);
    let mut b = join(addr, 2);
    a.expect("* guest2 joined");
    let mut c = join(addr, 3);
    a.expect("* guest3 joined");
    b.expect("* guest3 joined");

    a.say("hello, room");
    b.expect("guest1: hello, room");
    c.expect("guest1: hello, room");

    a.say("/nick alice");
    a.expect("* you are now alice");
    b.expect("* guest1 is now alice");
    c.expect("* guest1 is now alice");
    b.say("/nick alice");
    b.expect("* alice is taken");
    b.say("/nick two words");
    b.expect("* a name is 1 to 32 characters without spaces");
    b.say("/who");
    b.expect("* here: alice, guest2, guest3");

    // Lines split across packets and several in one arrive whole.
    b.send(b"split ");
    b.send(b"line\r\nsecond\n");
    a.expect("guest2: split line");
    a.expect("guest2: second");
    c.expect("guest2: split line");
    c.expect("guest2: second");

    drop(c);
    a.expect("* guest3 left");
    b.expect("* guest3 left");
    b.say("still here");
    a.expect("guest2: still here");
}

/// chat, on a host started with a small `--write-buffer`: a member that
/// never reads is disconnected once its output backs up past the bound,
/// and the room goes on for the others. Returns the lurker's name.
pub fn check_chat_cuts_a_client_that_never_reads(host: &Host) -> String {
    let addr = host.addr();
    let mut talker = join(addr, 1);
    // The lurker reads its greeting, then nothing more; a small receive
    // buffer makes its backlog reach the host sooner.
    let mut lurker = LineClient::connect_with_small_buffer(addr);
    lurker.expect("* welcome, guest2 (/nick NAME to rename)");
    talker.expect("* guest2 joined");
    let mut reader = join(addr, 3);
    talker.expect("* guest3 joined");

    let line = "x".repeat(4000);
    let expected = format!("guest1: {line}");
    // Bounded: far more than any kernel buffers plus the host's bound.
    for round in 0..4096 {
        talker.say(&line);
        let got = reader.line();
        if got == "* guest2 left" {
            talker.expect("* guest2 left");
            // The room still works for those who read.
            talker.say("after");
            loop {
                let next = reader.line();
                if next == "guest1: after" {
                    break;
                }
                assert_eq!(next, expected, "unexpected line after the cut");
            }
            drop(lurker);
            return "guest2".into();
        }
        assert_eq!(got, expected, "line {round} to the reader");
    }
    panic!("the lurker was never disconnected");
}

/// chat: a line still unfinished past 4 KiB disconnects its sender, the
/// room is told it left, and goes on. Needs a fresh host.
pub fn check_chat_cuts_an_endless_line(host: &Host) {
    let addr = host.addr();
    let mut stayer = join(addr, 1);
    let mut sender = join(addr, 2);
    stayer.expect("* guest2 joined");
    sender.send(&[b'z'; 4097]);
    assert!(
        sender.is_closed(),
        "a line over 4 KiB did not disconnect its sender"
    );
    stayer.expect("* guest2 left");
    host.expect_log("sent a line longer than 4 KiB", SOON);
    let mut other = join(addr, 3);
    stayer.expect("* guest3 joined");
    stayer.say("hello");
    other.expect("guest1: hello");
}
