//! Serving a connection on an event-loop thread: the same component and
//! lifecycle as the blocking path, instantiated from a linker whose `read`
//! and `write` are async. The guest runs on a fiber; when it waits for its
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
use super::{WasmEngine, trapped};
use crate::connection::event::EventConnection;
use crate::plugin::Outcome;

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

    /// Runs `setup`, `handle` and `finish` in `store`, suspending whenever
    /// the guest waits. `Err` means a call trapped.
    pub async fn run(
        &self,
        store: &mut Store<EventState>,
        finish_timeout: std::time::Duration,
    ) -> Result<Outcome, Outcome> {
        let handler = self.0.instantiate_async(&mut *store).await.map_err(|err| {
            Outcome::HostError(format!("cannot instantiate: {}", super::one_line(&err)))
        })?;
        let own = store
            .data_mut()
            .table
            .push(ConnectionHandle)
            .map_err(|err| Outcome::HostError(err.to_string()))?;
        let conn = || Resource::<ConnectionHandle>::new_borrow(own.rep());

        store.data_mut().guest_resumes();
        let setup = handler.call_setup(&mut *store, conn()).await;
        if let Err(message) = setup.map_err(trapped)? {
            return Ok(Outcome::SetupError(message));
        }
        store.data_mut().guest_resumes();
        let handled = handler
            .call_handle(&mut *store, conn())
            .await
            .map_err(trapped)?;
        let state = store.data_mut();
        state.io.connection_mut().limit_blocking(finish_timeout);
        state.guest_resumes();
        handler
            .call_finish(&mut *store, conn())
            .await
            .map_err(trapped)?;
        Ok(match handled {
            Ok(()) => Outcome::Ok,
            Err(message) => Outcome::HandleError(message),
        })
    }
}
