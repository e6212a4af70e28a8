//! Integration tests: each starts the real `host` binary on an ephemeral
//! loopback port and talks to it over real sockets, with plugins built
//! from `plugins/` and `tests/plugins/`.

mod behaviour;
mod command_line;
mod events;
mod foundation;
mod grants;
mod languages;
mod limits;
mod native;
mod operability;
mod reload;
mod support;
