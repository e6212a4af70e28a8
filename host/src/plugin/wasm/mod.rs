//! WebAssembly component plugins. This module is the runtime every world
//! shares: the engine ([`engine`]: pooling allocator, epoch ticker), the
//! linkers ([`linker`]) with the host functions they put over generated
//! ones to take a guest's bytes in place ([`guest_memory`]), the compile
//! cache ([`cache`]), recognising and
//! checking components ([`inspect`]), and the sandboxed store each
//! instance gets ([`new_store`]: memory cap, CPU deadline, the grants of
//! [`grants`], guest output to the log). The worlds are modules of their
//! own: [`handler`] (an instance per connection, on a thread or an event
//! loop), [`datagram`] (an instance per datagram) and [`protocol`] (one
//! instance serving many connections through events); a new world is a
//! new module beside them, with its linker in [`linker`].

mod cache;
mod config_import;
mod datagram;
mod engine;
mod grants;
mod guest_memory;
mod guest_output;
mod handler;
mod inspect;
mod linker;
mod protocol;
mod state;
mod store_import;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};

pub use self::cache::{CacheSettings, CompileCache};
pub use self::datagram::{CurrentDatagram, DATAGRAM_WORLD, DatagramPlugin};
pub use self::engine::{InstanceLimits, WasmEngine, write_perf_map};
pub use self::grants::{DirGrant, Grants, Sandbox};
pub use self::handler::WasmPlugin;
pub use self::handler::bindings::WORLD_NAME;
pub use self::inspect::exports_protocol;
use self::linker::Linkers;
pub use self::protocol::{PROTOCOL_WORLD, WasmProtocol};
use self::state::StoreState;
use super::Outcome;
use super::source::PluginBytes;

/// The engine, the linkers every plugin is checked against, and the
/// compile cache: everything needed to turn plugin bytes into a plugin of
/// one of the worlds ([`WasmPlugin`], [`DatagramPlugin`]).
#[derive(Clone)]
pub struct WasmRuntime {
    engine: WasmEngine,
    linkers: Linkers,
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
    /// Creates the engine with `limits` and the linkers of every world;
    /// each store grants what `sandbox` allows. `cache` enables the
    /// compile cache.
    pub fn new(
        limits: InstanceLimits,
        cache: Option<CacheSettings>,
        sandbox: Sandbox,
    ) -> Result<Self> {
        let engine = WasmEngine::new(limits)?;
        let linkers = Linkers::new(&engine)?;
        let cache = cache
            .map(|settings| CompileCache::new(settings, engine.engine()))
            .transpose()?;
        Ok(Self {
            engine,
            linkers,
            cache,
            sandbox: Arc::new(sandbox),
        })
    }

    /// The limits every instance of this runtime gets.
    pub fn limits(&self) -> &InstanceLimits {
        self.engine.limits()
    }

    /// Compiles a component (or loads it from the cache) and describes it
    /// for `world`; checking and linking are up to the caller.
    pub(super) fn compile(
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

/// The trap raised when a guest computes past its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("plugin ran for more than {0:?} without returning to the host (call timeout)")]
struct CallTimeout(Duration);

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
