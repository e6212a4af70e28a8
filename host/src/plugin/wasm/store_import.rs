//! The host implementation of the store interfaces every world imports:
//! `wasi:keyvalue` (`store`, `atomics`, `batch`), `swap` and `topics`,
//! over the listener's [`ListenerStore`] (`--store`).
//!
//! Deny by default: without a store, `open` fails with `access-denied`
//! and every topic call with `no-store`, so one component runs with or
//! without a store and can tell which. Messages are received where a
//! world has a way to deliver them: `protocol`'s `message-received`, and
//! the handler world's `read-or-message`; in the datagram world
//! `subscribe` fails with `invalid`.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::handler::bindings::plughost::handler::{swap, topics};
use super::handler::bindings::wasi::keyvalue::{atomics, batch, store};
use super::state::StoreState;
use crate::connection::Connection;
use crate::connection::event::EventConnection;
use crate::connection::inbox::Inbox;
use crate::connection::shared::SharedIo;
use crate::store::topics::Subscriptions;
use crate::store::{ListenerStore, StoreError};

/// The guest's handle to a bucket (`wasi:keyvalue/store.bucket`).
#[derive(Debug)]
pub struct BucketHandle {
    name: String,
}

/// Where a world's instance receives topic messages, if it can.
pub(super) trait ReceivesMessages {
    /// The instance's subscriptions (made at the first call where that
    /// costs something); an error where messages cannot be delivered.
    fn subscriptions(&mut self) -> Result<&mut Subscriptions, StoreError>;

    /// The subscriptions if there are any, for `unsubscribe`.
    fn existing_subscriptions(&mut self) -> Option<&mut Subscriptions>;
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn kv_error(err: StoreError) -> store::Error {
    match err {
        StoreError::Invalid(message) => store::Error::Other(message),
        StoreError::Unavailable(message) => {
            store::Error::Other(format!("store unavailable: {message}"))
        }
    }
}

fn topic_error(err: StoreError) -> topics::Error {
    match err {
        StoreError::Invalid(message) => topics::Error::Invalid(message),
        StoreError::Unavailable(message) => topics::Error::Unavailable(message),
    }
}

impl<C> StoreState<C> {
    fn store(&self) -> Option<&Arc<ListenerStore>> {
        self.sandbox.store.as_ref()
    }

    /// The store and the bucket name behind `bucket`.
    fn bucket(&self, bucket: &Resource<BucketHandle>) -> wasmtime::Result<(&ListenerStore, &str)> {
        let handle = self.table.get(bucket)?;
        // A bucket exists only where `open` found a store.
        let store = self
            .store()
            .ok_or_else(|| wasmtime::Error::msg("a bucket without a store"))?;
        Ok((store, &handle.name))
    }
}

impl<C: Send> store::Host for StoreState<C> {
    fn open(&mut self, identifier: String) -> KvResult<Resource<BucketHandle>> {
        let Some(store) = self.store() else {
            return Ok(Err(store::Error::AccessDenied));
        };
        if let Err(err) = store.check_bucket(&identifier) {
            return Ok(Err(kv_error(err)));
        }
        Ok(Ok(self.table.push(BucketHandle { name: identifier })?))
    }
}

impl<C: Send> store::HostBucket for StoreState<C> {
    fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<Option<Vec<u8>>> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.get(name, &key).map_err(kv_error))
    }

    fn set(&mut self, bucket: Resource<BucketHandle>, key: String, value: Vec<u8>) -> KvResult<()> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.set(name, &key, &value).map_err(kv_error))
    }

    fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<()> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.delete(name, &key).map_err(kv_error))
    }

    fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<bool> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.exists(name, &key).map_err(kv_error))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store
            .list_keys(name, cursor)
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(kv_error))
    }

    fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl<C: Send> atomics::Host for StoreState<C> {
    fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.increment(name, &key, delta).map_err(kv_error))
    }
}

impl<C: Send> batch::Host for StoreState<C> {
    fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let (store, name) = self.bucket(&bucket)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            match store.get(name, &key) {
                Ok(value) => found.push(value.map(|v| (key, v))),
                Err(err) => return Ok(Err(kv_error(err))),
            }
        }
        Ok(Ok(found))
    }

    fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let (store, name) = self.bucket(&bucket)?;
        for (key, value) in key_values {
            if let Err(err) = store.set(name, &key, &value) {
                return Ok(Err(kv_error(err)));
            }
        }
        Ok(Ok(()))
    }

    fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> KvResult<()> {
        let (store, name) = self.bucket(&bucket)?;
        for key in keys {
            if let Err(err) = store.delete(name, &key) {
                return Ok(Err(kv_error(err)));
            }
        }
        Ok(Ok(()))
    }
}

impl<C: Send> swap::Host for StoreState<C> {
    fn compare_and_swap(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> KvResult<bool> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store
            .compare_and_swap(name, &key, expected.as_deref(), &value)
            .map_err(kv_error))
    }
}

impl<C: Send + ReceivesMessages> topics::Host for StoreState<C> {
    fn publish(
        &mut self,
        topic: String,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<(), topics::Error>> {
        let Some(store) = self.store() else {
            return Ok(Err(topics::Error::NoStore));
        };
        Ok(store.publish(&topic, &message).map_err(topic_error))
    }

    fn subscribe(&mut self, topic: String) -> wasmtime::Result<Result<(), topics::Error>> {
        let Some(store) = self.sandbox.store.clone() else {
            return Ok(Err(topics::Error::NoStore));
        };
        let subscribed = self
            .io
            .subscriptions()
            .and_then(|subscriptions| subscriptions.subscribe(&store, &topic));
        Ok(subscribed.map_err(topic_error))
    }

    fn unsubscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        if let Some(subscriptions) = self.io.existing_subscriptions() {
            subscriptions.unsubscribe(&topic);
        }
        Ok(())
    }
}

impl ReceivesMessages for () {
    fn subscriptions(&mut self) -> Result<&mut Subscriptions, StoreError> {
        Err(StoreError::Invalid(
            "a datagram handler cannot receive messages (it has no way to wait for them)".into(),
        ))
    }

    fn existing_subscriptions(&mut self) -> Option<&mut Subscriptions> {
        None
    }
}

impl ReceivesMessages for Connection {
    fn subscriptions(&mut self) -> Result<&mut Subscriptions, StoreError> {
        match self.inbox() {
            Ok(inbox) => Ok(inbox.subscriptions()),
            Err(err) => Err(StoreError::Unavailable(format!(
                "cannot make the connection's inbox: {err}"
            ))),
        }
    }

    fn existing_subscriptions(&mut self) -> Option<&mut Subscriptions> {
        self.existing_inbox_mut().map(Inbox::subscriptions)
    }
}

impl ReceivesMessages for EventConnection {
    fn subscriptions(&mut self) -> Result<&mut Subscriptions, StoreError> {
        self.connection_mut().subscriptions()
    }

    fn existing_subscriptions(&mut self) -> Option<&mut Subscriptions> {
        self.connection_mut().existing_subscriptions()
    }
}

impl ReceivesMessages for SharedIo {
    fn subscriptions(&mut self) -> Result<&mut Subscriptions, StoreError> {
        SharedIo::subscriptions(self).ok_or_else(|| {
            StoreError::Invalid("this instance cannot receive messages (a trial run)".into())
        })
    }

    fn existing_subscriptions(&mut self) -> Option<&mut Subscriptions> {
        SharedIo::subscriptions(self)
    }
}
