//! Panic messages for lean builds (`wasm32-unknown-unknown`).
//!
//! There, std has no stderr (what it prints goes nowhere), so a panic would
//! reach the host as a bare `unreachable` trap. [`install`] sets a panic
//! hook that writes the message to WASI's stderr, which the host logs with
//! the connection, as it does for a `wasm32-wasip2` build. The hook imports
//! only `wasi:cli/stderr` and the `wasi:io` types it needs: a fraction of
//! what std's WASI support imports, which is what makes a lean instance
//! cheaper to create.

use std::sync::Once;

use wasip2::cli::stderr::get_stderr;

/// The most `blocking-write-and-flush` takes in one call.
const WRITE_LIMIT: usize = 4096;

/// Sets the panic hook, the first time only.
pub(crate) fn install() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = format!("plugin {info}\n");
            let stderr = get_stderr();
            for chunk in message.as_bytes().chunks(WRITE_LIMIT) {
                if stderr.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }));
    });
}
