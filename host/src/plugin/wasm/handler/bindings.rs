//! Host-side bindings for the `plughost:handler/handler` world, generated
//! from `wit/handler.wit` at compile time.
//!
//! The `connection` resource is a
//! [`ConnectionHandle`](crate::plugin::wasm::state::ConnectionHandle) in the store's table;
//! the socket itself stays in host memory, so a guest only ever holds a
//! handle to it. The store interfaces (`wasi:keyvalue`, `swap`, `topics`)
//! are generated here once and shared by the other worlds' bindings.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    with: {
        "plughost:handler/connections.connection": crate::plugin::wasm::state::ConnectionHandle,
        "wasi:keyvalue/store.bucket": crate::plugin::wasm::store_import::BucketHandle,
    },
    imports: { default: trappable },
});

pub use plughost::handler::connections::{ErrorCode, ShutdownHow, SocketAddress};

/// The version of the `plughost:handler` package in `wit/`, as a literal
/// for `concat!`.
macro_rules! contract_version {
    () => {
        "0.1.4"
    };
}
pub(crate) use contract_version;

/// The fully qualified name of the world every handler plugin implements.
pub const WORLD_NAME: &str = concat!("plughost:handler/handler@", contract_version!());

/// The exports the world requires, in call order.
pub const REQUIRED_EXPORTS: [&str; 3] = ["setup", "handle", "finish"];
