//! Test plugin: allocates (and writes) as much as a busy connection might,
//! 64 KiB blocks of 192 KiB in all, and writes one line with the linear
//! memory's size in 64 KiB pages before and after:
//! `pages <before> <after>`. Built lean, it shows whether the SDK's heap
//! serves such a connection from the initial memory or grows it.

use plughost_sdk::{Conn, Handler};

/// How much the probe allocates at once, in 64 KiB blocks.
const BLOCKS: usize = 3;

/// The probe.
pub struct HeapProbe;

impl Handler for HeapProbe {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let before = pages();
        // `black_box`: the blocks must really be allocated.
        let blocks: Vec<Vec<u8>> = (0..BLOCKS)
            .map(|i| std::hint::black_box(vec![i as u8 + 1; 64 * 1024]))
            .collect();
        let after = pages();
        let touched: usize = blocks
            .iter()
            .map(|block| block[block.len() - 1] as usize)
            .sum();
        conn.write_all(format!("pages {before} {after} ({touched})\n").as_bytes())?;
        Ok(())
    }
}

/// The linear memory's size in pages (0 outside WebAssembly).
fn pages() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0);
    #[cfg(not(target_arch = "wasm32"))]
    0
}

plughost_sdk::export!(HeapProbe);
