//! Test plugin: recurses without bound in `handle` until the wasm stack
//! overflows (a trap).

use std::hint::black_box;

use plughost_sdk::{Conn, Handler};

/// Overflows the stack.
pub struct Recurse;

fn down(depth: u64) -> u64 {
    // a frame the optimizer cannot drop; the exit is never taken
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return frame[1];
    }
    black_box(down(frame[0] + 1)).wrapping_add(frame[2])
}

impl Handler for Recurse {
    fn handle(_conn: &mut Conn) -> Result<(), String> {
        Err(format!("recursion ended at {}", down(0)))
    }
}

plughost_sdk::export!(Recurse);
