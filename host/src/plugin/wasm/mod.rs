//! WebAssembly component plugins: compile (or load from the cache), check
//! the world, link WASI with nothing granted, and serve each connection in a
//! fresh instance from a pre-linked `HandlerPre`.

mod bindings;
mod cache;
mod config_import;
mod connection_resource;
mod datagram;
mod engine;
mod event;
mod grants;
mod guest_output;
mod guest_receive;
mod inspect;
mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{Store, UpdateDeadline};

pub use self::bindings::WORLD_NAME;
use self::bindings::{Handler, HandlerPre};
pub use self::cache::{CacheSettings, CompileCache};
pub use self::datagram::{CurrentDatagram, DATAGRAM_WORLD, DatagramPlugin};
pub use self::engine::{InstanceLimits, WasmEngine, write_perf_map};
use self::event::{EventPre, EventState};
pub use self::grants::{DirGrant, Grants, Sandbox};
use self::state::{ConnState, ConnectionHandle, DatagramState, StoreState};
use super::lifecycle::{self, Step};
use super::source::PluginBytes;
use super::{BoxFuture, EventPlugin, Outcome, Plugin, PluginVersion};
use crate::connection::Connection;
use crate::connection::event::EventConnection;

/// The engine, the linker every plugin is checked against, and the compile
/// cache: everything needed to turn plugin bytes into a [`WasmPlugin`].
#[derive(Clone)]
pub struct WasmRuntime {
    engine: WasmEngine,
    linker: Linker<ConnState>,
    /// Set when instances may run on event loops.
    event_linker: Option<Linker<EventState>>,
    datagram_linker: Linker<DatagramState>,
    cache: Option<CompileCache>,
    sandbox: Arc<Sandbox>,
}

/// A summary of a loaded component, for `host check` and the start-up log.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    /// The world it was checked against.
    pub world: &'static str,
    /// Its import names.
    pub imports: Vec<String>,
    /// Its export names.
    pub exports: Vec<String>,
    /// How long compiling (or loading from the cache) took.
    pub compile_time: Duration,
    /// Whether the compiled code came from the on-disk cache.
    pub cached: bool,
}

impl WasmRuntime {
    /// Creates the engine with `limits` and links WASI (with only what
    /// `sandbox` grants), the `connection` resource and `config`.
    /// `cache` enables the compile cache.
    pub fn new(
        limits: InstanceLimits,
        cache: Option<CacheSettings>,
        sandbox: Sandbox,
    ) -> Result<Self> {
        let engine = WasmEngine::new(limits)?;
        let mut linker = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI")?;
        Handler::add_to_linker::<ConnState, HasSelf<ConnState>>(&mut linker, |state| state)
            .and_then(|()| connection_resource::link_guest_memory_io(&mut linker))
            .map_err(anyhow::Error::from)
            .context("cannot link the connection interface")?;
        let datagram_linker = datagram::linker(&engine)?;
        let event_linker = if engine.limits().event_loop {
            Some(event::linker(&engine)?)
        } else {
            None
        };
        let cache = cache.map(|settings| CompileCache::new(settings, engine.engine()));
        Ok(Self {
            engine,
            linker,
            event_linker,
            datagram_linker,
            cache,
            sandbox: Arc::new(sandbox),
        })
    }

    /// Compiles `plugin` (or loads it from the cache), checks it implements
    /// the handler world, and pre-links it. `what` names it in errors.
    pub fn load(&self, plugin: &PluginBytes, what: &str) -> Result<(WasmPlugin, ComponentInfo)> {
        let (component, info) = self.compile(plugin, what, WORLD_NAME)?;
        inspect::check_exports(self.engine.engine(), &component, what)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{what} cannot be linked against world {WORLD_NAME}"))?;
        let pre = HandlerPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{what} does not implement world {WORLD_NAME}"))?;
        let event_pre = self
            .event_linker
            .as_ref()
            .map(|linker| EventPre::new(linker, &component, what))
            .transpose()?;
        let plugin = WasmPlugin {
            version: plugin.version.clone(),
            pre,
            event_pre,
            engine: self.engine.clone(),
            sandbox: Arc::clone(&self.sandbox),
        };
        Ok((plugin, info))
    }

