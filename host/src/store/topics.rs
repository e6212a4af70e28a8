//! Fan-out of topic messages to the subscribers of this process.
//!
//! A subscriber is a [`Mailbox`]: a bounded queue and a way to wake its
//! owner (a reactor's `mio` waker). The [`Registry`] maps each backend
//! channel to the mailboxes subscribed to it; a backend hands every
//! message it receives to [`Registry::deliver`] (the memory backend as it
//! is published, the Redis one from its subscriber thread). Delivery never
//! waits for a subscriber: past [`QUEUE_LIMIT`] undelivered messages the
//! oldest is dropped, counted and logged once per overflow.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use super::{ListenerStore, StoreError};
use crate::metrics::StoreMetrics;

/// Undelivered messages a subscriber may hold.
pub const QUEUE_LIMIT: usize = 1024;

/// A message waiting for its subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic, as the plugin named it.
    pub topic: Arc<str>,
    /// The bytes published.
    pub body: Arc<[u8]>,
}

/// One subscriber's queue.
pub struct Mailbox {
    queue: Mutex<Queue>,
    wake: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    /// Set at the first drop, cleared when the queue empties: one log
    /// line per overflow.
    overflowing: bool,
}

impl Mailbox {
    /// A mailbox whose owner `wake` is called after each delivery.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            wake: Box::new(wake),
        })
    }

    /// Queues `message` (dropping the oldest if full, counted in
    /// `metrics`) and wakes the owner.
    fn push(&self, message: Message, metrics: &StoreMetrics) {
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.messages.len() >= QUEUE_LIMIT {
                queue.messages.pop_front();
                metrics.dropped();
                if !std::mem::replace(&mut queue.overflowing, true) {
                    tracing::warn!(
                        topic = %message.topic,
                        "a subscriber fell {QUEUE_LIMIT} messages behind: dropping its oldest \
                         until it catches up"
                    );
                }
            }
            queue.messages.push_back(message);
        }
        metrics.delivered();
        (self.wake)();
    }

    /// The oldest message waiting, if any.
    pub fn pop(&self) -> Option<Message> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let message = queue.messages.pop_front();
        if queue.messages.is_empty() {
            queue.overflowing = false;
        }
        message
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .messages
            .len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The topics one instance subscribed to, and its mailbox; dropping it
/// unsubscribes from all.
pub struct Subscriptions {
    mailbox: Arc<Mailbox>,
    topics: HashSet<String>,
    store: Option<Arc<ListenerStore>>,
}

impl Subscriptions {
    /// Subscriptions delivering into `mailbox`.
    pub fn new(mailbox: Arc<Mailbox>) -> Self {
        Self {
            mailbox,
            topics: HashSet::new(),
            store: None,
        }
    }

    /// Subscribes to `topic` of `store`.
    pub fn subscribe(&mut self, store: &Arc<ListenerStore>, topic: &str) -> Result<(), StoreError> {
        store.subscribe(topic, &self.mailbox)?;
        self.topics.insert(topic.to_string());
        self.store = Some(Arc::clone(store));
        Ok(())
    }

    /// Unsubscribes from `topic`.
    pub fn unsubscribe(&mut self, topic: &str) {
        if let Some(store) = &self.store
            && self.topics.remove(topic)
        {
            store.unsubscribe(topic, &self.mailbox);
        }
    }

    /// The oldest message waiting.
    pub fn next(&self) -> Option<Message> {
        self.mailbox.pop()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.mailbox.is_empty()
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        if let Some(store) = &self.store {
            for topic in self.topics.drain() {
                store.unsubscribe(&topic, &self.mailbox);
            }
        }
    }
}

struct Subscriber {
    mailbox: Weak<Mailbox>,
    topic: Arc<str>,
    /// The subscribing listener's counters.
    metrics: StoreMetrics,
}

/// Which mailboxes of this process are subscribed to which channel.
#[derive(Default)]
pub struct Registry {
    channels: RwLock<HashMap<String, Vec<Subscriber>>>,
}

