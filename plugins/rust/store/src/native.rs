//! The store natively, for unit tests: a map and a list of published
//! messages in the calling thread, off until a test turns it on with
//! [`testing::set_available`] (a native plugin has no store).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::Error;

struct Store {
    absent: bool,
    values: BTreeMap<(String, String), Vec<u8>>,
    subscribed: BTreeSet<String>,
    published: Vec<(String, Vec<u8>)>,
}

thread_local! {
    static STORE: RefCell<Store> = const { RefCell::new(Store {
        absent: true,
        values: BTreeMap::new(),
        subscribed: BTreeSet::new(),
        published: Vec::new(),
    }) };
}

fn with<R>(f: impl FnOnce(&mut Store) -> Result<R, Error>) -> Result<R, Error> {
    STORE.with(|store| {
        let mut store = store.borrow_mut();
        if store.absent {
            return Err(Error::NoStore);
        }
        f(&mut store)
    })
}

pub struct Bucket(String);

pub fn open(name: &str) -> Result<Bucket, Error> {
    with(|_| Ok(Bucket(name.to_string())))
}

impl Bucket {
    fn key(&self, key: &str) -> (String, String) {
        (self.0.clone(), key.to_string())
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        with(|s| Ok(s.values.get(&self.key(key)).cloned()))
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        with(|s| {
            s.values.insert(self.key(key), value.to_vec());
            Ok(())
        })
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        with(|s| {
            s.values.remove(&self.key(key));
            Ok(())
        })
    }

    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        with(|s| Ok(s.values.contains_key(&self.key(key))))
    }

    pub fn keys(&self) -> Result<Vec<String>, Error> {
        with(|s| {
            Ok(s.values
                .keys()
                .filter(|(bucket, _)| *bucket == self.0)
                .map(|(_, key)| key.clone())
                .collect())
        })
    }

    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        with(|s| {
            let slot = s
                .values
                .entry(self.key(key))
                .or_insert_with(|| b"0".to_vec());
            let now: u64 = std::str::from_utf8(slot)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| Error::Invalid("the value is not a number to increment".into()))?;
            let next = now + delta;
            *slot = next.to_string().into_bytes();
            Ok(next)
        })
    }

    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        with(|s| {
            if s.values.get(&self.key(key)).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            s.values.insert(self.key(key), value.to_vec());
            Ok(true)
        })
    }
}

pub fn publish(topic: &str, message: &[u8]) -> Result<(), Error> {
    with(|s| {
        s.published.push((topic.to_string(), message.to_vec()));
        Ok(())
    })
}

pub fn subscribe(topic: &str) -> Result<(), Error> {
    with(|s| {
        s.subscribed.insert(topic.to_string());
        Ok(())
    })
}

pub fn unsubscribe(topic: &str) {
    let _ = with(|s| {
        s.subscribed.remove(topic);
        Ok(())
    });
}

/// What a unit test sees of the native store.
pub mod testing {
    use super::STORE;

    /// Takes the messages published since the last call, with their
    /// topics, keeping only those of subscribed topics if `subscribed`.
    pub fn take_published(subscribed: bool) -> Vec<(String, Vec<u8>)> {
        STORE.with(|store| {
            let mut store = store.borrow_mut();
            let published = std::mem::take(&mut store.published);
            published
                .into_iter()
                .filter(|(topic, _)| !subscribed || store.subscribed.contains(topic))
                .collect()
        })
    }

    /// Whether the thread's plugin subscribed to `topic`.
    pub fn is_subscribed(topic: &str) -> bool {
        STORE.with(|store| store.borrow().subscribed.contains(topic))
    }

    /// Turns the thread's store on (`true`: a map, as `--store memory`
    /// would give) or off (`false`, the default: every call fails with
    /// `NoStore`, as on a listener without a store and in native plugins).
    pub fn set_available(available: bool) {
        STORE.with(|store| {
            let mut store = store.borrow_mut();
            store.absent = !available;
            store.values.clear();
            store.subscribed.clear();
            store.published.clear();
        });
    }
}
