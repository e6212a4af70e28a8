//! The `protocol` world (Twisted's `Protocol` and `Factory`): one instance
//! serves many connections through events. The host calls `init` once,
//! then `connection-made`, `data-received`, `write-drained`,
//! `connection-lost` and `timer-fired` as the reactor (`server/reactor.rs`)
//! sees things happen; the guest's `transports` and `timers` imports act on
//! the instance's [`SharedIo`] and never wait.
//!
//! Every callback is a plain synchronous call under the CPU deadline of a
//! call (no fiber, no thread per connection); a trap poisons the instance,
//! and the reactor closes its connections and starts a fresh one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{
    ComponentExportIndex, Func, Instance, InstancePre, Linker, TypedFunc, WasmList,
};
use wasmtime::{Store, StoreContextMut};

use super::guest_memory::{data_and_guest_bytes, replace_generated};
use super::state::StoreState;
use super::{
    ComponentInfo, Sandbox, WasmEngine, WasmRuntime, inspect, linker, new_store, note_memory_limit,
    trapped,
};
use crate::address::PeerAddr;
use crate::connection::shared::{LostReason, SharedIo, WriteError};
use crate::plugin::source::PluginBytes;
use crate::plugin::{Event, Plugin, PluginVersion, ProtocolInstance, ProtocolPlugin, Serving};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        world: "protocol",
        path: "../wit",
        with: {
            "plughost:handler/config": crate::plugin::wasm::handler::bindings::plughost::handler::config,
            "wasi:keyvalue/store": crate::plugin::wasm::handler::bindings::wasi::keyvalue::store,
            "wasi:keyvalue/atomics": crate::plugin::wasm::handler::bindings::wasi::keyvalue::atomics,
            "wasi:keyvalue/batch": crate::plugin::wasm::handler::bindings::wasi::keyvalue::batch,
            "plughost:handler/swap": crate::plugin::wasm::handler::bindings::plughost::handler::swap,
            "plughost:handler/topics": crate::plugin::wasm::handler::bindings::plughost::handler::topics,
        },
        imports: { default: trappable },
    });
}

use bindings::plughost::handler::timers;
use bindings::plughost::handler::transports::{
    self, LostReason as WitLostReason, SocketAddress, TlsSession, WriteError as WitWriteError,
};

/// The world protocol plugins implement.
pub const PROTOCOL_WORLD: &str = concat!(
    "plughost:handler/protocol@",
    super::handler::bindings::contract_version!()
);

/// The exports the world requires (`message-received`, added in 0.1.3,
/// is optional: a component built against 0.1.2 lacks it).
pub const PROTOCOL_EXPORTS: [&str; 6] = [
    "init",
    "connection-made",
    "data-received",
    "write-drained",
    "connection-lost",
    "timer-fired",
];

/// Store data of a protocol instance: its connections and timers.
pub type ProtocolState = StoreState<SharedIo>;

impl WasmRuntime {
    /// Compiles `plugin` (or loads it from the cache), checks it implements
    /// the protocol world, and pre-links it. `what` names it in errors.
    pub fn load_protocol(
        &self,
        plugin: &PluginBytes,
        what: &str,
    ) -> Result<(WasmProtocol, ComponentInfo)> {
        let (component, info) = self.compile(plugin, what, PROTOCOL_WORLD)?;
        inspect::check_named_exports(
            self.engine.engine(),
            &component,
            what,
            PROTOCOL_WORLD,
            &PROTOCOL_EXPORTS,
        )?;
        let pre = linker::prelink(&self.linkers.protocol, &component, what, PROTOCOL_WORLD, Ok)?;
        let exports = ExportIndices::new(&pre).with_context(|| format!("{what}: bad exports"))?;
        let plugin = WasmProtocol {
            version: plugin.version.clone(),
            pre,
            exports,
            engine: self.engine.clone(),
            sandbox: Arc::clone(&self.sandbox),
        };
        Ok((plugin, info))
    }
}

