//! Test plugin: allocates (and touches) memory without bound in `handle`,
//! until the host's memory limit makes the allocation fail (a trap).

use std::hint::black_box;

use plughost_sdk::{Conn, Handler};

/// Eats memory.
pub struct Hog;

impl Handler for Hog {
    fn handle(_conn: &mut Conn) -> Result<(), String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = Vec::with_capacity(1 << 20);
            // touch every page so the memory is really used
            for i in (0..1 << 20).step_by(4096) {
                block.resize(i + 1, 0u8);
                block[i] = black_box(1);
            }
            hoard.push(black_box(block));
        }
    }
}

plughost_sdk::export!(Hog);
