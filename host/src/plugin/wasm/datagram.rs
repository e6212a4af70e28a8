//! Datagram plugins (the `datagram-handler` world): one fresh instance per
//! datagram, like socketserver's `UDPServer` creating a handler per
//! request. The plugin gets the datagram and its sender and returns the
//! datagrams to send back.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::state::{DatagramState, StoreState};
use super::{
    ComponentInfo, Sandbox, WasmEngine, WasmRuntime, new_store, note_memory_limit, trapped,
};
use super::{inspect, linker};
use crate::plugin::source::PluginBytes;
use crate::plugin::{Outcome, PluginVersion};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        world: "datagram-handler",
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

use bindings::DatagramHandlerPre;
use bindings::plughost::handler::datagrams::{Host, Peer};

/// The world datagram plugins implement.
pub const DATAGRAM_WORLD: &str = concat!(
    "plughost:handler/datagram-handler@",
    super::handler::bindings::contract_version!()
);

/// Most datagrams one call may send back.
pub const MAX_REPLIES: usize = 64;
/// Largest datagram sent back (the UDP/IPv4 payload limit).
pub const MAX_REPLY_SIZE: usize = 65_507;

impl<C: Send> Host for StoreState<C> {}

/// The datagram plugin in service, swappable by reloads while datagrams
/// are being handled (each keeps the `Arc` it started with).
pub type CurrentDatagram = Arc<arc_swap::ArcSwap<DatagramPlugin>>;

/// A compiled, checked and pre-linked datagram handler.
pub struct DatagramPlugin {
    version: PluginVersion,
    pre: DatagramHandlerPre<DatagramState>,
    engine: WasmEngine,
    sandbox: Arc<Sandbox>,
}

impl WasmRuntime {
    /// Compiles (or loads from the cache) a `datagram-handler` component.
    pub fn load_datagram(
        &self,
        plugin: &PluginBytes,
        what: &str,
    ) -> Result<(DatagramPlugin, ComponentInfo)> {
        let (component, info) = self.compile(plugin, what, DATAGRAM_WORLD)?;
        let engine = self.engine.engine();
        inspect::check_named_exports(engine, &component, what, DATAGRAM_WORLD, &["handle"])?;
        if info.exports.iter().any(|e| e == "setup") {
            bail!(
                "{what} is a stream handler (world {}), not a datagram handler (world \
                 {DATAGRAM_WORLD}): serve it on a TCP or Unix listener",
                super::WORLD_NAME
            );
        }
        let pre = linker::prelink(
            &self.linkers.datagram,
            &component,
            what,
            DATAGRAM_WORLD,
            DatagramHandlerPre::new,
        )?;
        let plugin = DatagramPlugin {
            version: plugin.version.clone(),
            pre,
            engine: self.engine.clone(),
            sandbox: Arc::clone(&self.sandbox),
        };
        Ok((plugin, info))
    }
}

impl DatagramPlugin {
    /// Which build this is.
    pub fn version(&self) -> &PluginVersion {
        &self.version
    }

    /// Handles one datagram from `sender` in a fresh instance; returns the
    /// replies (capped in number and size) and how the call ended.
    pub fn handle(&self, data: Vec<u8>, sender: SocketAddr) -> (Vec<Vec<u8>>, Outcome) {
        let peer = crate::address::PeerAddr::Ip(sender);
        let mut store = match new_store(&self.engine, &self.sandbox, (), &peer, false) {
            Ok(store) => store,
            Err(((), outcome)) => return (Vec::new(), outcome),
        };
        let handler = match self.pre.instantiate(&mut store) {
            Ok(handler) => handler,
            Err(err) => {
                let reason = format!("cannot instantiate: {}", super::one_line(&err));
                return (Vec::new(), Outcome::HostError(reason));
            }
        };
        let from = Peer {
            ip: sender.ip().to_string(),
            port: sender.port(),
        };
        store.data_mut().guest_resumes();
        let (replies, mut outcome) = match handler.call_handle(&mut store, &data, &from) {
            Ok(Ok(replies)) => (replies, Outcome::Ok),
            Ok(Err(message)) => (Vec::new(), Outcome::HandleError(message)),
            Err(err) => (Vec::new(), trapped(err)),
        };
        note_memory_limit(&mut outcome, &store, self.engine.limits().max_memory);
        let replies = replies
            .into_iter()
            .take(MAX_REPLIES)
            .map(|mut reply| {
                reply.truncate(MAX_REPLY_SIZE);
                reply
            })
            .collect();
        (replies, outcome)
    }
}
