//! The shared store a listener may grant its plugin (`--store`): keys and
//! values (`wasi:keyvalue`, with compare-and-swap) and publish/subscribe
//! topics, so that connections, instances and host processes can
//! cooperate.
//!
//! Two backends behind one [`Backend`] trait: [`memory`] (in this process,
//! nothing to start) and [`redis`] (every host process pointed at one
//! Redis forms one service). A listener talks to its backend through a
//! [`ListenerStore`]: its namespace (keys and topics of other namespaces
//! are out of reach), the bounds on sizes, and its metrics. Messages fan
//! out to the subscribers of this process through [`topics`].

pub mod memory;
pub mod redis;
pub mod topics;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};

use self::topics::{Mailbox, Registry};
use crate::metrics::StoreMetrics;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 1024 * 1024;
/// Longest bucket or topic name, in bytes.
pub const MAX_NAME: usize = 256;
/// Longest message, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Keys the memory backend holds per namespace.
pub const MAX_KEYS_IN_MEMORY: usize = 100_000;
/// Keys one `list-keys` call returns at most.
pub const KEYS_PER_PAGE: usize = 100;

/// Which backend a listener's store lives in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreSpec {
    /// In this process.
    Memory,
    /// A Redis server, by URL (`redis://HOST:PORT[/DB]`).
    Redis(String),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "memory" {
            return Ok(Self::Memory);
        }
        if text.starts_with("redis://") || text.starts_with("redis+unix://") {
            return ::redis::Client::open(text)
                .map(|_| Self::Redis(text.to_string()))
                .map_err(|err| format!("bad Redis URL {text}: {err}"));
        }
        if text.starts_with("rediss://") {
            return Err(format!(
                "{text}: Redis over TLS (rediss://) is not supported; use redis:// on a trusted network"
            ));
        }
        Err(format!(
            "unknown store {text:?}: expected `memory` or a URL `redis://HOST:PORT`"
        ))
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(url) => f.write_str(&redacted(url)),
        }
    }
}

impl<'de> serde::Deserialize<'de> for StoreSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `url` without a password, for logs and `/status`.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Checks a namespace name: it becomes part of every key and channel.
pub fn check_namespace(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!("store namespace {name:?}: use 1 to {MAX_NAME} letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The request is out of bounds (a size, a full namespace, a value
    /// that is not a number).
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot be reached; nothing was done.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A key of a namespace's bucket.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    /// The listener's namespace.
    pub namespace: &'a str,
    /// The bucket (`wasi:keyvalue/store.open`'s identifier).
    pub bucket: &'a str,
    /// The key within it.
    pub key: &'a str,
}

/// One page of a bucket's keys.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys, without namespace or bucket.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` after the last.
    pub cursor: Option<u64>,
}

