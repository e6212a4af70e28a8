//! The chat room of Twisted's tutorial, in the protocol world: one
//! instance holds the room, and every connection is a member.
//!
//! - A client is `guestN` on arrival (N counts up from 1) and is greeted
//!   with `* welcome, guestN (/nick NAME to rename)`.
//! - Every line a client sends goes to every other client as
//!   `NAME: line` (a line ends at `\n`; a `\r` before it is dropped).
//! - `/nick NAME` renames the client (1 to 32 characters, no spaces, not
//!   taken): the others see `* OLD is now NAME`, the client
//!   `* you are now NAME`. `/who` lists who is in the room.
//! - Joins and departures are announced as `* NAME joined` and
//!   `* NAME left`. Every notice starts with `* `.
//! - A client that stops reading never slows the room: its unsent output
//!   is bounded by the host, and a line that does not fit gets that client
//!   disconnected, with the reason in the host's log. A line longer than
//!   4 KiB disconnects its sender.

use std::collections::{BTreeMap, HashMap};

use plughost_protocol::{LostReason, Protocol, Transport, WriteError};

/// Longest line a client may send, in bytes.
pub const MAX_LINE: usize = 4096;
/// Longest name.
pub const MAX_NAME: usize = 32;

/// The room.
#[derive(Default)]
pub struct Chat {
    /// Members by transport, with their names.
    names: BTreeMap<Transport, String>,
    /// Who has which name.
    by_name: HashMap<String, Transport>,
    /// Bytes of an unfinished line, per member.
    partial: HashMap<Transport, Vec<u8>>,
    /// The last guest number given.
    guests: u64,
}

impl Chat {
    /// Sends `line` to `to`, dropping a member that cannot keep up.
    fn send(to: Transport, line: &[u8]) {
        if let Err(WriteError::BufferFull) = to.write(line) {
            to.abort("output buffer full: the client is not reading the room");
        }
    }

    /// Sends `line` to every member but `from`.
    fn broadcast(&self, from: Transport, line: &[u8]) {
        for &to in self.names.keys().filter(|&&to| to != from) {
            Self::send(to, line);
        }
    }

    /// One complete line from `from`.
    fn line(&mut self, from: Transport, line: &str) {
        let Some(name) = self.names.get(&from).cloned() else {
            return;
        };
        if let Some(wanted) = line.strip_prefix("/nick ") {
            self.rename(from, &name, wanted.trim());
        } else if line.trim() == "/who" {
            let mut who: Vec<&str> = self.names.values().map(String::as_str).collect();
            who.sort_unstable();
            Self::send(from, format!("* here: {}\n", who.join(", ")).as_bytes());
        } else {
            self.broadcast(from, format!("{name}: {line}\n").as_bytes());
        }
    }

    fn rename(&mut self, who: Transport, old: &str, new: &str) {
        let valid = !new.is_empty()
            && new.len() <= MAX_NAME
            && !new.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            let reply = format!("* a name is 1 to {MAX_NAME} characters without spaces\n");
            return Self::send(who, reply.as_bytes());
        }
        if self.by_name.contains_key(new) {
            return Self::send(who, format!("* {new} is taken\n").as_bytes());
        }
        self.by_name.remove(old);
        self.by_name.insert(new.to_string(), who);
        self.names.insert(who, new.to_string());
        self.broadcast(who, format!("* {old} is now {new}\n").as_bytes());
        Self::send(who, format!("* you are now {new}\n").as_bytes());
    }
}

impl Protocol for Chat {
    fn init() -> Result<Self, String> {
        Ok(Self::default())
    }

    fn connection_made(&mut self, t: Transport) {
        // A name nobody took with /nick.
        let name = loop {
            self.guests += 1;
            let name = format!("guest{}", self.guests);
            if !self.by_name.contains_key(&name) {
                break name;
            }
        };
        Self::send(
            t,
            format!("* welcome, {name} (/nick NAME to rename)\n").as_bytes(),
        );
        self.broadcast(t, format!("* {name} joined\n").as_bytes());
        self.by_name.insert(name.clone(), t);
        self.names.insert(t, name);
    }

    fn data_received(&mut self, t: Transport, data: &[u8]) {
        let mut pending = self.partial.remove(&t).unwrap_or_default();
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let raw = &pending[start..start + end];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = String::from_utf8_lossy(raw).into_owned();
            self.line(t, &line);
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            t.abort("sent a line longer than 4 KiB");
            return;
        }
        if !pending.is_empty() {
            self.partial.insert(t, pending);
        }
    }

    fn connection_lost(&mut self, t: Transport, _reason: LostReason) {
        self.partial.remove(&t);
        if let Some(name) = self.names.remove(&t) {
            self.by_name.remove(&name);
            self.broadcast(t, format!("* {name} left\n").as_bytes());
        }
    }
}

plughost_protocol::export!(Chat);

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_protocol::testing::{Ended, Harness};

    fn text(room: &mut Harness<Chat>, t: Transport) -> String {
        String::from_utf8(room.take_output(t)).unwrap()
    }

    #[test]
    fn lines_go_to_everyone_else_with_the_senders_name() {
        let mut room = Harness::<Chat>::start().unwrap();
        let a = room.connect();
        let b = room.connect();
        assert_eq!(
            text(&mut room, a),
            "* welcome, guest1 (/nick NAME to rename)\n* guest2 joined\n"
        );
        assert_eq!(
            text(&mut room, b),
            "* welcome, guest2 (/nick NAME to rename)\n"
        );
        room.receive(a, b"hel");
        room.receive(a, b"lo\r\nsecond\n");
        assert_eq!(text(&mut room, b), "guest1: hello\nguest1: second\n");
        assert_eq!(text(&mut room, a), "");
    }

    #[test]
    fn nick_renames_and_refuses_taken_names() {
        let mut room = Harness::<Chat>::start().unwrap();
        let (a, b) = (room.connect(), room.connect());
        room.take_output(a);
        room.take_output(b);
        room.receive(a, b"/nick alice\n");
        assert_eq!(text(&mut room, a), "* you are now alice\n");
        assert_eq!(text(&mut room, b), "* guest1 is now alice\n");
        room.receive(b, b"/nick alice\n");
        assert_eq!(text(&mut room, b), "* alice is taken\n");
        room.receive(b, b"hi\n");
        assert_eq!(text(&mut room, a), "guest2: hi\n");
        room.disconnect(a);
        assert_eq!(text(&mut room, b), "* alice left\n");
    }

    #[test]
    fn a_member_who_does_not_read_is_dropped_and_the_room_goes_on() {
        let mut room = Harness::<Chat>::start_with(&[], 256).unwrap();
        let (talker, lurker, reader) = (room.connect(), room.connect(), room.connect());
        let mut seen = String::new();
        for _ in 0..20 {
            room.receive(talker, b"a line of chat that fills buffers\n");
            seen += &text(&mut room, reader);
        }
        assert!(matches!(room.ended(lurker), Some(Ended::Aborted(_))));
        room.receive(talker, b"still here\n");
        seen += &text(&mut room, reader);
        assert!(seen.contains("* guest2 left\n"), "{seen}");
        assert!(seen.ends_with("guest1: still here\n"), "{seen}");
    }

    #[test]
    fn an_endless_line_disconnects_its_sender() {
        let mut room = Harness::<Chat>::start().unwrap();
        let t = room.connect();
        room.receive(t, &vec![b'x'; MAX_LINE + 1]);
        assert!(matches!(room.ended(t), Some(Ended::Aborted(_))));
    }
}
