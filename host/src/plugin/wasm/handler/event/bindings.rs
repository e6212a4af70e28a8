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
        "wasi:keyvalue/store": crate::plugin::wasm::handler::bindings::wasi::keyvalue::store,
        "wasi:keyvalue/atomics": crate::plugin::wasm::handler::bindings::wasi::keyvalue::atomics,
        "wasi:keyvalue/batch": crate::plugin::wasm::handler::bindings::wasi::keyvalue::batch,
        "plughost:handler/swap": crate::plugin::wasm::handler::bindings::plughost::handler::swap,
        "plughost:handler/topics": crate::plugin::wasm::handler::bindings::plughost::handler::topics,
    },
    imports: {
        "plughost:handler/connections.[method]connection.read": async | trappable,
        "plughost:handler/connections.[method]connection.read-or-message": async | trappable,
        "plughost:handler/connections.[method]connection.write": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});
