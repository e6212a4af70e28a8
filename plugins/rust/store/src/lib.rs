//! The shared store from a plughost plugin: buckets of keys and values
//! (the standard `wasi:keyvalue` interfaces, with compare-and-swap from
//! `plughost:handler/swap`) and publish/subscribe topics
//! (`plughost:handler/topics`).
//!
//! The operator grants a listener a store with `--store memory` (in the
//! host process) or `--store redis://HOST:PORT` (shared by every host
//! process on that Redis). Without one every call fails with
//! [`Error::NoStore`], so a plugin can serve with or without a store.
//!
//! ```
//! # plughost_store::testing::set_available(true);
//! let visits = plughost_store::open("default").unwrap();
//! assert_eq!(visits.increment("visits", 1).unwrap(), 1);
//! assert_eq!(visits.increment("visits", 1).unwrap(), 2);
//! assert_eq!(visits.get("visits").unwrap().as_deref(), Some(&b"2"[..]));
//! ```
//!
//! Natively the store is off (a native plugin has none); a unit test turns
//! on a map of the calling thread with [`testing::set_available`], and
//! [`testing`] shows what was published.
#![deny(missing_docs)]

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(not(target_arch = "wasm32"))]
use native as imp;
#[cfg(not(target_arch = "wasm32"))]
pub use native::testing;
#[cfg(target_arch = "wasm32")]
use wasm as imp;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The listener has no store (`--store`).
    NoStore,
    /// Out of bounds: a key over 1 KiB, a value over 1 MiB, a topic name
    /// over 256 bytes, a message over 64 KiB, a full memory store, a value
    /// that is not a number to increment — or, for `subscribe`, a world
    /// that cannot receive messages.
    Invalid(String),
    /// The backend cannot be reached (Redis is down): nothing was done.
    Unavailable(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoStore => f.write_str("this listener has no store (host run --store)"),
            Error::Invalid(message) => f.write_str(message),
            Error::Unavailable(message) => write!(f, "store unavailable: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// A bucket of the store: keys (at most 1 KiB) and values (at most 1 MiB).
pub struct Bucket(imp::Bucket);

/// Opens the bucket `name` (1 to 256 bytes; any name: buckets need no
/// creating).
pub fn open(name: &str) -> Result<Bucket, Error> {
    imp::open(name).map(Bucket)
}

impl Bucket {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.0.get(key)
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.0.set(key, value)
    }

    /// Removes `key` (nothing if it is absent).
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.0.delete(key)
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.0.exists(key)
    }

    /// Every key of the bucket (fetched page by page).
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        self.0.keys()
    }

    /// Adds `delta` to the counter `key` (absent: 0) in one atomic step
    /// and returns the new value. Counters are stored as decimal text.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        self.0.increment(key, delta)
    }

    /// Sets `key` to `value` if it now holds `expected` (`None`: absent),
    /// in one atomic step; returns whether it did.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        self.0.compare_and_swap(key, expected, value)
    }
}

/// Sends `message` (at most 64 KiB) to every subscriber of `topic`, in
/// this host process or, with Redis, any other. A publisher's messages
/// arrive in order; nothing is kept for subscribers that come later.
pub fn publish(topic: &str, message: &[u8]) -> Result<(), Error> {
    imp::publish(topic, message)
}

/// Messages of `topic` arrive from now on (in the protocol world, as
/// `message_received`; other worlds cannot subscribe). A subscriber more
/// than 1,024 messages behind loses the oldest.
pub fn subscribe(topic: &str) -> Result<(), Error> {
    imp::subscribe(topic)
}

/// Stops messages of `topic`.
pub fn unsubscribe(topic: &str) {
    imp::unsubscribe(topic)
}
