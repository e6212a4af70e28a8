//! `host`: a plugin host that owns the listeners (TCP, IPv6, Unix, UDP) and
//! serves each connection with request-handling code written as a
//! sandboxed WebAssembly component (or, for trusted code, a native
//! library), in the shape of Python's `socketserver.BaseRequestHandler`:
//! `setup`, `handle`, `finish` over a host-owned connection — or, in the
//! `protocol` world, Twisted's `Protocol`: one instance serving many
//! connections through events.
//!
//! # Map
//!
//! | module | its one job |
//! |---|---|
//! | [`service`] | what `host run` serves: one server per listener, its plugin, limits, grants, reload hooks, the admin listener |
//! | [`server`] | the accept loop (`mio`), access rules, the connection cap, signals and drain — and the serving modes: [`server`]'s `pool` (a thread per connection), `events` (event-loop threads) and `reactor` (shared instances); `udp` for datagrams |
//! | [`connection`] | the socket a plugin drives: byte counts, timeouts, error mapping; [`connection::event`] is its event-loop form; [`connection::shared`] a shared instance's connections and timers; [`connection::inbox`] a handler-world connection's topic messages (`read-or-message`); [`connection::tls`] its bytes through a TLS session |
//! | [`plugin`] | the [`Plugin`](plugin::Plugin) trait and its two shapes ([`Serving`](plugin::Serving)), the one [`lifecycle`](plugin::lifecycle) of per-connection plugins; [`plugin::wasm`] (runtime, worlds) and [`plugin::native`] implement them; loading, built-ins, plugin directories |
//! | [`reload`], [`watch`] | swapping a plugin under live traffic: on SIGHUP, or when its file or sources change |
//! | [`capacity`] | how many connections fit (`vm.max_map_count`, open files) |
//! | [`sys`] | every direct OS call (`libc`) |
//! | [`config`], [`address`], [`size`] | the configuration file, listen addresses, byte sizes |
//! | [`proxy_header`] | the PROXY protocol header (v1, v2) a load balancer sends first; `server/preamble.rs` reads it |
//! | [`tls`] | TLS termination (`--tls-cert`): certificates (SNI, reload) and the sessions `server/preamble.rs` shakes hands with |
//! | [`store`] | the shared store a listener may grant (`--store`): keys, counters and topics, in memory or on Redis |
//! | [`metrics`], [`admin`] | counters per listener; `/metrics` and `/status` |
//!
//! # One connection's route
//!
//! Event loops (the default for WASM plugins):
//!
//! 1. `server/mod.rs`: `mio` reports the listener readable; `accept_all`
//!    checks the cap and accepts.
//!    On a listener that expects a PROXY header or TLS, `server/preamble.rs`
//!    first reads the header and shakes hands on a thread of its own, then
//!    hands the connection (a [`Stream::Tls`](connection::Stream::Tls)
//!    under TLS) to `server/dispatch.rs`.
//! 2. `server/mod.rs` `dispatch`: checks the `access.rs` rules, registers
//!    the socket in `live.rs`, builds a `Session` with the plugin version
//!    in service; the plugin has an event-loop form
//!    ([`ConnectionPlugin::on_event_loop`](plugin::ConnectionPlugin::on_event_loop)), so
//!    `server/events.rs` spawns the session on the least busy loop.
//! 3. `server/session.rs` `serve_events`: logs "connection opened", wraps
//!    the socket as an
//!    [`EventConnection`](connection::event::EventConnection), calls the
//!    plugin.
//! 4. `plugin/wasm/handler/mod.rs` (`EventPlugin for WasmPlugin`): a store
//!    from `plugin/wasm/mod.rs` `new_store` (sandbox, memory cap, CPU
//!    deadline), then `plugin/wasm/handler/event/mod.rs` instantiates on a
//!    fiber and runs [`plugin::lifecycle::run`]; the guest's `read`/`write`
//!    land in `plugin/wasm/handler/event/connection_resource.rs` and wait on
//!    the loop through `connection/event.rs`.
//! 5. `server/session.rs` `close`: unregisters the socket, closes it,
//!    counts the outcome in `metrics.rs` and logs one "connection closed"
//!    line.
//!
//! A thread per connection (`--event-loops 0`, and native plugins always):
//! steps 1–2 alike, then `server/pool.rs` runs `session::serve` on a
//! pooled thread; the socket is a blocking
//! [`Connection`](connection::Connection); the plugin's
//! [`ConnectionPlugin::serve`](plugin::ConnectionPlugin::serve) runs the lifecycle with
//! [`plugin::lifecycle::run_blocking`] — `plugin/wasm/handler/mod.rs` with
//! the blocking bindings, or `plugin/native/mod.rs` through the C ABI.
//!
//! A shared instance (a `protocol` plugin, [`Serving::Shared`](plugin::Serving)):
//! steps 1–2 alike, then `server/reactor.rs` hands the connection to the
//! reactor thread serving the fewest; the reactor registers its socket
//! with its own `mio` poll, puts it in the instance's
//! [`SharedIo`](connection::shared::SharedIo) and calls `connection-made`
//! (`plugin/wasm/protocol.rs`, a plain call under the CPU deadline); it
//! reads what arrives into `data-received`, the guest's `write` (from the
//! guest's memory, `plugin/wasm/guest_memory.rs`) is held and sent with the
//! rest of its burst — when the callback returns for its own connection, at
//! the end of the reactor's round for others — or buffered while the socket
//! is full, in `connection/shared.rs`, and every end is reported with
//! `connection-lost` and logged and counted by `server/session.rs` as in
//! step 5. A trap closes every connection of that instance.
//!
//! A store call (`--store`): every world's `wasi:keyvalue`, `swap` and
//! `topics` imports land in `plugin/wasm/store_import.rs`, which calls the
//! listener's [`ListenerStore`](store::ListenerStore) (`store/mod.rs`:
//! namespace, bounds, metrics) over `store/memory.rs` or `store/redis.rs`.
//! A published message fans out through `store/topics.rs` to each
//! subscriber's mailbox, which wakes its owner: a reactor (`mio` waker;
//! `message-received` in `server/reactor.rs`), or a handler-world
//! connection's doorbell (`connection/inbox.rs`, `sys/doorbell.rs`) that
//! its `read-or-message` waits on beside the socket — `poll` on a thread,
//! the tokio reactor on an event loop (`connection/event.rs`).
//!
//! A datagram: `server/udp.rs` receives it, a pooled thread hands it to a
//! fresh `datagram-handler` instance (`plugin/wasm/datagram.rs`), the
//! replies go back from the same socket.
//!
//! # To change X, edit Y
//!
//! | to change | edit |
//! |---|---|
//! | the order or bounds of `setup`/`handle`/`finish` | `plugin/lifecycle.rs` (every kind and mode follows) |
//! | what a shared instance is told, and when | `server/reactor.rs` (events), `connection/shared.rs` (writes, buffers, ends, timers) |
//! | add a world | a module beside `plugin/wasm/handler/`, `protocol.rs` and `datagram.rs`, its linker in `plugin/wasm/linker.rs`, its WIT in `wit/` |
//! | add a serving mode | a module beside `server/pool.rs`, `server/events.rs` and `server/reactor.rs`, chosen in `server/mod.rs` `dispatch` |
//! | what a plugin may reach | `plugin/wasm/grants.rs` (WASI context), `plugin/wasm/linker.rs` (imports) |
//! | engine, pooling, epochs | `plugin/wasm/engine.rs` |
//! | a flag | `main.rs`'s `cli/` (flags override the file: `cli/run.rs`), then `service.rs` |
//! | a configuration key | `config.rs`, then `cli/run.rs` `file_listener` |
//! | a store backend, bound or key layout | `store/` (`mod.rs` the trait and bounds, one file per backend) |
//! | TLS: certificates, SNI, ALPN | `tls/` (`mod.rs` the spec and the terminator, `certs.rs` loading and choosing); how bytes cross the session: `connection/tls.rs` |
//! | an OS call | `sys/` |
//! | a metric | `metrics.rs` |

#![deny(missing_docs)]

pub mod address;
pub mod admin;
pub mod capacity;
pub mod config;
pub mod connection;
pub mod metrics;
pub mod plugin;
pub mod proxy_header;
pub mod reload;
pub mod server;
pub mod service;
pub mod size;
pub mod store;
pub mod sys;
pub mod tls;
pub mod watch;

/// An error and its causes on one line: `outer: inner: root`.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