/// A compiled, checked and pre-linked protocol component.
pub struct WasmProtocol {
    version: PluginVersion,
    pre: InstancePre<ProtocolState>,
    exports: ExportIndices,
    engine: WasmEngine,
    sandbox: Arc<Sandbox>,
}

impl Plugin for WasmProtocol {
    fn version(&self) -> &PluginVersion {
        &self.version
    }

    fn serving(&self) -> Serving<'_> {
        Serving::Shared(self)
    }

    fn time_instantiation(&self) -> Result<Option<Duration>> {
        let started = std::time::Instant::now();
        let tag = PeerAddr::Unix(None);
        self.instantiate(SharedIo::new(0), &tag)
            .map_err(|reason| anyhow::anyhow!("{reason}"))?;
        Ok(Some(started.elapsed()))
    }
}

impl ProtocolPlugin for WasmProtocol {
    fn instantiate(
        &self,
        io: SharedIo,
        tag: &PeerAddr,
    ) -> Result<Box<dyn ProtocolInstance>, String> {
        let mut store = new_store(&self.engine, &self.sandbox, io, tag, false)
            .map_err(|(_, outcome)| outcome.reason().unwrap_or_default().to_string())?;
        let exports = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| self.exports.look_up(&mut store, &instance))
            .map_err(|err| format!("cannot instantiate: {}", super::one_line(&err)))?;
        let mut instance = WasmProtocolInstance {
            store,
            exports,
            max_memory: self.engine.limits().max_memory,
        };
        instance.store.data_mut().guest_resumes();
        let init = instance
            .exports
            .init
            .call(&mut instance.store, ())
            .map(|(result,)| result);
        match init {
            Ok(Ok(())) => Ok(Box::new(instance)),
            Ok(Err(message)) => Err(format!("init failed: {message}")),
            Err(err) => Err(format!("init: {}", instance.reason(err))),
        }
    }
}

/// Where the world's exports are in a component, found once per plugin.
struct ExportIndices {
    init: ComponentExportIndex,
    connection_made: ComponentExportIndex,
    data_received: ComponentExportIndex,
    write_drained: ComponentExportIndex,
    connection_lost: ComponentExportIndex,
    timer_fired: ComponentExportIndex,
    message_received: Option<ComponentExportIndex>,
}

impl ExportIndices {
    fn new(pre: &InstancePre<ProtocolState>) -> Result<Self> {
        let component = pre.component();
        let index = |name: &str| {
            component
                .get_export_index(None, name)
                .with_context(|| format!("no export `{name}`"))
        };
        Ok(Self {
            init: index("init")?,
            connection_made: index("connection-made")?,
            data_received: index("data-received")?,
            write_drained: index("write-drained")?,
            connection_lost: index("connection-lost")?,
            timer_fired: index("timer-fired")?,
            message_received: component.get_export_index(None, "message-received"),
        })
    }

    /// The exports of `instance`, each checked against the world's type.
    fn look_up(
        &self,
        store: &mut Store<ProtocolState>,
        instance: &Instance,
    ) -> wasmtime::Result<Exports> {
        Ok(Exports {
            init: instance.get_typed_func(&mut *store, self.init)?,
            connection_made: instance.get_typed_func(&mut *store, self.connection_made)?,
            data_received: checked::<(u64, &[u8]), ()>(store, instance, self.data_received)?,
            write_drained: instance.get_typed_func(&mut *store, self.write_drained)?,
            connection_lost: instance.get_typed_func(&mut *store, self.connection_lost)?,
            timer_fired: instance.get_typed_func(&mut *store, self.timer_fired)?,
            message_received: self
                .message_received
                .map(|index| checked::<(&str, &[u8]), ()>(store, instance, index))
                .transpose()?,
        })
    }
}

/// The function `index` of `instance`, type-checked as `P -> R` (for
/// parameters that borrow, whose typed form cannot be stored).
fn checked<P, R>(
    store: &mut Store<ProtocolState>,
    instance: &Instance,
    index: ComponentExportIndex,
) -> wasmtime::Result<Func>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    let func = instance
        .get_func(&mut *store, index)
        .ok_or_else(|| wasmtime::Error::msg("export is not a function"))?;
    func.typed::<P, R>(&*store)?;
    Ok(func)
}

