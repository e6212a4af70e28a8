//! The store through the host's imports.

use crate::Error;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package plughost:store-client;
            world client {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
                import plughost:handler/swap@0.1.4;
                import plughost:handler/topics@0.1.4;
            }
        ",
        path: "../../../wit",
        generate_all,
    });
}

use bindings::plughost::handler::{swap, topics};
use bindings::wasi::keyvalue::{atomics, store};

/// The host's prefix of an `other` error that means the backend is down.
const UNAVAILABLE: &str = "store unavailable: ";

fn kv(err: store::Error) -> Error {
    match err {
        store::Error::NoSuchStore | store::Error::AccessDenied => Error::NoStore,
        store::Error::Other(message) => match message.strip_prefix(UNAVAILABLE) {
            Some(rest) => Error::Unavailable(rest.to_string()),
            None => Error::Invalid(message),
        },
    }
}

fn topic(err: topics::Error) -> Error {
    match err {
        topics::Error::NoStore => Error::NoStore,
        topics::Error::Invalid(message) => Error::Invalid(message),
        topics::Error::Unavailable(message) => Error::Unavailable(message),
    }
}

pub struct Bucket(store::Bucket);

pub fn open(name: &str) -> Result<Bucket, Error> {
    store::open(name).map(Bucket).map_err(kv)
}

impl Bucket {
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.0.get(key).map_err(kv)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.0.set(key, value).map_err(kv)
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.0.delete(key).map_err(kv)
    }

    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.0.exists(key).map_err(kv)
    }

    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor).map_err(kv)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        atomics::increment(&self.0, key, delta).map_err(kv)
    }

    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        swap::compare_and_swap(&self.0, key, expected, value).map_err(kv)
    }
}

pub fn publish(name: &str, message: &[u8]) -> Result<(), Error> {
    topics::publish(name, message).map_err(topic)
}

pub fn subscribe(name: &str) -> Result<(), Error> {
    topics::subscribe(name).map_err(topic)
}

pub fn unsubscribe(name: &str) {
    topics::unsubscribe(name)
}