impl Registry {
    /// Subscribes `mailbox` to `channel` (which the plugin calls `topic`):
    /// `None` if it already was, else whether it is the channel's first
    /// subscriber in this process.
    pub fn add(
        &self,
        channel: &str,
        topic: &str,
        mailbox: &Arc<Mailbox>,
        metrics: &StoreMetrics,
    ) -> Option<bool> {
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let subscribers = channels.entry(channel.to_string()).or_default();
        subscribers.retain(|s| s.mailbox.strong_count() > 0);
        if subscribers
            .iter()
            .any(|s| std::ptr::eq(s.mailbox.as_ptr(), Arc::as_ptr(mailbox)))
        {
            return None;
        }
        subscribers.push(Subscriber {
            mailbox: Arc::downgrade(mailbox),
            topic: topic.into(),
            metrics: metrics.clone(),
        });
        Some(subscribers.len() == 1)
    }

    /// Unsubscribes `mailbox` from `channel`; true if that left the
    /// channel without subscribers in this process.
    pub fn remove(&self, channel: &str, mailbox: &Arc<Mailbox>) -> bool {
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(subscribers) = channels.get_mut(channel) else {
            return false;
        };
        let before = subscribers.len();
        subscribers.retain(|s| {
            s.mailbox.strong_count() > 0 && !std::ptr::eq(s.mailbox.as_ptr(), Arc::as_ptr(mailbox))
        });
        if subscribers.is_empty() {
            channels.remove(channel);
            return before > 0;
        }
        false
    }

    /// Hands `body` to every subscriber of `channel`; returns how many.
    pub fn deliver(&self, channel: &str, body: &[u8]) -> usize {
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        let Some(subscribers) = channels.get(channel) else {
            return 0;
        };
        let body: Arc<[u8]> = body.into();
        let mut delivered = 0;
        for subscriber in subscribers {
            if let Some(mailbox) = subscriber.mailbox.upgrade() {
                let message = Message {
                    topic: Arc::clone(&subscriber.topic),
                    body: Arc::clone(&body),
                };
                mailbox.push(message, &subscriber.metrics);
                delivered += 1;
            }
        }
        delivered
    }

    /// Every channel with a subscriber in this process (what a Redis
    /// subscriber connection must listen to after reconnecting).
    pub fn channels(&self) -> Vec<String> {
        self.channels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn mailbox() -> (Arc<Mailbox>, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakes);
        let mailbox = Mailbox::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        (mailbox, wakes)
    }

    #[test]
    fn messages_reach_every_subscriber_in_order() {
        let registry = Registry::default();
        let m = StoreMetrics::detached();
        let (a, a_wakes) = mailbox();
        let (b, _) = mailbox();
        assert_eq!(registry.add("c", "room", &a, &m), Some(true));
        assert_eq!(registry.add("c", "room", &b, &m), Some(false));
        assert_eq!(registry.add("c", "room", &a, &m), None);
        assert_eq!(registry.deliver("c", b"one"), 2);
        assert_eq!(registry.deliver("c", b"two"), 2);
        assert_eq!(registry.deliver("other", b"x"), 0);
        for mailbox in [&a, &b] {
            assert_eq!(&*mailbox.pop().unwrap().body, b"one");
            let second = mailbox.pop().unwrap();
            assert_eq!((&*second.topic, &*second.body), ("room", &b"two"[..]));
            assert!(mailbox.pop().is_none());
        }
        assert_eq!(a_wakes.load(Ordering::Relaxed), 2);
        assert!(!registry.remove("c", &a));
        assert!(registry.remove("c", &b));
        assert!(registry.channels().is_empty());
    }

    #[test]
    fn a_subscriber_that_never_reads_keeps_only_the_newest() {
        let registry = Registry::default();
        let m = StoreMetrics::detached();
        let (slow, _) = mailbox();
        registry.add("c", "t", &slow, &m);
        for i in 0..QUEUE_LIMIT + 10 {
            registry.deliver("c", i.to_string().as_bytes());
        }
        assert_eq!(slow.len(), QUEUE_LIMIT);
        assert_eq!(&*slow.pop().unwrap().body, b"10");
    }

    #[test]
    fn a_dropped_mailbox_leaves_its_channels() {
        let registry = Registry::default();
        let m = StoreMetrics::detached();
        let (gone, _) = mailbox();
        registry.add("c", "t", &gone, &m);
        drop(gone);
        assert_eq!(registry.deliver("c", b"x"), 0);
        let (next, _) = mailbox();
        assert_eq!(registry.add("c", "t", &next, &m), Some(true));
    }
}
