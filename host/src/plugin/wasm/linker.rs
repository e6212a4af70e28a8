//! Every linker the runtime builds — one per world and serving mode — and
//! pre-linking a component against one. A linker provides a world's
//! imports: WASI (whose grants are applied per store, see
//! [`Sandbox`](super::Sandbox)), the contract's interfaces (`connection`,
//! `config`, `datagrams`, `transports`, `timers`), and the host's own
//! guest-memory `read` and `write` of a `connection` and `write` of the
//! `transports` in place of the generated ones
//! ([`guest_memory`](super::guest_memory)).

use anyhow::{Context, Result};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};

use super::WasmEngine;
use super::datagram::bindings::DatagramHandler;
use super::handler::bindings::Handler;
use super::handler::event::EventState;
use super::handler::event::bindings::Handler as EventHandler;
use super::protocol::ProtocolState;
use super::protocol::bindings::Protocol;
use super::state::{ConnState, DatagramState};

/// The linkers of one runtime.
#[derive(Clone)]
pub(super) struct Linkers {
    /// The `handler` world, blocking: an instance on a thread of its own.
    pub handler: Linker<ConnState>,
    /// The `handler` world with async `read` and `write`, for instances on
    /// event loops (only when the engine was built for them).
    pub handler_on_event_loop: Option<Linker<EventState>>,
    /// The `datagram-handler` world.
    pub datagram: Linker<DatagramState>,
    /// The `protocol` world: one instance, many connections, every call
    /// synchronous.
    pub protocol: Linker<ProtocolState>,
}

impl Linkers {
    /// Builds every linker `engine` can run.
    pub fn new(engine: &WasmEngine) -> Result<Self> {
        let handler_on_event_loop = if engine.limits().event_loop {
            Some(handler_on_event_loop(engine)?)
        } else {
            None
        };
        Ok(Self {
            handler: handler(engine)?,
            handler_on_event_loop,
            datagram: datagram(engine)?,
            protocol: protocol(engine)?,
        })
    }
}

fn handler(engine: &WasmEngine) -> Result<Linker<ConnState>> {
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    Handler::add_to_linker::<ConnState, HasSelf<ConnState>>(&mut linker, |state| state)
        .and_then(|()| super::handler::link_guest_memory_io(&mut linker))
        .map_err(anyhow::Error::from)
        .context("cannot link the connection interface")?;
    Ok(linker)
}

fn handler_on_event_loop(engine: &WasmEngine) -> Result<Linker<EventState>> {
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    EventHandler::add_to_linker::<EventState, HasSelf<EventState>>(&mut linker, |state| state)
        .and_then(|()| super::handler::event::link_guest_memory_io(&mut linker))
        .map_err(anyhow::Error::from)
        .context("cannot link the connection interface")?;
    Ok(linker)
}

fn datagram(engine: &WasmEngine) -> Result<Linker<DatagramState>> {
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    DatagramHandler::add_to_linker::<DatagramState, HasSelf<DatagramState>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link the datagram world")?;
    Ok(linker)
}

fn protocol(engine: &WasmEngine) -> Result<Linker<ProtocolState>> {
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link WASI")?;
    Protocol::add_to_linker::<ProtocolState, HasSelf<ProtocolState>>(&mut linker, |s| s)
        .and_then(|()| super::protocol::link_guest_memory_write(&mut linker))
        .map_err(anyhow::Error::from)
        .context("cannot link the protocol world")?;
    Ok(linker)
}

/// Pre-links `component` (`what`, in errors) against `linker` and checks it
/// against the bindings of `world` with `typed` (a bindings' `…Pre::new`):
/// after this, creating an instance links and checks nothing.
pub(super) fn prelink<T: 'static, P>(
    linker: &Linker<T>,
    component: &Component,
    what: &str,
    world: &str,
    typed: impl FnOnce(InstancePre<T>) -> wasmtime::Result<P>,
) -> Result<P> {
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{what} cannot be linked against world {world}"))?;
    typed(instance_pre)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{what} does not implement world {world}"))
}
