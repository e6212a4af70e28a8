//! Serving a connection on an event-loop thread: the same component and
//! lifecycle ([`lifecycle`]) as the blocking path, instantiated from a
//! linker whose `read` and `write` are async. The guest runs on a fiber; when it waits for its
//! client the fiber suspends and the thread serves other connections. A
//! guest that computes is made to yield to the loop at every epoch tick, so
//! it cannot starve the connections that share its thread.

pub(in crate::plugin::wasm) mod bindings;
mod connection_resource;

pub(in crate::plugin::wasm) use self::connection_resource::link_guest_memory_io;

use wasmtime::Store;
use wasmtime::component::Resource;

use self::bindings::{Handler, HandlerPre};
use super::{cannot_instantiate, push_connection};
use crate::connection::event::EventConnection;
use crate::plugin::Outcome;
use crate::plugin::lifecycle::{self, Step};
use crate::plugin::wasm::state::{ConnectionHandle, StoreState};
use crate::plugin::wasm::trapped;

/// Store data of an instance on an event loop.
pub type EventState = StoreState<EventConnection>;

/// A component pre-linked for event-loop instances.
pub struct EventPre(pub HandlerPre<EventState>);

impl EventPre {
    /// Instantiates the component in `store` and runs the lifecycle,
    /// suspending whenever the guest waits.
    pub async fn run(
        &self,
        store: &mut Store<EventState>,
        finish_timeout: std::time::Duration,
    ) -> Outcome {
        let handler = match self.0.instantiate_async(&mut *store).await {
            Ok(handler) => handler,
            Err(err) => return cannot_instantiate(&err),
        };
        let conn = match push_connection(store.data_mut()) {
            Ok(conn) => conn,
            Err(outcome) => return outcome,
        };
        let mut steps = EventSteps {
            store,
            handler,
            conn,
        };
        lifecycle::run(&mut steps, finish_timeout).await
    }
}

/// The lifecycle steps of one instance on an event loop: the blocking
/// path's, awaiting each call (see [`lifecycle`]).
struct EventSteps<'a> {
    store: &'a mut Store<EventState>,
    handler: Handler,
    conn: u32,
}

impl EventSteps<'_> {
    fn conn(&self) -> Resource<ConnectionHandle> {
        Resource::new_borrow(self.conn)
    }
}

impl lifecycle::Steps for EventSteps<'_> {
    async fn setup(&mut self) -> Step {
        let conn = self.conn();
        self.store.data_mut().guest_resumes();
        let setup = self.handler.call_setup(&mut *self.store, conn).await;
        setup.map_err(trapped)
    }

    async fn handle(&mut self) -> Step {
        let conn = self.conn();
        self.store.data_mut().guest_resumes();
        let handled = self.handler.call_handle(&mut *self.store, conn).await;
        handled.map_err(trapped)
    }

    fn limit_blocking(&mut self, limit: std::time::Duration) {
        self.store
            .data_mut()
            .io
            .connection_mut()
            .limit_blocking(limit);
    }

    async fn finish(&mut self) -> Step {
        let conn = self.conn();
        self.store.data_mut().guest_resumes();
        let finished = self.handler.call_finish(&mut *self.store, conn).await;
        finished.map_err(trapped)?;
        Ok(Ok(()))
    }
}
