//! The shared wasmtime [`Engine`]: compiler and runtime settings, the pooling
//! allocator that makes a fresh instance per connection cheap, and the epoch
//! ticker that lets the host stop a plugin that computes for too long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

/// How often the epoch ticker advances the engine's epoch: the resolution of
/// CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How many epoch ticks make up `budget` (at least one): the CPU deadline
/// counts whole ticks the guest computes through.
pub fn ticks_in(budget: Duration) -> u32 {
    let ticks = budget.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
    u32::try_from(ticks).unwrap_or(u32::MAX)
}

/// Whether engines created from now on describe their compiled code in
/// `/tmp/perf-<pid>.map` (see [`write_perf_map`]).
static PERF_MAP: AtomicBool = AtomicBool::new(false);

/// Makes every engine created from now on append the address and name of
/// each compiled plugin function to `/tmp/perf-<pid>.map`, wasmtime's perf
/// map, so that `perf record`/`perf report` name plugin functions instead
/// of showing `[JIT]` addresses. The file is per process, hence a process-
/// wide switch; it stays after exit for `perf report` to read.
pub fn write_perf_map() {
    PERF_MAP.store(true, Ordering::Relaxed);
}

/// Limits every instance runs under.
#[derive(Debug, Clone)]
pub struct InstanceLimits {
    /// Largest linear memory one instance may grow to, in bytes.
    pub max_memory: usize,
    /// Longest a single stretch of guest code may run without returning to
    /// the host (time blocked in host calls such as `read` does not count).
    /// Zero turns the CPU deadline (and epoch interruption) off.
    pub call_timeout: Duration,
    /// How many instances may be alive at once (one per open connection).
    pub max_instances: u32,
    /// Largest WebAssembly stack, in bytes.
    pub max_wasm_stack: usize,
    /// How long reads and writes inside `finish` may block in total.
    pub finish_timeout: Duration,
    /// Whether instances may run on event-loop threads: each then needs a
    /// fiber stack, which the pool reserves up front.
    pub event_loop: bool,
}

impl InstanceLimits {
    /// The limits of a listener's instances: memory and CPU per instance,
    /// room for `max_instances` live at once (fiber stacks too, with
    /// `event_loop`), the defaults for the rest.
    pub fn for_listener(
        max_memory: usize,
        call_timeout: Duration,
        max_instances: usize,
        event_loop: bool,
    ) -> Self {
        Self {
            max_memory,
            call_timeout,
            max_instances: u32::try_from(max_instances).unwrap_or(u32::MAX),
            event_loop,
            ..Self::default()
        }
    }

    /// The memory cap of an instance when none is asked for: 64 MiB for
    /// an instance that serves one connection (or one datagram), 256 MiB
    /// for a `shared` one, which holds the state of all its connections.
    pub fn default_max_memory(shared: bool) -> usize {
        if shared { 256 << 20 } else { 64 << 20 }
    }

    /// Whether guest calls run under a CPU deadline.
    pub fn cpu_deadline(&self) -> bool {
        !self.call_timeout.is_zero()
    }

    /// Whether compiled code checks the epoch: for the CPU deadline, and on
    /// event loops (even without one) so that a computing guest yields.
    pub fn epoch_checks(&self) -> bool {
        self.cpu_deadline() || self.event_loop
    }
}

impl Default for InstanceLimits {
    fn default() -> Self {
        Self {
            max_memory: Self::default_max_memory(false),
            call_timeout: Duration::from_secs(5),
            max_instances: 1000,
            max_wasm_stack: 512 * 1024,
            finish_timeout: crate::plugin::lifecycle::FINISH_TIMEOUT,
            event_loop: false,
        }
    }
}