/// What a backend does; sizes are checked before any call reaches it.
pub trait Backend: Send + Sync {
    /// The value of `key`, if any.
    fn get(&self, key: Key<'_>) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` to `value`.
    fn set(&self, key: Key<'_>, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` (nothing if absent).
    fn delete(&self, key: Key<'_>) -> Result<(), StoreError>;
    /// Whether `key` exists.
    fn exists(&self, key: Key<'_>) -> Result<bool, StoreError>;
    /// A page of `bucket`'s keys from `cursor` (0: the first page).
    fn list_keys(&self, namespace: &str, bucket: &str, cursor: u64) -> Result<KeyPage, StoreError>;
    /// Adds `delta` to the number stored at `key` (absent: 0), atomically.
    fn increment(&self, key: Key<'_>, delta: u64) -> Result<u64, StoreError>;
    /// Sets `key` to `value` if it holds `expected` (`None`: absent).
    fn compare_and_swap(
        &self,
        key: Key<'_>,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, StoreError>;
    /// Sends `message` to every subscriber of `channel`.
    fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError>;
    /// This process's subscribers, which messages fan out to.
    fn registry(&self) -> &Arc<Registry>;
    /// The first subscriber of `channel` in this process appeared: the
    /// backend starts receiving it (Redis: SUBSCRIBE), and returns once it
    /// does.
    fn listen(&self, channel: &str) -> Result<(), StoreError>;
    /// The last subscriber of `channel` in this process left.
    fn unlisten(&self, channel: &str);
}

/// The backends of this process, one per [`StoreSpec`], opened on first
/// use and shared by every listener that names the same store.
#[derive(Default, Clone)]
pub struct Backends {
    open: Arc<Mutex<HashMap<StoreSpec, Arc<dyn Backend>>>>,
}

impl Backends {
    /// The backend `spec` names, opened if it is the first use. Redis is
    /// not required to be up: calls fail until it is.
    pub fn open(&self, spec: &StoreSpec) -> Arc<dyn Backend> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let backend = open.entry(spec.clone()).or_insert_with(|| match spec {
            StoreSpec::Memory => Arc::new(memory::MemoryBackend::default()),
            StoreSpec::Redis(url) => Arc::new(redis::RedisBackend::new(url)),
        });
        Arc::clone(backend)
    }
}

/// One listener's view of its store: the namespace it is confined to,
/// the bounds, and its metrics.
pub struct ListenerStore {
    spec: StoreSpec,
    namespace: String,
    backend: Arc<dyn Backend>,
    metrics: StoreMetrics,
}

impl fmt::Debug for ListenerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (namespace {})", self.spec, self.namespace)
    }
}

impl ListenerStore {
    /// The store of a listener: `namespace` (checked) in `backend`.
    pub fn new(
        spec: StoreSpec,
        namespace: String,
        backend: Arc<dyn Backend>,
        metrics: StoreMetrics,
    ) -> Result<Self> {
        check_namespace(&namespace)?;
        Ok(Self {
            spec,
            namespace,
            backend,
            metrics,
        })
    }

    /// Where the store is and the namespace, for logs and `host check`.
    pub fn describe(&self) -> String {
        format!("store {} (namespace {})", self.spec, self.namespace)
    }

    /// The counters of this listener's store.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Checks a bucket name for `open`.
    pub fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        check_name("bucket", bucket)
    }

    fn key<'a>(&'a self, bucket: &'a str, key: &'a str) -> Result<Key<'a>, StoreError> {
        if key.len() > MAX_KEY {
            return Err(StoreError::Invalid(format!(
                "a key is at most {MAX_KEY} bytes, not {}",
                key.len()
            )));
        }
        Ok(Key {
            namespace: &self.namespace,
            bucket,
            key,
        })
    }

    /// Counts one operation and its failure.
    fn counted<R>(&self, op: &'static str, result: Result<R, StoreError>) -> Result<R, StoreError> {
        self.metrics.operation(op, result.is_ok());
        result
    }