/// An instance's exports.
struct Exports {
    init: TypedFunc<(), (Result<(), String>,)>,
    connection_made: TypedFunc<(u64,), ()>,
    /// Checked as `(u64, &[u8]) -> ()`.
    data_received: Func,
    write_drained: TypedFunc<(u64,), ()>,
    connection_lost: TypedFunc<(u64, WitLostReason), ()>,
    timer_fired: TypedFunc<(u64,), ()>,
    /// Checked as `(&str, &[u8]) -> ()`.
    message_received: Option<Func>,
}

/// A live protocol instance.
struct WasmProtocolInstance {
    store: Store<ProtocolState>,
    exports: Exports,
    max_memory: usize,
}

/// Calls `func` with `params`.
fn call<P, R>(
    store: &mut Store<ProtocolState>,
    func: &TypedFunc<P, R>,
    params: P,
) -> wasmtime::Result<R>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    func.call(&mut *store, params)
}

impl WasmProtocolInstance {
    /// Why a call failed, with the memory limit when the guest had hit it.
    fn reason(&self, err: wasmtime::Error) -> String {
        let mut outcome = trapped(err);
        note_memory_limit(&mut outcome, &self.store, self.max_memory);
        outcome.reason().unwrap_or("trap").to_string()
    }
}

impl ProtocolInstance for WasmProtocolInstance {
    fn io(&mut self) -> &mut SharedIo {
        &mut self.store.data_mut().io
    }

    fn deliver(&mut self, event: Event<'_>) -> Result<(), String> {
        self.store.data_mut().guest_resumes();
        let (store, guest) = (&mut self.store, &self.exports);
        let called = match event {
            Event::ConnectionMade(t) => call(store, &guest.connection_made, (t,)),
            Event::DataReceived(t, data) => {
                // SAFETY: `data_received` was type-checked as exactly this
                // signature when the instance was created (`checked`).
                let func =
                    unsafe { TypedFunc::<(u64, &[u8]), ()>::new_unchecked(guest.data_received) };
                call(store, &func, (t, data))
            }
            Event::WriteDrained(t) => call(store, &guest.write_drained, (t,)),
            Event::ConnectionLost(t, reason) => {
                call(store, &guest.connection_lost, (t, wit_reason(reason)))
            }
            Event::TimerFired(timer) => call(store, &guest.timer_fired, (timer,)),
            Event::MessageReceived(topic, message) => match guest.message_received {
                Some(func) => {
                    // SAFETY: `message_received` was type-checked as
                    // exactly this signature when the instance was created.
                    let func = unsafe { TypedFunc::<(&str, &[u8]), ()>::new_unchecked(func) };
                    call(store, &func, (topic, message))
                }
                // A 0.1.2 component cannot subscribe, so nothing arrives.
                None => Ok(()),
            },
        };
        called.map_err(|err| self.reason(err))
    }
}

fn wit_reason(reason: LostReason) -> WitLostReason {
    match reason {
        LostReason::PeerClosed => WitLostReason::PeerClosed,
        LostReason::Closed => WitLostReason::Closed,
        LostReason::Aborted => WitLostReason::Aborted,
        LostReason::Reset => WitLostReason::Reset,
        LostReason::TimedOut => WitLostReason::TimedOut,
        LostReason::Shutdown => WitLostReason::Shutdown,
        LostReason::Error => WitLostReason::Error,
    }
}

fn wit_address(addr: &PeerAddr) -> SocketAddress {
    let (ip, port) = super::handler::ip_and_port(addr);
    SocketAddress { ip, port }
}

/// The linker instance of the `transports` interface, and its `write`.
const TRANSPORTS_INSTANCE: &str = concat!(
    "plughost:handler/transports@",
    super::handler::bindings::contract_version!()
);
const WRITE_FUNCTION: &str = "write";