/// Core instances, memories and tables a single component may use. Generous
/// enough for componentize-py/-js guests, which link several core modules:
/// a componentize-py guest built with `--stub-wasi` has 38 core instances.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 32;
/// Stack a fiber keeps for host code beyond the guest's own.
const FIBER_HOST_STACK: usize = 512 * 1024;
/// Freed instance slots decommitted together.
const DECOMMIT_BATCH: usize = 32;
/// Bytes of a recycled memory (and table) reset in place instead of
/// decommitted: covers the pages a small guest dirties per connection, and
/// for a big guest (CPython, SpiderMonkey, Go's runtime) the pages every
/// instance dirties at start, which then are not faulted in again. The
/// price: a free slot keeps up to this much resident per memory, and
/// without PAGEMAP_SCAN (Linux before 6.7) every recycle resets this much
/// whatever the guest wrote.
const MEMORY_KEEP_RESIDENT: usize = 256 * 1024;
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;
/// Memories and tables the pool holds per live instance: each is address
/// space reserved up front, and most components use one memory and a few
/// tables. (Core instances need no such share: see [`PoolTotals`].)
const TABLES_PER_SLOT: u32 = 4;
const MEMORIES_PER_SLOT: u32 = 2;

/// How many core instances, memories and tables the pool holds in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PoolTotals {
    core_instances: u32,
    memories: u32,
    tables: u32,
}

impl PoolTotals {
    /// Room for `instances` live component instances. Core instances: as
    /// many as the largest component may have, for every one of them; in
    /// wasmtime 48 that total is only a count (a core instance's metadata
    /// is allocated when it is created), so it costs nothing, and a guest
    /// that links many core modules (a componentize-py Python guest: 14)
    /// fills every slot rather than hitting the count first. Memories and
    /// tables: the usual share each, and always room for one of the largest
    /// component (`host check`, `--max-connections 1`).
    fn for_instances(instances: u32) -> Self {
        let total = |per_slot: u32, per_component: u32| {
            instances.saturating_mul(per_slot).max(per_component)
        };
        Self {
            core_instances: instances.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT),
            memories: total(MEMORIES_PER_SLOT, MAX_MEMORIES_PER_COMPONENT),
            tables: total(TABLES_PER_SLOT, MAX_TABLES_PER_COMPONENT),
        }
    }
}

/// The engine plus the limits it was configured with.
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    limits: Arc<InstanceLimits>,
}

impl WasmEngine {
    /// Builds the engine and starts its epoch ticker thread.
    pub fn new(limits: InstanceLimits) -> Result<Self> {
        let config = Self::config(&limits);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the WebAssembly engine (pooling allocator)")?;
        if limits.epoch_checks() {
            spawn_epoch_ticker(&engine)?;
        }
        Ok(Self {
            engine,
            limits: Arc::new(limits),
        })
    }

