//! What a store holds for one request: the connection (for the stream
//! world; nothing for a datagram), the resource table the guest's handles
//! live in, the sandbox and the WASI context built from it, memory limits
//! and the clock the CPU deadline is measured against.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::grants::Sandbox;
use crate::address::PeerAddr;
use crate::connection::Connection;

/// The guest's handle to its connection (the WIT `connection` resource).
#[derive(Debug)]
pub struct ConnectionHandle;

/// Store data for one request; `io` is what the guest talks to.
pub struct StoreState<C> {
    pub(super) io: C,
    pub(super) table: ResourceTable,
    /// What the guest is granted, and the `config` interface's values.
    pub(super) sandbox: Arc<Sandbox>,
    /// Built up front or at the guest's first WASI call (see
    /// [`Sandbox::wasi_up_front`]).
    wasi: Option<WasiCtx>,
    pub(super) limits: MemoryCap,
    /// When the guest last (re)gained control: the start of the current
    /// stretch of guest computation that the CPU deadline bounds.
    guest_since: Instant,
    /// Time of that stretch spent parked on an event loop (not computing).
    parked: ParkedClock,
}

/// Time a guest spent yielded to its event loop, added by the yield's
/// future (which cannot reach the store) and read by the epoch callback.
#[derive(Clone, Default)]
pub struct ParkedClock(Arc<AtomicU64>);

impl ParkedClock {
    /// Adds `time` parked.
    pub fn add(&self, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// Store data of the stream world: one connection.
pub type ConnState = StoreState<Connection>;

/// Store data of the datagram world: nothing beyond the sandbox.
pub type DatagramState = StoreState<()>;

impl<C> StoreState<C> {
    /// The store data for serving `io` (from `peer`) inside `sandbox`, with
    /// the WASI context if it was built up front, and linear memories
    /// capped at `max_memory`.
    pub fn new(
        io: C,
        peer: PeerAddr,
        sandbox: &Arc<Sandbox>,
        wasi: Option<WasiCtx>,
        max_memory: usize,
    ) -> Self {
        let limits = MemoryCap {
            max_memory,
            peer,
            hit: false,
        };
        Self {
            io,
            table: ResourceTable::new(),
            sandbox: Arc::clone(sandbox),
            wasi,
            limits,
            guest_since: Instant::now(),
            parked: ParkedClock::default(),
        }
    }

    /// Gives the connection (or whatever `io` is) back.
    pub(super) fn into_io(self) -> C {
        self.io
    }

    /// Marks the moment control returns to the guest.
    pub(super) fn guest_resumes(&mut self) {
        self.guest_since = Instant::now();
        self.parked.reset();
    }

    /// How long the guest has been computing since it last returned from
    /// the host (time parked on an event loop excluded).
    pub(super) fn computing_for(&self) -> Duration {
        self.guest_since.elapsed().saturating_sub(self.parked.get())
    }

    /// The clock a yield adds its parked time to.
    pub(super) fn parked_clock(&self) -> ParkedClock {
        self.parked.clone()
    }
}

impl<C: Send> WasiView for StoreState<C> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (sandbox, peer) = (&self.sandbox, &self.limits.peer);
        let ctx = self
            .wasi
            .get_or_insert_with(|| sandbox.wasi_on_demand(peer));
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// Caps each linear memory at `max_memory` bytes and remembers whether the
/// guest ran into the cap, so a trap that follows can say why.
pub struct MemoryCap {
    max_memory: usize,
    /// Who the instance serves, for the log (and the on-demand WASI
    /// context's output streams).
    peer: PeerAddr,
    /// Set once a growth request was refused.
    pub(super) hit: bool,
}

/// Most elements a table may grow to (tables hold function references).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory;
        if !allowed && !self.hit {
            self.hit = true;
            tracing::warn!(
                peer = %self.peer,
                max_memory = self.max_memory,
                desired,
                "plugin reached its memory limit; allocation refused"
            );
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plugin::wasm::Grants;

    #[test]
    fn the_wasi_context_is_built_at_the_first_wasi_call() {
        let sandbox = Arc::new(Sandbox::new(&Grants::default(), BTreeMap::new()).unwrap());
        let peer = PeerAddr::Ip("127.0.0.1:1".parse().unwrap());
        let mut state = StoreState::new((), peer, &sandbox, None, 1 << 20);
        assert!(state.wasi.is_none());
        let _ = state.ctx();
        assert!(state.wasi.is_some());
    }
}