/// Replaces the generated `write`, which lifts the bytes into a host vector
/// first, with one that hands them to the socket (or the transport's
/// buffer) straight from the guest's memory: an allocation and a copy less
/// per write, which a chat room makes once per member and line.
pub(super) fn link_guest_memory_write(linker: &mut Linker<ProtocolState>) -> wasmtime::Result<()> {
    replace_generated(linker, TRANSPORTS_INSTANCE, |transports| {
        transports.func_wrap(
            WRITE_FUNCTION,
            |mut store: StoreContextMut<'_, ProtocolState>, (t, data): (u64, WasmList<u8>)| {
                let (state, data) = data_and_guest_bytes(&mut store, &data);
                Ok((state.write_bytes(t, data),))
            },
        )
    })
}

impl ProtocolState {
    fn write_bytes(&mut self, t: u64, data: &[u8]) -> Result<(), WitWriteError> {
        self.io.write(t, data).map_err(|err| match err {
            WriteError::Closed => WitWriteError::Closed,
            WriteError::BufferFull => WitWriteError::BufferFull,
        })
    }
}

impl transports::Host for ProtocolState {
    /// Only reached if [`link_guest_memory_write`] was not applied; the
    /// same write, from a copy.
    fn write(&mut self, t: u64, data: Vec<u8>) -> wasmtime::Result<Result<(), WitWriteError>> {
        Ok(self.write_bytes(t, &data))
    }

    fn buffered(&mut self, t: u64) -> wasmtime::Result<u64> {
        Ok(self.io.buffered(t) as u64)
    }

    fn write_limit(&mut self) -> wasmtime::Result<u64> {
        Ok(self.io.write_limit() as u64)
    }

    fn close(&mut self, t: u64) -> wasmtime::Result<()> {
        self.io.close(t);
        Ok(())
    }

    fn abort(&mut self, t: u64, reason: String) -> wasmtime::Result<()> {
        // The reason goes to one log line: keep it to a line's worth.
        let reason: String = reason.chars().take(512).collect();
        self.io.abort(t, reason);
        Ok(())
    }

    fn pause_reading(&mut self, t: u64) -> wasmtime::Result<()> {
        self.io.pause_reading(t);
        Ok(())
    }

    fn resume_reading(&mut self, t: u64) -> wasmtime::Result<()> {
        self.io.resume_reading(t);
        Ok(())
    }

    fn peer_address(&mut self, t: u64) -> wasmtime::Result<Option<SocketAddress>> {
        Ok(self.io.peer_addr(t).map(wit_address))
    }

    fn local_address(&mut self, t: u64) -> wasmtime::Result<Option<SocketAddress>> {
        Ok(self.io.local_addr(t).map(wit_address))
    }

    fn tls(&mut self, t: u64) -> wasmtime::Result<Option<TlsSession>> {
        Ok(self.io.tls(t).map(|n| TlsSession {
            version: n.version,
            cipher_suite: n.cipher_suite,
            server_name: n.server_name,
            alpn: n.alpn,
        }))
    }
}

impl timers::Host for ProtocolState {
    fn call_later(&mut self, delay_ms: u64) -> wasmtime::Result<Result<u64, String>> {
        Ok(self.io.timers().call_later(Duration::from_millis(delay_ms)))
    }

    fn cancel(&mut self, t: u64) -> wasmtime::Result<bool> {
        Ok(self.io.timers().cancel(t))
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::HasSelf;

    use super::bindings::Protocol;
    use super::*;

    #[test]
    fn the_guest_memory_write_replaces_the_generated_one() {
        let mut linker = Linker::<ProtocolState>::new(&wasmtime::Engine::default());
        Protocol::add_to_linker::<ProtocolState, HasSelf<ProtocolState>>(&mut linker, |s| s)
            .unwrap();
        super::super::guest_memory::assert_replaces_generated(
            linker,
            TRANSPORTS_INSTANCE,
            &[WRITE_FUNCTION],
            link_guest_memory_write,
        );
    }
}
