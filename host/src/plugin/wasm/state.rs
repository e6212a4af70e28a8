//! What a store holds for one request: the connection (for the stream
//! world; nothing for a datagram), the resource table the guest's handles
//! live in, the sandbox and the WASI context built from it, memory limits
//! and the count of epoch ticks the CPU deadline is measured in.

use std::sync::Arc;

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
    /// Whole epoch ticks the guest has computed through since it last
    /// returned from the host: what the CPU deadline bounds.
    ticks_computing: u32,
    /// Set when control returns to the guest; the next tick restarts the
    /// count.
    resumed: bool,
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
            ticks_computing: 0,
            resumed: true,
        }
    }

    /// Gives the connection (or whatever `io` is) back.
    pub(super) fn into_io(self) -> C {
        self.io
    }

    /// Marks the moment control returns to the guest: a new stretch of
    /// computation starts. Called on every host call's return, so it reads
    /// no clock.
    pub(super) fn guest_resumes(&mut self) {
        self.resumed = true;
    }

    /// Counts an epoch tick the guest saw while computing (the epoch
    /// callback runs at the guest's first check after each tick) and
    /// returns how many whole ticks it has computed through since it last
    /// resumed. The first tick after resuming is not counted: the guest
    /// may have resumed just before it.
    ///
    /// A count of `n` means at least `n` tick intervals of wall time have
    /// passed since the guest resumed, and the guest was running at each
    /// of those ticks' ends: time it spent blocked in a host call, waiting
    /// for a CPU or parked on an event loop mostly passes uncounted (at
    /// most one tick per wait), so the count measures computation, not
    /// waiting.
    pub(super) fn tick_computing(&mut self) -> u32 {
        if std::mem::take(&mut self.resumed) {
            self.ticks_computing = 0;
        } else {
            self.ticks_computing = self.ticks_computing.saturating_add(1);
        }
        self.ticks_computing
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

    fn state() -> DatagramState {
        let sandbox = Arc::new(Sandbox::new(&Grants::default(), BTreeMap::new()).unwrap());
        let peer = PeerAddr::Ip("127.0.0.1:1".parse().unwrap());
        StoreState::new((), peer, &sandbox, None, 1 << 20)
    }

    #[test]
    fn computing_ticks_restart_after_every_return_to_the_guest() {
        let mut state = state();
        // The first tick of a stretch may be a partial one.
        assert_eq!(state.tick_computing(), 0);
        assert_eq!(state.tick_computing(), 1);
        assert_eq!(state.tick_computing(), 2);
        state.guest_resumes();
        assert_eq!(state.tick_computing(), 0);
        assert_eq!(state.tick_computing(), 1);
    }

    #[test]
    fn the_wasi_context_is_built_at_the_first_wasi_call() {
        let mut state = state();
        assert!(state.wasi.is_none());
        let _ = state.ctx();
        assert!(state.wasi.is_some());
    }
}
