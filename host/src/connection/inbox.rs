//! The topic messages of one handler-world connection: its instance's
//! subscriptions, and the [`Doorbell`] their mailbox rings, so that a
//! handler waiting for its client (`read-or-message`) also wakes for a
//! message — on a thread (`poll` on the socket and the doorbell) and on an
//! event loop (both registered with the loop) alike.
//!
//! Made at the first `subscribe`: a connection that never subscribes
//! costs nothing, and one that does costs one descriptor (the doorbell).

use std::io;
use std::sync::Arc;

use crate::store::topics::{Mailbox, Message, Subscriptions};
use crate::sys::doorbell::Doorbell;

/// What a `read-or-message` returned first.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// This many bytes from the client, in the connection's receive
    /// buffer ([`Connection::received`](super::Connection::received)); 0
    /// at the end of its stream.
    Data(usize),
    /// A message on a subscribed topic.
    Message(Message),
}

/// A connection's subscriptions and the doorbell their mailbox rings.
pub struct Inbox {
    subscriptions: Subscriptions,
    doorbell: Arc<Doorbell>,
    /// Which source the next call looks at first, when both have
    /// something: they take turns, so that neither a client that never
    /// pauses nor a busy topic starves the other.
    message_first: bool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("doorbell", &self.doorbell)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox with no subscription yet.
    pub fn new() -> io::Result<Self> {
        let doorbell = Arc::new(Doorbell::new()?);
        let ring = Arc::clone(&doorbell);
        Ok(Self {
            subscriptions: Subscriptions::new(Mailbox::new(move || ring.ring())),
            doorbell,
            message_first: false,
        })
    }

    /// The subscriptions (subscribe and unsubscribe through them).
    pub fn subscriptions(&mut self) -> &mut Subscriptions {
        &mut self.subscriptions
    }

    /// What the mailbox rings after each delivery.
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    /// The next arrival from what is already here: a waiting message, or
    /// what `receive` (a read that does not wait; `None` when no byte is
    /// there) gets from the socket, in the order that is this call's turn.
    /// Answers the doorbell first, so a message delivered after this call
    /// looked rings it again.
    pub fn next<E>(
        &mut self,
        receive: impl FnOnce() -> Result<Option<usize>, E>,
    ) -> Result<Option<Arrival>, E> {
        self.doorbell.answer();
        let message_first = self.message_first;
        self.message_first = !message_first;
        if message_first && let Some(message) = self.subscriptions.next() {
            return Ok(Some(Arrival::Message(message)));
        }
        if let Some(n) = receive()? {
            return Ok(Some(Arrival::Data(n)));
        }
        Ok(self.subscriptions.next().map(Arrival::Message))
    }
}

/// Subscribes `conn` to the topic `room` of a fresh in-memory store, which
/// it returns (for tests of `read-or-message` in both serving modes).
#[cfg(test)]
pub(crate) fn subscribed_to_room(conn: &mut super::Connection) -> Arc<crate::store::ListenerStore> {
    let spec = crate::store::StoreSpec::Memory;
    let backend = crate::store::Backends::default().open(&spec);
    let metrics = crate::metrics::StoreMetrics::detached();
    let store = crate::store::ListenerStore::new(spec, "test".into(), backend, metrics).unwrap();
    let store = Arc::new(store);
    let inbox = conn.inbox().unwrap();
    inbox.subscriptions().subscribe(&store, "room").unwrap();
    store
}
