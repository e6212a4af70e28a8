//! The heap of lean builds (`wasm32-unknown-unknown`): dlmalloc, as std
//! uses there, whose first region is an arena inside the module's initial
//! memory instead of memory the guest grows.
//!
//! std's allocator on this target gets every region with `memory.grow`,
//! starting with the first allocation. The host runs a fresh instance per
//! connection from a pooled memory slot, and growing a memory makes its new
//! pages accessible with an `mprotect`, which the slot undoes when it is
//! recycled: two system calls and a TLB shootdown across the host's threads
//! per connection, which cost more than the lean build saves at instance
//! creation (`host/benches/RESULTS.md`). The arena is a zeroed static, so
//! it lies in the initial memory the pooled slot keeps accessible from one
//! instance to the next; only a plugin that needs more than [`ARENA_SIZE`]
//! at once grows its memory, as before.

use core::arch::wasm32;
use core::cell::UnsafeCell;
use core::ptr;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use dlmalloc::{Allocator, Dlmalloc};

#[cfg(target_feature = "atomics")]
compile_error!("the lean heap assumes one thread: build without the `atomics` target feature");

/// Bytes of the initial memory set aside for the heap.
pub(crate) const ARENA_SIZE: usize = 256 * 1024;

/// WebAssembly's page size, the unit of `memory.grow`.
const WASM_PAGE: usize = 64 * 1024;

/// The arena: zero-initialised, so it costs no bytes in the module and no
/// page until it is used.
#[repr(C, align(64))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: only the allocator touches the arena, and only through the
// pointer it hands dlmalloc once (see `ArenaFirst::alloc`).
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));

/// dlmalloc's source of regions: the arena first, then `memory.grow`.
struct ArenaFirst {
    arena_given: AtomicBool,
}

// SAFETY: regions are handed out once each and never reclaimed (`free`
// and `free_part` refuse), the arena and grown pages start zeroed, and
// `page_size` is a power of two.
unsafe impl Allocator for ArenaFirst {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        if size <= ARENA_SIZE && !self.arena_given.swap(true, Ordering::Relaxed) {
            return (ARENA.0.get().cast(), ARENA_SIZE, 0);
        }
        let pages = size.div_ceil(WASM_PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        ((previous * WASM_PAGE) as *mut u8, pages * WASM_PAGE, 0)
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        WASM_PAGE
    }
}

/// The global allocator's backing store on this target.
pub(crate) struct LeanHeap(UnsafeCell<Dlmalloc<ArenaFirst>>);

// SAFETY: without the `atomics` feature (checked above) a module has one
// thread, so no two calls reach the cell at once.
unsafe impl Sync for LeanHeap {}

impl LeanHeap {
    /// An empty heap; the arena is claimed by the first allocation.
    pub(crate) const fn new() -> Self {
        Self(UnsafeCell::new(Dlmalloc::new_with_allocator(ArenaFirst {
            arena_given: AtomicBool::new(false),
        })))
    }

    /// The heap, for one call.
    #[allow(clippy::mut_from_ref)]
    fn heap(&self) -> &mut Dlmalloc<ArenaFirst> {
        // SAFETY: one thread (see `Sync`), and no call re-enters the
        // allocator while it holds this borrow.
        unsafe { &mut *self.0.get() }
    }
}

// SAFETY: forwards to dlmalloc, with the layout the caller gave.
unsafe impl GlobalAlloc for LeanHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { self.heap().malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { self.heap().calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { self.heap().free(block, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            self.heap()
                .realloc(block, layout.size(), layout.align(), new_size)
        }
    }
}
