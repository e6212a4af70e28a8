//! The chat room in the socketserver shape (the `handler` world): every
//! client has a handler of its own, in an instance of its own, and the
//! room is a topic of the shared store. The same room as the `chat`
//! example (the `protocol` world), told the same way:
//!
//! - A client is `guestN` on arrival (N counts up from 1 in the store, so
//!   it is unique across every host sharing it) and is greeted with
//!   `* welcome, guestN (/nick NAME to rename)`; the others see
//!   `* guestN joined`.
//! - Every line a client sends goes to every other client as
//!   `NAME: line`; `/nick NAME` renames (1 to 32 bytes, no spaces, not
//!   taken: names are reserved in the store with compare-and-swap), `/who`
//!   lists the room, and a departure is `* NAME left`.
//!
//! The handler waits for its client and for the room at once with
//! [`Conn::read_line_or_message`]: a line from the client is published to
//! the topic `room`, a message from the topic is written to the client.
//! Every message carries its sender's number, so a handler skips its own.
//!
//! A client that stops reading holds up only its own handler (its writes
//! wait, bounded by the host's idle timeout); the host keeps at most
//! 1,024 undelivered messages for it and drops the oldest. A line longer
//! than 4 KiB disconnects its sender. Without a store the client is told
//! `error: this listener has no store (host run --store)`.

use plughost_sdk::store::{self, Bucket};
use plughost_sdk::{Arrival, Conn, Error, Handler};

/// The topic the room is.
pub const TOPIC: &str = "room";
/// The bucket holding the guest counter and the names taken.
pub const BUCKET: &str = "room";
/// Longest line a client may send, in bytes.
pub const MAX_LINE: usize = 4096;
/// Longest name, in bytes.
pub const MAX_NAME: usize = 32;

/// The key reserving `name` in [`BUCKET`].
fn name_key(name: &str) -> String {
    format!("name:{name}")
}

/// One member of the room: its number (unique in the store), its name.
struct Member {
    id: u64,
    name: String,
    names: Bucket,
}

impl Member {
    /// Joins the room: the next guest name not taken, reserved.
    fn join() -> Result<Self, store::Error> {
        let names = store::open(BUCKET)?;
        loop {
            let id = names.increment("guests", 1)?;
            let name = format!("guest{id}");
            if names.compare_and_swap(&name_key(&name), None, id.to_string().as_bytes())? {
                return Ok(Self { id, name, names });
            }
        }
    }

    /// Sends `text` to the rest of the room.
    fn publish(&self, text: &str) -> Result<(), store::Error> {
        store::publish(TOPIC, format!("{} {text}", self.id).as_bytes())
    }

    /// `/nick wanted`: the reply for this client.
    fn rename(&mut self, wanted: &str) -> Result<String, store::Error> {
        let valid = !wanted.is_empty()
            && wanted.len() <= MAX_NAME
            && !wanted.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            return Ok(format!(
                "* a name is 1 to {MAX_NAME} characters without spaces\n"
            ));
        }
        let id = self.id.to_string();
        if !self
            .names
            .compare_and_swap(&name_key(wanted), None, id.as_bytes())?
        {
            return Ok(format!("* {wanted} is taken\n"));
        }
        let old = std::mem::replace(&mut self.name, wanted.to_string());
        self.names.delete(&name_key(&old))?;
        self.publish(&format!("* {old} is now {wanted}"))?;
        Ok(format!("* you are now {wanted}\n"))
    }

    /// `/who`: everyone whose name is reserved, sorted.
    fn who(&self) -> Result<String, store::Error> {
        let mut names: Vec<String> = self
            .names
            .keys()?
            .into_iter()
            .filter_map(|key| key.strip_prefix("name:").map(str::to_string))
            .collect();
        names.sort();
        Ok(format!("* here: {}\n", names.join(", ")))
    }

    /// One line from the client (without its line end): the reply for
    /// this client, if any.
    fn line(&mut self, line: &str) -> Result<Option<String>, store::Error> {
        if let Some(wanted) = line.strip_prefix("/nick ") {
            return self.rename(wanted.trim()).map(Some);
        }
        if line.trim() == "/who" {
            return self.who().map(Some);
        }
        self.publish(&format!("{}: {line}", self.name))?;
        Ok(None)
    }

    /// Leaves the room: the others are told, the name is free again.
    fn leave(&self) {
        // Best effort: with the store gone, there is no one to tell.
        let _ = self.publish(&format!("* {} left", self.name));
        let _ = self.names.delete(&name_key(&self.name));
    }
}

/// What to write to the client for a message from the room: nothing for
/// its own (or a malformed one).
fn from_room(own_id: u64, message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let (sender, text) = text.split_once(' ')?;
    (sender.parse::<u64>().ok()? != own_id).then(|| format!("{text}\n"))
}

