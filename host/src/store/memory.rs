//! The in-process backend (`--store memory`): keys in a map per
//! namespace, bounded to [`MAX_KEYS_IN_MEMORY`], and messages handed
//! straight to this process's subscribers. Nothing outlives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::topics::Registry;
use super::{Backend, KEYS_PER_PAGE, Key, KeyPage, MAX_KEYS_IN_MEMORY, StoreError, parse_counter};

/// Keys of one namespace: bucket, then key (ordered, so a cursor is a
/// position).
type Buckets = HashMap<String, BTreeMap<String, Vec<u8>>>;

/// The memory backend.
#[derive(Default)]
pub struct MemoryBackend {
    namespaces: Mutex<HashMap<String, Namespace>>,
    registry: Arc<Registry>,
}

#[derive(Default)]
struct Namespace {
    buckets: Buckets,
    keys: usize,
}

impl MemoryBackend {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Namespace>> {
        self.namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on `key`'s namespace.
    fn with<R>(&self, key: &Key<'_>, f: impl FnOnce(&mut Namespace) -> R) -> R {
        let mut namespaces = self.lock();
        let namespace = namespaces.entry(key.namespace.to_string()).or_default();
        f(namespace)
    }
}

impl Namespace {
    fn value(&self, key: &Key<'_>) -> Option<&Vec<u8>> {
        self.buckets.get(key.bucket)?.get(key.key)
    }

    fn put(&mut self, key: &Key<'_>, value: Vec<u8>) -> Result<(), StoreError> {
        let bucket = self.buckets.entry(key.bucket.to_string()).or_default();
        if let Some(slot) = bucket.get_mut(key.key) {
            *slot = value;
            return Ok(());
        }
        if self.keys >= MAX_KEYS_IN_MEMORY {
            return Err(StoreError::Invalid(format!(
                "the store is full: {MAX_KEYS_IN_MEMORY} keys in namespace {}",
                key.namespace
            )));
        }
        bucket.insert(key.key.to_string(), value);
        self.keys += 1;
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: Key<'_>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(&key, |ns| ns.value(&key).cloned()))
    }

    fn set(&self, key: Key<'_>, value: &[u8]) -> Result<(), StoreError> {
        self.with(&key, |ns| ns.put(&key, value.to_vec()))
    }

    fn delete(&self, key: Key<'_>) -> Result<(), StoreError> {
        self.with(&key, |ns| {
            let removed = ns
                .buckets
                .get_mut(key.bucket)
                .and_then(|bucket| bucket.remove(key.key));
            if removed.is_some() {
                ns.keys -= 1;
            }
        });
        Ok(())
    }

    fn exists(&self, key: Key<'_>) -> Result<bool, StoreError> {
        Ok(self.with(&key, |ns| ns.value(&key).is_some()))
    }

    fn list_keys(&self, namespace: &str, bucket: &str, cursor: u64) -> Result<KeyPage, StoreError> {
        let namespaces = self.lock();
        let Some(keys) = namespaces
            .get(namespace)
            .and_then(|ns| ns.buckets.get(bucket))
        else {
            return Ok(KeyPage::default());
        };
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        let page: Vec<String> = keys
            .keys()
            .skip(start)
            .take(KEYS_PER_PAGE)
            .cloned()
            .collect();
        let next = start.saturating_add(page.len());
        let cursor = (next < keys.len()).then_some(next as u64);
        Ok(KeyPage { keys: page, cursor })
    }

    fn increment(&self, key: Key<'_>, delta: u64) -> Result<u64, StoreError> {
        self.with(&key, |ns| {
            let now = parse_counter(ns.value(&key).map(Vec::as_slice))?;
            let next = now
                .checked_add(delta)
                .ok_or_else(|| StoreError::Invalid("the counter would overflow".into()))?;
            ns.put(&key, next.to_string().into_bytes())?;
            Ok(next)
        })
    }

    fn compare_and_swap(
        &self,
        key: Key<'_>,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.with(&key, |ns| {
            if ns.value(&key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            ns.put(&key, value.to_vec()).map(|()| true)
        })
    }

    fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        self.registry.deliver(channel, message);
        Ok(())
    }

    fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn listen(&self, _channel: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn unlisten(&self, _channel: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(namespace: &'a str, key: &'a str) -> Key<'a> {
        Key {
            namespace,
            bucket: "b",
            key,
        }
    }

    #[test]
    fn namespaces_do_not_see_each_other() {
        let store = MemoryBackend::default();
        store.set(key("a", "k"), b"1").unwrap();
        assert_eq!(store.get(key("a", "k")).unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(key("b", "k")).unwrap(), None);
        assert!(store.exists(key("a", "k")).unwrap());
        store.delete(key("a", "k")).unwrap();
        assert!(!store.exists(key("a", "k")).unwrap());
    }

    #[test]
    fn increments_and_swaps_are_atomic_steps() {
        let store = Arc::new(MemoryBackend::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        store.increment(key("n", "visits"), 1).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            store.get(key("n", "visits")).unwrap(),
            Some(b"8000".to_vec())
        );
        assert!(
            !store
                .compare_and_swap(key("n", "visits"), Some(b"1"), b"x")
                .unwrap()
        );
        assert!(
            store
                .compare_and_swap(key("n", "visits"), Some(b"8000"), b"x")
                .unwrap()
        );
        assert!(store.compare_and_swap(key("n", "new"), None, b"y").unwrap());
        assert!(!store.compare_and_swap(key("n", "new"), None, b"z").unwrap());
        assert!(store.increment(key("n", "visits"), 1).is_err());
    }

    #[test]
    fn keys_come_in_pages() {
        let store = MemoryBackend::default();
        for i in 0..(KEYS_PER_PAGE + 5) {
            store.set(key("p", &format!("k{i:04}")), b"").unwrap();
        }
        let first = store.list_keys("p", "b", 0).unwrap();
        assert_eq!(first.keys.len(), KEYS_PER_PAGE);
        let second = store.list_keys("p", "b", first.cursor.unwrap()).unwrap();
        assert_eq!(second.keys.len(), 5);
        assert_eq!(second.cursor, None);
        assert_eq!(store.list_keys("p", "none", 0).unwrap(), KeyPage::default());
    }
}
