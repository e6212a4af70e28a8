//! The global allocator of WebAssembly builds: the target's own (`System`)
//! on `wasm32-wasip2`, the arena-first heap of [`crate::lean_heap`] on
//! `wasm32-unknown-unknown`, except that large blocks start on a cache line.
//!
//! The host receives bulk data straight into the buffer the guest allocates
//! for `read`'s result, and the kernel's copy into a destination that starts
//! mid-line is slower. On the EPYC CI machine, six alternating 3-second bulk
//! echo runs gave 1,543 MB/s on average with the blocks wasi-libc's `malloc`
//! hands out (16-byte aligned) and 1,690 MB/s (+9.5 %) with this allocator;
//! with 8-byte-aligned blocks (Rust's own `dlmalloc`, tried for
//! `wasm32-unknown-unknown`) the echo ran at about 0.8x. The canonical ABI
//! allocates a `list<u8>` at alignment 1 and the guest frees it the same
//! way, so the alignment has to come from the allocator itself: any block
//! of [`LARGE`] bytes or more is laid out at [`LINE`] alignment, on
//! allocation and on release alike.
//!
//! Plugins that want their own `#[global_allocator]` turn this off with
//! `default-features = false` (feature `aligned-alloc`).

#[cfg(any(test, not(target_os = "unknown")))]
use std::alloc::System;
use std::alloc::{GlobalAlloc, Layout};
use std::ptr;

/// Blocks at least this large start on a cache line.
const LARGE: usize = 4096;
/// A cache line.
const LINE: usize = 64;

/// The allocator `B`, with large blocks aligned to [`LINE`].
struct LineAligned<B>(B);

/// The layout a block of `layout` really gets.
fn actual(layout: Layout) -> Layout {
    if layout.size() >= LARGE && layout.align() < LINE {
        // A power of two no smaller than the original: always valid.
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every call forwards to `B` with the layout `actual` derives from
// the caller's, which is the same on allocation and release because it
// depends on nothing but that layout.
unsafe impl<B: GlobalAlloc> GlobalAlloc for LineAligned<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { self.0.alloc(actual(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { self.0.alloc_zeroed(actual(layout)) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(block, actual(layout)) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = actual(layout);
        let Ok(new) = Layout::from_size_align(new_size, layout.align()).map(actual) else {
            return ptr::null_mut();
        };
        if old.align() == new.align() {
            return unsafe { self.0.realloc(block, old, new_size) };
        }
        // Crossing `LARGE` changes the alignment: move the block.
        let moved = unsafe { self.0.alloc(new) };
        if !moved.is_null() {
            unsafe {
                ptr::copy_nonoverlapping(block, moved, old.size().min(new_size));
                self.0.dealloc(block, old);
            }
        }
        moved
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
#[global_allocator]
static ALLOCATOR: LineAligned<crate::lean_heap::LeanHeap> =
    LineAligned(crate::lean_heap::LeanHeap::new());

#[cfg(all(target_arch = "wasm32", not(target_os = "unknown")))]
#[global_allocator]
static ALLOCATOR: LineAligned<System> = LineAligned(System);

#[cfg(test)]
mod tests {
    use super::*;

    fn is_line_aligned(block: *mut u8) -> bool {
        (block as usize).is_multiple_of(LINE)
    }

    #[test]
    fn only_large_blocks_get_a_cache_line() {
        let small = Layout::from_size_align(LARGE - 1, 1).unwrap();
        assert_eq!(actual(small), small);
        let large = Layout::from_size_align(LARGE, 1).unwrap();
        assert_eq!(actual(large).align(), LINE);
        let aligned_more = Layout::from_size_align(LARGE, 4 * LINE).unwrap();
        assert_eq!(actual(aligned_more), aligned_more);
    }

    #[test]
    fn blocks_keep_their_bytes_when_growing_past_the_threshold_and_back() {
        let byte = Layout::from_size_align(100, 1).unwrap();
        unsafe {
            let block = LineAligned(System).alloc(byte);
            for i in 0..100 {
                *block.add(i) = i as u8;
            }
            let grown = LineAligned(System).realloc(block, byte, 2 * LARGE);
            assert!(is_line_aligned(grown));
            let grown_layout = Layout::from_size_align(2 * LARGE, 1).unwrap();
            let shrunk = LineAligned(System).realloc(grown, grown_layout, 50);
            for i in 0..50 {
                assert_eq!(*shrunk.add(i), i as u8);
            }
            LineAligned(System).dealloc(shrunk, Layout::from_size_align(50, 1).unwrap());
        }
    }

    #[test]
    fn large_allocations_start_on_a_cache_line() {
        let layout = Layout::from_size_align(64 * 1024, 1).unwrap();
        unsafe {
            let block = LineAligned(System).alloc_zeroed(layout);
            assert!(is_line_aligned(block));
            assert_eq!(*block.add(64 * 1024 - 1), 0);
            LineAligned(System).dealloc(block, layout);
        }
    }
}