    /// Compiles a component (or loads it from the cache) and describes it
    /// for `world`; checking and linking are up to the caller.
    fn compile(
        &self,
        plugin: &PluginBytes,
        what: &str,
        world: &'static str,
    ) -> Result<(Component, ComponentInfo)> {
        inspect::require_component(&plugin.bytes, what)?;
        let started = Instant::now();
        let engine = self.engine.engine();
        let (component, cached) = match &self.cache {
            Some(cache) => cache.load_or_compile(&plugin.digest, &plugin.bytes, what)?,
            None => (cache::compile(engine, &plugin.bytes, what)?, false),
        };
        let info = ComponentInfo {
            world,
            imports: inspect::imports(engine, &component),
            exports: inspect::exports(engine, &component),
            compile_time: started.elapsed(),
            cached,
        };
        Ok((component, info))
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

/// The trap raised when a guest computes past its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("plugin ran for more than {0:?} without returning to the host (call timeout)")]
struct CallTimeout(Duration);

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

    fn time_instantiation(&self) -> Result<Option<Duration>> {
        let (server, _client) =
            std::os::unix::net::UnixStream::pair().context("cannot create a socket pair")?;
        let stream = crate::connection::Stream::Unix(server);
        let peer = stream.peer_addr().context("cannot name the socket pair")?;
        let conn = Connection::blocking(stream, peer.clone(), None)
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

/// A store for one request (`io`, from `peer`) inside `sandbox`, with the
/// memory cap and the CPU deadline (epoch callback: traps once the guest
/// has computed through the call timeout's worth of epoch ticks since it
/// last returned from a host call; see [`StoreState::tick_computing`]).
/// With `yield_to_loop` the guest also yields to its event loop at every
/// tick — with or without a deadline — and the time it spends parked there
/// does not count against its budget. A grant that cannot be applied gives
/// `io` back with the reason.
fn new_store<C: Send + 'static>(
    engine: &WasmEngine,
    sandbox: &Arc<Sandbox>,
    io: C,
    peer: &crate::address::PeerAddr,
    yield_to_loop: bool,
) -> Result<Store<StoreState<C>>, (C, Outcome)> {
    let wasi = match sandbox.wasi_up_front(peer) {
        Ok(wasi) => wasi,
        Err(err) => {
            let reason = format!("cannot apply grants: {}", crate::one_line(&err));
            return Err((io, Outcome::HostError(reason)));
        }
    };
    let limits = engine.limits();
    let state = StoreState::new(io, peer.clone(), sandbox, wasi, limits.max_memory);
    let budget = limits.cpu_deadline().then_some(limits.call_timeout);
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|state| &mut state.limits);
    // Event-loop instances only exist when epoch checks are on.
    if budget.is_some() || yield_to_loop {
        let budget_ticks = budget.map(|budget| (budget, engine::ticks_in(budget)));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let computed = ctx.data_mut().tick_computing();
            if let Some((budget, ticks)) = budget_ticks
                && computed >= ticks
            {
                return Err(wasmtime::Error::new(CallTimeout(budget)));
            }
            if !yield_to_loop {
                return Ok(UpdateDeadline::Continue(1));
            }
            // `yield_now` lets the loop poll for I/O before resuming this
            // guest, so its neighbours are served even when every other
            // task on the loop computes too. The next deadline is set when
            // the guest resumes, so time parked is not counted.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
    }
    Ok(store)
}

/// Adds the memory limit to a trap's reason when the guest had hit it.
fn note_memory_limit<C>(outcome: &mut Outcome, store: &Store<StoreState<C>>, max_memory: usize) {
    if let Outcome::Trap(reason) = outcome
        && store.data().limits.hit
    {
        reason.push_str(&format!(
            " (after reaching the memory limit of {max_memory} bytes)"
        ));
    }
}

/// Turns a failed call into [`Outcome::Trap`] with a one-line reason.
fn trapped(err: wasmtime::Error) -> Outcome {
    if let Some(timeout) = err.downcast_ref::<CallTimeout>() {
        return Outcome::Trap(timeout.to_string());
    }
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        return Outcome::Trap(format!("trap: {trap}"));
    }
    Outcome::Trap(format!("trap: {}", one_line(&err)))
}

/// The first line of an error's message (wasmtime appends backtraces).
fn one_line(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    text.lines().next().unwrap_or_default().trim().to_string()
}
