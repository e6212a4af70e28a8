//! Turning plugin bytes into a [`Plugin`]: WebAssembly components go to the
//! wasm runtime (as the `protocol` world when they export it, else the
//! `handler` world), ELF shared libraries to the native loader.

use std::time::Duration;

use anyhow::Result;

use super::Plugin;
use super::native::{self, NativePlugin};
use super::source::PluginBytes;
use super::wasm::{ComponentInfo, WasmRuntime, exports_protocol};

/// Which kind of plugin a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// A WebAssembly component (sandboxed).
    Wasm,
    /// A shared library implementing the native C ABI (not sandboxed).
    Native,
}

/// What loading found out, for logs and `host check`.
#[derive(Debug, Clone)]
pub enum LoadDetails {
    /// A component: its world, imports, exports and compile time.
    Wasm(ComponentInfo),
    /// A native library and the name it gave itself.
    Native {
        /// The name in the plugin's table.
        name: String,
    },
}

impl LoadDetails {
    /// Time spent compiling (zero for native plugins).
    pub fn compile_time(&self) -> Duration {
        match self {
            LoadDetails::Wasm(info) => info.compile_time,
            LoadDetails::Native { .. } => Duration::ZERO,
        }
    }

    /// Whether compiled code came from the cache.
    pub fn cached(&self) -> bool {
        matches!(self, LoadDetails::Wasm(info) if info.cached)
    }
}

/// The kind of `bytes`: `forced`, or recognised by the ELF magic.
pub fn kind_of(forced: Option<PluginKind>, bytes: &[u8]) -> PluginKind {
    forced.unwrap_or(if bytes.starts_with(native::ELF_MAGIC) {
        PluginKind::Native
    } else {
        PluginKind::Wasm
    })
}

/// Whether `bytes` (of kind `forced`, or recognised) are a component of
/// the `protocol` world (one instance serving many connections).
pub fn is_protocol(forced: Option<PluginKind>, bytes: &[u8]) -> bool {
    kind_of(forced, bytes) == PluginKind::Wasm && exports_protocol(bytes)
}

/// Loads plugins of either kind.
#[derive(Clone)]
pub struct Loader {
    wasm: WasmRuntime,
    kind: Option<PluginKind>,
}

impl Loader {
    /// A loader using `wasm` for components; `kind` forces a kind instead
    /// of recognising it from the file's contents.
    pub fn new(wasm: WasmRuntime, kind: Option<PluginKind>) -> Self {
        Self { wasm, kind }
    }

    /// The kind of `bytes`: forced, or recognised by the ELF magic.
    pub fn kind_of(&self, bytes: &[u8]) -> PluginKind {
        kind_of(self.kind, bytes)
    }

    /// The WebAssembly runtime (for datagram plugins).
    pub fn wasm(&self) -> &WasmRuntime {
        &self.wasm
    }

    /// Whether `bytes` are a component of the `protocol` world (one
    /// instance serving many connections).
    pub fn is_protocol(&self, bytes: &[u8]) -> bool {
        is_protocol(self.kind, bytes)
    }

    /// Loads and checks a plugin; `what` names it in errors.
    pub fn load(&self, bytes: &PluginBytes, what: &str) -> Result<(Box<dyn Plugin>, LoadDetails)> {
        Ok(match self.kind_of(&bytes.bytes) {
            PluginKind::Wasm if exports_protocol(&bytes.bytes) => {
                let (plugin, info) = self.wasm.load_protocol(bytes, what)?;
                (Box::new(plugin), LoadDetails::Wasm(info))
            }
            PluginKind::Wasm => {
                let (plugin, info) = self.wasm.load(bytes, what)?;
                (Box::new(plugin), LoadDetails::Wasm(info))
            }
            PluginKind::Native => {
                let (plugin, name) = NativePlugin::load(bytes, what)?;
                (Box::new(plugin), LoadDetails::Native { name })
            }
        })
    }
}
