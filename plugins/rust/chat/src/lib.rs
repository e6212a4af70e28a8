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
//!
//! With a shared store (`host run --plugin chat --store redis://…`) every
//! instance on every host sharing it is one room: a line goes to the
//! sender's instance's members at once and out through the topic
//! [`TOPIC`] to the other instances, which hand it to theirs, and
//! guest numbers come from a counter in the store, so they are unique
//! across hosts. (`/nick` names and `/who` are per instance.) If the store
//! cannot be reached the instance serves its own members alone, says so
//! to the sender, and tries the store again every second.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use plughost_protocol::store::{self, Error as StoreError};
use plughost_protocol::{LostReason, Protocol, Timer, Transport, WriteError};

/// Longest line a client may send, in bytes.
pub const MAX_LINE: usize = 4096;
/// Longest name.
pub const MAX_NAME: usize = 32;
/// The topic the instances of one room share, with a store.
pub const TOPIC: &str = "chat-room";
/// The store bucket holding the room's counters.
pub const BUCKET: &str = "chat";
/// How long after the store failed it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The room.
#[derive(Default)]
pub struct Chat {
    /// Members by transport, with their names.
    names: BTreeMap<Transport, String>,
    /// Who has which name.
    by_name: HashMap<String, Transport>,
    /// Bytes of an unfinished line, per member.
    partial: HashMap<Transport, Vec<u8>>,
    /// The last guest number given (without a store).
    guests: u64,
    /// This instance's number in the store, while it is subscribed to
    /// [`TOPIC`]; `None` serves the members of this instance alone.
    shared: Option<u64>,
    /// The retry of the store after it failed.
    retry: Option<Timer>,
}

impl Chat {
    /// Sends `line` to `to`, dropping a member that cannot keep up.
    fn send(to: Transport, line: &[u8]) {
        if let Err(WriteError::BufferFull) = to.write(line) {
            to.abort("output buffer full: the client is not reading the room");
        }
    }

    /// Sends `line` to every member but `from`: at once to this
    /// instance's members (those here now: a member who joins later never
    /// gets it), and through the topic to the other instances when the
    /// room is shared. If publishing fails, `from` is told.
    fn broadcast(&mut self, from: Transport, line: &[u8]) {
        self.deliver(Some(from), line);
        if let Some(origin) = self.shared {
            let mut message = format!("{origin} ").into_bytes();
            message.extend_from_slice(line);
            if let Err(err) = store::publish(TOPIC, &message) {
                Self::send(
                    from,
                    format!("* only this host hears you: {err}\n").as_bytes(),
                );
                self.lost_store(&err);
            }
        }
    }

    /// Sends `line` to this instance's members, but `except`.
    fn deliver(&self, except: Option<Transport>, line: &[u8]) {
        for &to in self.names.keys().filter(|&&to| Some(to) != except) {
            Self::send(to, line);
        }
    }

    /// Joins the shared room if the listener has a store; on an outage
    /// serves alone and tries again later.
    fn join_store(&mut self) {
        let joined = store::subscribe(TOPIC)
            .and_then(|()| store::open(BUCKET).and_then(|bucket| bucket.increment("instances", 1)));
        match joined {
            Ok(origin) => self.shared = Some(origin),
            Err(StoreError::NoStore) => {}
            Err(err) => self.lost_store(&err),
        }
    }

    /// The store failed: serve alone until the retry.
    fn lost_store(&mut self, err: &StoreError) {
        if self.shared.take().is_some() {
            store::unsubscribe(TOPIC);
        }
        if self.retry.is_none() {
            eprintln!("chat: the shared room is unreachable ({err}); serving this host's members");
            self.retry = plughost_protocol::call_later(RETRY).ok();
        }
    }

    /// The next guest name: from the store's counter when shared.
    fn next_guest(&mut self) -> String {
        if self.shared.is_some() {
            let counted = store::open(BUCKET).and_then(|bucket| bucket.increment("guests", 1));
            if let Ok(n) = counted {
                return format!("guest{n}");
            }
        }
        self.guests += 1;
        format!("guest{}", self.guests)
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
        let mut chat = Self::default();
        chat.join_store();
        Ok(chat)
    }

    fn connection_made(&mut self, t: Transport) {
        // A name nobody took with /nick.
        let name = loop {
            let name = self.next_guest();
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

    fn timer_fired(&mut self, timer: Timer) {
        if self.retry == Some(timer) {
            self.retry = None;
            self.join_store();
        }
    }

    fn message_received(&mut self, topic: &str, message: &[u8]) {
        if topic != TOPIC {
            return;
        }
        // `ORIGIN line`, as `broadcast` publishes it; this instance's own
        // lines reached its members when they were sent.
        let mut parts = message.splitn(2, |&b| b == b' ');
        let origin = parts
            .next()
            .and_then(|origin| std::str::from_utf8(origin).ok()?.parse::<u64>().ok());
        let (Some(origin), Some(line)) = (origin, parts.next()) else {
            return;
        };
        if Some(origin) != self.shared {
            self.deliver(None, line);
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
    fn with_a_store_lines_go_through_the_topic_to_every_host() {
        store::testing::set_available(true);
        let mut room = Harness::<Chat>::start().unwrap();
        let (a, b) = (room.connect(), room.connect());
        assert_eq!(
            text(&mut room, a),
            "* welcome, guest1 (/nick NAME to rename)\n* guest2 joined\n"
        );
        room.take_output(b);
        room.receive(a, b"hi\n");
        assert_eq!(text(&mut room, b), "guest1: hi\n");
        assert_eq!(text(&mut room, a), "");
        // A line from another host's instance (number 7) reaches both.
        room.message(TOPIC, b"7 guest9: from afar\n");
        assert_eq!(text(&mut room, a), "guest9: from afar\n");
        assert_eq!(text(&mut room, b), "guest9: from afar\n");
        store::testing::set_available(false);
    }

    #[test]
    fn its_own_lines_coming_back_through_the_topic_are_not_delivered_again() {
        store::testing::set_available(true);
        let mut room = Harness::<Chat>::start().unwrap();
        let own = room.state().shared.expect("shared with a store");
        let a = room.connect();
        room.take_output(a);
        // A notice of this instance that comes back after a member
        // joined (the topic delivers late) is not news to that member.
        room.message(TOPIC, format!("{own} 99 * guest1 joined\n").as_bytes());
        assert_eq!(text(&mut room, a), "");
        room.message(TOPIC, b"garbled");
        assert_eq!(text(&mut room, a), "");
        store::testing::set_available(false);
    }

    #[test]
    fn without_a_store_the_room_is_this_instance() {
        store::testing::set_available(false);
        let mut room = Harness::<Chat>::start().unwrap();
        assert_eq!(room.state().shared, None);
        let (a, b) = (room.connect(), room.connect());
        room.take_output(b);
        room.receive(a, b"hi\n");
        assert_eq!(text(&mut room, b), "guest1: hi\n");
    }

    #[test]
    fn an_endless_line_disconnects_its_sender() {
        let mut room = Harness::<Chat>::start().unwrap();
        let t = room.connect();
        room.receive(t, &vec![b'x'; MAX_LINE + 1]);
        assert!(matches!(room.ended(t), Some(Ended::Aborted(_))));
    }
}
