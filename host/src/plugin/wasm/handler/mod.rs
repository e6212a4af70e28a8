//! The `handler` world (socketserver's `BaseRequestHandler`): a fresh
//! instance per connection, whose `setup`, `handle` and `finish` make
//! blocking calls on a host-owned `connection`. On a thread of its own the
//! instance runs here, with the blocking bindings; on an event loop it runs
//! on a fiber with async `read` and `write` ([`event`]). Both go through
//! the one [`lifecycle`].

pub(super) mod bindings;
mod connection_resource;
pub(super) mod event;
mod guest_receive;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasmtime::Store;
use wasmtime::component::Resource;

use self::bindings::{Handler, HandlerPre, WORLD_NAME};
pub(super) use self::connection_resource::{ip_and_port, link_guest_memory_io};
use self::event::EventPre;
use self::event::bindings::HandlerPre as EventHandlerPre;
use super::state::{ConnState, ConnectionHandle, StoreState};
use super::{
    ComponentInfo, Sandbox, WasmEngine, WasmRuntime, inspect, linker, new_store, note_memory_limit,
    one_line, trapped,
};
use crate::connection::Connection;
use crate::connection::event::EventConnection;
use crate::plugin::lifecycle::{self, Step};
use crate::plugin::source::PluginBytes;
use crate::plugin::{
    BoxFuture, ConnectionPlugin, EventPlugin, Outcome, Plugin, PluginVersion, Serving,
};

impl WasmRuntime {
    /// Compiles `plugin` (or loads it from the cache), checks it implements
    /// the handler world, and pre-links it. `what` names it in errors.
    pub fn load(&self, plugin: &PluginBytes, what: &str) -> Result<(WasmPlugin, ComponentInfo)> {
        let (component, info) = self.compile(plugin, what, WORLD_NAME)?;
        inspect::check_exports(self.engine.engine(), &component, what)?;
        let pre = linker::prelink(
            &self.linkers.handler,
            &component,
            what,
            WORLD_NAME,
            HandlerPre::new,
        )?;
        let event_pre = self
            .linkers
            .handler_on_event_loop
            .as_ref()
            .map(|linker| {
                linker::prelink(linker, &component, what, WORLD_NAME, EventHandlerPre::new)
            })
            .transpose()?
            .map(EventPre);
        let plugin = WasmPlugin {
            version: plugin.version.clone(),
            pre,
            event_pre,
            engine: self.engine.clone(),
            sandbox: Arc::clone(&self.sandbox),
        };
        Ok((plugin, info))
    }
}

/// A compiled, checked and pre-linked handler component.
pub struct WasmPlugin {
    version: PluginVersion,
    pre: HandlerPre<ConnState>,
    /// The same component linked for event loops, when they are enabled.
    event_pre: Option<EventPre>,
    engine: WasmEngine,
    sandbox: Arc<Sandbox>,
}

/// The blocking lifecycle steps of one instance (see [`lifecycle`]).
struct BlockingSteps<'a> {
    store: &'a mut Store<ConnState>,
    handler: Handler,
    conn: u32,
}

impl BlockingSteps<'_> {
    fn conn(&self) -> Resource<ConnectionHandle> {
        Resource::new_borrow(self.conn)
    }
}

impl lifecycle::Steps for BlockingSteps<'_> {
    async fn setup(&mut self) -> Step {
        let conn = self.conn();
        self.store.data_mut().guest_resumes();
        self.handler
            .call_setup(&mut *self.store, conn)
            .map_err(trapped)
    }

    async fn handle(&mut self) -> Step {
        let conn = self.conn();
        self.store.data_mut().guest_resumes();
        self.handler
            .call_handle(&mut *self.store, conn)
            .map_err(trapped)
    }

    fn limit_blocking(&mut self, limit: Duration) {
        self.store.data_mut().io.limit_blocking(limit);
    }

    async fn finish(&mut self) -> Step {
        let conn = self.conn();
        self.store.data_mut().guest_resumes();
        self.handler
            .call_finish(&mut *self.store, conn)
            .map_err(trapped)?;
        Ok(Ok(()))
    }
}

