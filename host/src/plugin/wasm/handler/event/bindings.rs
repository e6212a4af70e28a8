//! Host-side bindings for the `plughost:handler/handler` world with async
//! `read` and `write`, for instances that run on an event-loop thread: a
//! guest waiting for its client suspends instead of blocking the thread.
//!
//! The `config` interface is shared with the blocking bindings.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    with: {
        "plughost:handler/connections.connection": crate::plugin::wasm::state::ConnectionHandle,
        "plughost:handler/config": crate::plugin::wasm::handler::bindings::plughost::handler::config,
    },
    imports: {
        "plughost:handler/connections.[method]connection.read": async | trappable,
        "plughost:handler/connections.[method]connection.write": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});