/// Serves one member until it leaves.
fn serve(conn: &mut Conn, member: &mut Member) -> Result<(), String> {
    loop {
        let arrival = match conn.read_line_or_message(MAX_LINE + 1) {
            Ok(Some(arrival)) => arrival,
            Ok(None) => return Ok(()),
            Err(Error::LineTooLong) => {
                return Err(format!("sent a line longer than {} KiB", MAX_LINE / 1024));
            }
            Err(err) => return Err(err.to_string()),
        };
        match arrival {
            Arrival::Message(message) => {
                if let Some(text) = from_room(member.id, &message.data) {
                    conn.write_all(text.as_bytes())?;
                }
            }
            Arrival::Data(line) => {
                let line = String::from_utf8_lossy(&line);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                let line = line.strip_suffix('\r').unwrap_or(line);
                match member.line(line) {
                    Ok(Some(reply)) => conn.write_all(reply.as_bytes())?,
                    Ok(None) => {}
                    Err(err) => conn.write_all(format!("* not sent: {err}\n").as_bytes())?,
                }
            }
        }
    }
}

/// The handler: join, serve, leave.
pub struct HandlerChat;

impl Handler for HandlerChat {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let joined = store::subscribe(TOPIC).and_then(|()| Member::join());
        let mut member = match joined {
            Ok(member) => member,
            Err(err) => {
                conn.write_all(format!("error: {err}\n").as_bytes())?;
                return Err(err.to_string());
            }
        };
        // Announced before the greeting: a client that connects after this
        // one was greeted is not yet subscribed, so it never hears it.
        let name = member.name.clone();
        let served = member
            .publish(&format!("* {name} joined"))
            .map_err(|err| err.to_string())
            .and_then(|()| {
                conn.write_all(format!("* welcome, {name} (/nick NAME to rename)\n").as_bytes())?;
                serve(conn, &mut member)
            });
        member.leave();
        served
    }
}

plughost_sdk::export!(HandlerChat);

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_sdk::testing::Script;

    /// The room's messages published by this thread's handler, as text.
    fn published() -> Vec<String> {
        store::testing::take_published(false)
            .into_iter()
            .map(|(topic, message)| {
                assert_eq!(topic, TOPIC);
                String::from_utf8(message).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_member_joins_talks_hears_the_room_and_leaves() {
        store::testing::set_available(true);
        let mut client = Script::new([&b"hello\n"[..]])
            .then_message(TOPIC, b"7 guest7: hi there")
            .then_message(TOPIC, b"1 guest1: hello")
            .then_chunk(b"/nick al ice\n/nick alice\n/who\n");
        client.run::<HandlerChat>().unwrap();
        assert!(store::testing::is_subscribed(TOPIC));
        assert_eq!(
            String::from_utf8_lossy(client.written()),
            "* welcome, guest1 (/nick NAME to rename)\n\
             guest7: hi there\n\
             * a name is 1 to 32 characters without spaces\n\
             * you are now alice\n\
             * here: alice\n"
        );
        assert_eq!(
            published(),
            [
                "1 * guest1 joined",
                "1 guest1: hello",
                "1 * guest1 is now alice",
                "1 * alice left"
            ]
        );
    }

    #[test]
    fn a_taken_name_is_refused_and_guest_numbers_skip_it() {
        store::testing::set_available(true);
        let names = store::open(BUCKET).unwrap();
        assert!(names.compare_and_swap("name:bob", None, b"99").unwrap());
        assert!(names.compare_and_swap("name:guest1", None, b"99").unwrap());
        let mut client = Script::new([&b"/nick bob\n"[..]]);
        client.run::<HandlerChat>().unwrap();
        assert_eq!(
            String::from_utf8_lossy(client.written()),
            "* welcome, guest2 (/nick NAME to rename)\n* bob is taken\n"
        );
        assert_eq!(names.get("name:guest2").unwrap(), None, "freed on leaving");
    }

    #[test]
    fn an_endless_line_disconnects_its_sender() {
        store::testing::set_available(true);
        let mut client = Script::new([vec![b'x'; MAX_LINE + 2]]);
        let err = client.run::<HandlerChat>().unwrap_err();
        assert_eq!(err, "sent a line longer than 4 KiB");
        assert_eq!(published().last().unwrap(), "1 * guest1 left");
    }

    #[test]
    fn without_a_store_the_client_is_told() {
        store::testing::set_available(false);
        let mut client = Script::new([&b"hi\n"[..]]);
        let err = client.run::<HandlerChat>().unwrap_err();
        assert!(err.contains("no store"), "{err}");
        assert_eq!(
            String::from_utf8_lossy(client.written()),
            "error: this listener has no store (host run --store)\n"
        );
    }
}
