//! Serving a connection on an event-loop thread: the same component and
//! lifecycle ([`lifecycle`]) as the blocking path, instantiated from a
//! linker whose `read` and `write` are async. The guest runs on a fiber; when it waits for its
//! client the fiber suspends and the thread serves other connections. A
//! guest that computes is made to yield to the loop at every epoch tick, so
//! it cannot starve the connections that share its thread.

mod bindings;
mod connection_resource;

use anyhow::{Context, Result};
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, Resource};

use self::bindings::{Handler, HandlerPre};
use super::state::{ConnectionHandle, StoreState};
use super::{WasmEngine, cannot_instantiate, push_connection, trapped};
use crate::connection::event::EventConnection;
use crate::plugin::Outcome;
use crate::plugin::lifecycle::{self, Step};

/// Store data of an instance on an event loop.
pub type EventState = StoreState<EventConnection>;

/// The linker for event-loop instances: async WASI, async `read`/`write`.
pub fn linker(engine: &WasmEngine) -> Result<Linker<EventState>> {
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    Handler::add_to_linker::<EventState, HasSelf<EventState>>(&mut linker, |state| state)
        .and_then(|()| connection_resource::link_guest_memory_io(&mut linker))
        .map_err(anyhow::Error::from)
        .context("cannot link the connection interface")?;
    Ok(linker)
}

/// A component pre-linked for event-loop instances.
pub struct EventPre(HandlerPre<EventState>);

impl EventPre {
    /// Pre-links `component` (already checked against the world).
    pub fn new(linker: &Linker<EventState>, component: &Component, what: &str) -> Result<Self> {
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{what} cannot be linked for the event loop"))?;
        let pre = HandlerPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{what} cannot be linked for the event loop"))?;
        Ok(Self(pre))
    }

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