    fn config(limits: &InstanceLimits) -> Config {
        let mut pool = PoolingAllocationConfig::new();
        let slots = limits.max_instances.max(1);
        let totals = PoolTotals::for_instances(slots);
        pool.total_component_instances(slots)
            .total_core_instances(totals.core_instances)
            .total_memories(totals.memories)
            .total_tables(totals.tables)
            .total_stacks(if limits.event_loop { slots } else { 0 })
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .max_memory_size(limits.max_memory)
            .table_elements(100_000)
            // When a slot is recycled, find the pages the guest wrote
            // (PAGEMAP_SCAN, Linux 6.7+) and reset up to these many bytes of
            // them in place, so they stay resident and the next instance
            // does not fault them in again; anything beyond is decommitted.
            // Without PAGEMAP_SCAN this falls back to resetting the first
            // bytes of each memory.
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto)
            // Return freed slots' pages to the OS in batches: one round of
            // TLB shootdowns for many instances instead of one each.
            .decommit_batch_size(DECOMMIT_BATCH);

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(limits.epoch_checks())
            .max_wasm_stack(limits.max_wasm_stack)
            // Fibers of event-loop instances: the guest's stack plus room
            // for the host calls it makes.
            .async_stack_size(limits.max_wasm_stack + FIBER_HOST_STACK)
            // A memory never grows past `max_memory`, so reserve exactly that
            // (plus a guard) instead of 4 GiB per slot: thousands of slots
            // then fit in the address space.
            .memory_reservation(limits.max_memory as u64)
            .memory_guard_size(64 * 1024)
            .memory_reservation_for_growth(0)
            .memory_init_cow(true)
            .parallel_compilation(true);
        if PERF_MAP.load(Ordering::Relaxed) {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        config
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits every instance gets.
    pub fn limits(&self) -> &InstanceLimits {
        &self.limits
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so running guests check
/// their deadline. The thread lives as long as the process.
fn spawn_epoch_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("epoch-ticker".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_for_one_instance_fits_the_largest_component() {
        let one = PoolTotals::for_instances(1);
        assert_eq!(one.core_instances, MAX_CORE_INSTANCES_PER_COMPONENT);
        assert_eq!(one.memories, MAX_MEMORIES_PER_COMPONENT);
        assert_eq!(one.tables, MAX_TABLES_PER_COMPONENT);
        let many = PoolTotals::for_instances(1000);
        assert_eq!(many.core_instances, 1000 * MAX_CORE_INSTANCES_PER_COMPONENT);
        assert_eq!(many.memories, 1000 * MEMORIES_PER_SLOT);
    }

    /// A component of `count` core instances of an empty module.
    fn component_of_core_instances(count: u32) -> Vec<u8> {
        use wasm_encoder::{Component, InstanceSection, Module, ModuleArg, ModuleSection};
        let mut component = Component::new();
        component.section(&ModuleSection(&Module::new()));
        let mut instances = InstanceSection::new();
        for _ in 0..count {
            instances.instantiate(0, std::iter::empty::<(&str, ModuleArg)>());
        }
        component.section(&instances);
        component.finish()
    }

    /// An engine whose pool holds `max_instances`, and a component of 38
    /// core instances (a componentize-py guest built with `--stub-wasi`)
    /// compiled for it.
    fn pool_and_big_component(max_instances: u32) -> (WasmEngine, wasmtime::component::Component) {
        let engine = WasmEngine::new(InstanceLimits {
            max_instances,
            ..InstanceLimits::default()
        })
        .expect("engine");
        let bytes = component_of_core_instances(38);
        let component =
            wasmtime::component::Component::new(engine.engine(), &bytes).expect("compiles");
        (engine, component)
    }

    #[test]
    fn a_component_with_as_many_core_instances_as_a_componentize_py_stub_wasi_guest_instantiates() {
        // `host check` sizes its pool for one instance; `run` for many.
        for max_instances in [1, 1000] {
            let (engine, component) = pool_and_big_component(max_instances);
            let mut store = wasmtime::Store::new(engine.engine(), ());
            wasmtime::component::Linker::<()>::new(engine.engine())
                .instantiate(&mut store, &component)
                .expect("38 core instances fit one component");
        }
    }

    #[test]
    fn every_slot_of_the_pool_fits_a_component_of_many_core_instances() {
        // A componentize-py guest on every connection: the pool must run
        // out of slots, not of core instances, first. (With 8 core
        // instances per slot it held 5,714 Python connections of 10,000.)
        let max_instances = 10;
        let (engine, component) = pool_and_big_component(max_instances);
        let linker = wasmtime::component::Linker::<()>::new(engine.engine());
        let mut live = Vec::new();
        for slot in 0..max_instances {
            let mut store = wasmtime::Store::new(engine.engine(), ());
            linker
                .instantiate(&mut store, &component)
                .unwrap_or_else(|err| panic!("instance {slot} of {max_instances}: {err:?}"));
            live.push(store);
        }
        let mut store = wasmtime::Store::new(engine.engine(), ());
        assert!(
            linker.instantiate(&mut store, &component).is_err(),
            "one more than the pool's slots"
        );
    }

    #[test]
    fn a_budget_is_rounded_up_to_whole_ticks() {
        assert_eq!(ticks_in(Duration::from_secs(5)), 500);
        assert_eq!(ticks_in(Duration::from_millis(15)), 2);
        assert_eq!(ticks_in(Duration::from_millis(1)), 1);
        assert_eq!(ticks_in(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