    /// `get`.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let result = self.key(bucket, key).and_then(|k| self.backend.get(k));
        self.counted("get", result)
    }

    /// `set`.
    pub fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let result = check_value(value)
            .and_then(|()| self.key(bucket, key))
            .and_then(|k| self.backend.set(k, value));
        self.counted("set", result)
    }

    /// `delete`.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let result = self.key(bucket, key).and_then(|k| self.backend.delete(k));
        self.counted("delete", result)
    }

    /// `exists`.
    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        let result = self.key(bucket, key).and_then(|k| self.backend.exists(k));
        self.counted("exists", result)
    }

    /// `list-keys`.
    pub fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, StoreError> {
        let result = self
            .backend
            .list_keys(&self.namespace, bucket, cursor.unwrap_or(0));
        self.counted("list-keys", result)
    }

    /// `increment`.
    pub fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64, StoreError> {
        let result = self
            .key(bucket, key)
            .and_then(|k| self.backend.increment(k, delta));
        self.counted("increment", result)
    }

    /// `compare-and-swap`.
    pub fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let result = check_value(value)
            .and_then(|()| self.key(bucket, key))
            .and_then(|k| self.backend.compare_and_swap(k, expected, value));
        self.counted("compare-and-swap", result)
    }

    /// The backend channel of `topic` in this namespace.
    fn channel(&self, topic: &str) -> String {
        format!("plughost:{}:topic:{topic}", self.namespace)
    }

    /// Publishes `message` on `topic`.
    pub fn publish(&self, topic: &str, message: &[u8]) -> Result<(), StoreError> {
        let result = check_name("topic", topic).and_then(|()| {
            if message.len() > MAX_MESSAGE {
                return Err(StoreError::Invalid(format!(
                    "a message is at most {MAX_MESSAGE} bytes, not {}",
                    message.len()
                )));
            }
            self.backend.publish(&self.channel(topic), message)
        });
        if result.is_ok() {
            self.metrics.published();
        }
        self.counted("publish", result)
    }

    /// Subscribes `mailbox` to `topic`; true if it was not subscribed.
    pub fn subscribe(&self, topic: &str, mailbox: &Arc<Mailbox>) -> Result<bool, StoreError> {
        let result = check_name("topic", topic).and_then(|()| {
            let channel = self.channel(topic);
            let registry = self.backend.registry();
            let Some(first) = registry.add(&channel, topic, mailbox, &self.metrics) else {
                return Ok(false);
            };
            if first && let Err(err) = self.backend.listen(&channel) {
                if registry.remove(&channel, mailbox) {
                    self.backend.unlisten(&channel);
                }
                return Err(err);
            }
            Ok(true)
        });
        self.counted("subscribe", result)
    }

    /// Unsubscribes `mailbox` from `topic`.
    pub fn unsubscribe(&self, topic: &str, mailbox: &Arc<Mailbox>) {
        let channel = self.channel(topic);
        if self.backend.registry().remove(&channel, mailbox) {
            self.backend.unlisten(&channel);
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(StoreError::Invalid(format!(
            "a {what} name is 1 to {MAX_NAME} bytes, not {}",
            name.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE {
        return Err(StoreError::Invalid(format!(
            "a value is at most {MAX_VALUE} bytes, not {}",
            value.len()
        )));
    }
    Ok(())
}

/// The number a counter holds: its value as decimal text (absent: 0), the
/// representation Redis's INCRBY uses, so both backends agree.
pub fn parse_counter(value: Option<&[u8]>) -> Result<u64, StoreError> {
    let Some(value) = value else {
        return Ok(0);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| StoreError::Invalid("the value is not a number to increment".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_parse_with_clear_errors() {
        assert_eq!("memory".parse::<StoreSpec>(), Ok(StoreSpec::Memory));
        assert_eq!(
            "redis://127.0.0.1:6379".parse::<StoreSpec>(),
            Ok(StoreSpec::Redis("redis://127.0.0.1:6379".into()))
        );
        let err = "postgres://x".parse::<StoreSpec>().unwrap_err();
        assert!(err.contains("expected `memory`"), "{err}");
        let err = "rediss://x:1".parse::<StoreSpec>().unwrap_err();
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn passwords_stay_out_of_the_log() {
        let spec = StoreSpec::Redis("redis://:secret@10.0.0.1:6379".into());
        assert_eq!(spec.to_string(), "redis://***@10.0.0.1:6379");
    }

    #[test]
    fn namespaces_are_plain_names() {
        assert!(check_namespace("chat-1.prod").is_ok());
        assert!(check_namespace("").is_err());
        assert!(check_namespace("a:b").is_err());
        assert!(check_namespace("a*").is_err());
    }

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(parse_counter(None), Ok(0));
        assert_eq!(parse_counter(Some(b"41")), Ok(41));
        assert!(parse_counter(Some(b"x")).is_err());
    }
}
