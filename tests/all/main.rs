//! Integration tests: each starts the real `host` binary on an ephemeral
//! loopback port and talks to it over real sockets, with plugins built
//! from `plugins/` and `tests/plugins/`. One module per feature; behaviour
//! that must not depend on how connections are served runs in every mode
//! (`in_every_mode!`: `<test>::on_threads`, `<test>::on_an_event_loop`).

#[macro_use]
mod support;

mod cli;
mod config;
mod languages;
mod limits;
mod listeners;
mod native;
mod operability;
mod protocol;
mod proxy;
mod reload;
mod sandbox;
mod scale_out;
mod serving;
mod shutdown;
mod store;
mod tls;