impl WasmPlugin {
    /// A store for serving `io` (the peer's connection), inside the
    /// sandbox; `yield_to_loop` for event-loop instances.
    fn store<C: Send + 'static>(
        &self,
        io: C,
        peer: &crate::address::PeerAddr,
        yield_to_loop: bool,
    ) -> Result<Store<StoreState<C>>, (C, Outcome)> {
        new_store(&self.engine, &self.sandbox, io, peer, yield_to_loop)
    }

    /// Instantiates the component in `store` and runs the lifecycle.
    fn run(&self, store: &mut Store<ConnState>) -> Outcome {
        let handler = match self.pre.instantiate(&mut *store) {
            Ok(handler) => handler,
            Err(err) => return cannot_instantiate(&err),
        };
        let conn = match push_connection(store.data_mut()) {
            Ok(conn) => conn,
            Err(outcome) => return outcome,
        };
        let mut steps = BlockingSteps {
            store,
            handler,
            conn,
        };
        lifecycle::run_blocking(&mut steps, self.engine.limits().finish_timeout)
    }
}

impl Plugin for WasmPlugin {
    fn version(&self) -> &PluginVersion {
        &self.version
    }

    fn serving(&self) -> Serving<'_> {
        Serving::PerConnection(self)
    }

    fn time_instantiation(&self) -> Result<Option<Duration>> {
        let (server, _client) =
            std::os::unix::net::UnixStream::pair().context("cannot create a socket pair")?;
        let stream = crate::connection::Stream::Unix(server);
        let peer = stream.peer_addr().context("cannot name the socket pair")?;
        let conn = Connection::blocking(stream, peer.clone(), None)
            .map_err(|unwrapped| unwrapped.error)
            .context("cannot wrap the socket pair")?;
        let started = Instant::now();
        let mut store = self
            .store(conn, &peer, false)
            .map_err(|(_, outcome)| anyhow::anyhow!("{}", outcome.reason().unwrap_or_default()))?;
        self.pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .context("cannot instantiate")?;
        Ok(Some(started.elapsed()))
    }
}

impl ConnectionPlugin for WasmPlugin {
    fn serve(&self, conn: Connection) -> (Connection, Outcome) {
        let peer = conn.peer_addr().clone();
        let mut store = match self.store(conn, &peer, false) {
            Ok(store) => store,
            Err(refused) => return refused,
        };
        let mut outcome = self.run(&mut store);
        note_memory_limit(&mut outcome, &store, self.engine.limits().max_memory);
        (store.into_data().into_io(), outcome)
    }

    fn on_event_loop(&self) -> Option<&dyn EventPlugin> {
        self.event_pre.is_some().then_some(self as &dyn EventPlugin)
    }
}

impl EventPlugin for WasmPlugin {
    fn serve(&self, conn: EventConnection) -> BoxFuture<'_, (EventConnection, Outcome)> {
        Box::pin(async move {
            let Some(pre) = &self.event_pre else {
                let reason = "plugin was not loaded for event loops".to_string();
                return (conn, Outcome::HostError(reason));
            };
            let peer = conn.peer_addr().clone();
            let mut store = match self.store(conn, &peer, true) {
                Ok(store) => store,
                Err(refused) => return refused,
            };
            let finish_timeout = self.engine.limits().finish_timeout;
            let mut outcome = pre.run(&mut store, finish_timeout).await;
            note_memory_limit(&mut outcome, &store, self.engine.limits().max_memory);
            (store.into_data().into_io(), outcome)
        })
    }
}

/// Puts the guest's handle to its connection in the store's table: the
/// `rep` every lifecycle call borrows.
fn push_connection<C>(state: &mut StoreState<C>) -> Result<u32, Outcome> {
    state
        .table
        .push(ConnectionHandle)
        .map(|own| own.rep())
        .map_err(|err| Outcome::HostError(err.to_string()))
}

/// The outcome of a connection whose instance could not be created.
fn cannot_instantiate(err: &wasmtime::Error) -> Outcome {
    Outcome::HostError(format!("cannot instantiate: {}", one_line(err)))
}
