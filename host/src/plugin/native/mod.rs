//! Native plugins: shared libraries that implement the same
//! `setup`/`handle`/`finish` lifecycle ([`lifecycle`], with the same bound
//! on `finish`) through the C ABI in `plughost-native-abi`
//! (`wit/native-abi`).
//!
//! Native code runs unsandboxed in the host process: no memory cap, no CPU
//! deadline, and a crash takes the host down. Panics are caught at the
//! plugin's side of the boundary (the Rust SDK does it) and close only
//! their connection.
//!
//! Loading: each library is loaded from a private copy with a random name
//! (created exclusively, readable only by the host's user) that is deleted
//! as soon as the loader has mapped it. So a killed host leaves nothing in
//! the temporary directory, no other local user can plant a library under
//! a name the host will load, and the loader's cache by path never serves
//! an old build after a reload.
//!
//! A library stays loaded while any connection that started on it is open
//! (connections hold the plugin's `Arc`); it is unloaded only after the
//! last one ends. glibc keeps a library mapped anyway if it registered
//! thread-local destructors (Rust dylibs using thread-locals do), so an
//! unloaded build may still occupy memory until exit.

mod callbacks;

use std::ffi::CStr;
use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use libloading::Library;
use plughost_native_abi::{ABI_VERSION, ENTRY_SYMBOL, EntryFn, Message, PluginTable, Status};
use tempfile::NamedTempFile;

use super::lifecycle::{self, Step};
use super::source::PluginBytes;
use super::{ConnectionPlugin, Outcome, Plugin, PluginVersion, Serving};
use crate::connection::Connection;

/// The ELF magic number: how a native plugin file is recognised.
pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// A loaded native plugin.
pub struct NativePlugin {
    version: PluginVersion,
    table: &'static PluginTable,
    /// Keeps the code `table` points into mapped; declared last so it is
    /// dropped after everything that may call into it.
    _library: Arc<Library>,
}

impl NativePlugin {
    /// Loads `plugin` (an ELF shared library) from a private copy and checks
    /// its entry point and ABI version. `what` names it in errors.
    pub fn load(plugin: &PluginBytes, what: &str) -> Result<(Self, String)> {
        let copy = private_copy(plugin)?;
        // SAFETY: loading a library runs its initialisers; native plugins
        // are trusted code by definition (the operator chose to load one).
        let library = unsafe { Library::new(copy.path()) }
            .with_context(|| format!("{what} cannot be loaded as a shared library"))?;
        // The mapping outlives the file: delete the copy now.
        copy.close()
            .context("cannot delete the private copy of a native plugin")?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }.map_err(|_| {
            anyhow::anyhow!(
                "{what} is not a plughost native plugin: it does not export `{ENTRY_SYMBOL}`"
            )
        })?;
        // SAFETY: the entry point takes no arguments and returns a pointer
        // to a static table (checked for null below).
        let table = unsafe { entry() };
        if table.is_null() {
            bail!("{what}: `{ENTRY_SYMBOL}` returned no plugin table");
        }
        // SAFETY: every ABI version starts with the version field; nothing
        // else is read until it matches.
        let abi_version = unsafe { (*table).abi_version };
        if abi_version != ABI_VERSION {
            bail!(
                "{what} was built for native plugin ABI version {abi_version}, \
                 but this host speaks version {ABI_VERSION}"
            );
        }
        // SAFETY: the version matches, so the layout is ours, and the table
        // lives as long as the library, which this plugin keeps loaded.
        let table: &'static PluginTable = unsafe { &*table };
        let name = if table.name.is_null() {
            plugin.version.name.clone()
        } else {
            // SAFETY: the ABI requires a NUL-terminated string.
            unsafe { CStr::from_ptr(table.name) }
                .to_string_lossy()
                .into_owned()
        };
        let plugin = Self {
            version: plugin.version.clone(),
            table,
            _library: Arc::new(library),
        };
        Ok((plugin, name))
    }

    fn call(&self, call: plughost_native_abi::CallFn, conn: &mut Connection) -> (i32, String) {
        let mut message = Message::new();
        let conn_ptr = (conn as *mut Connection).cast();
        // SAFETY: `conn` outlives the call and is only used through the
        // host callbacks; `message` is a valid, writable message buffer.
        let status = unsafe { call(&callbacks::HOST_API, conn_ptr, &mut message) };
        (status, message.text())
    }
}

impl Plugin for NativePlugin {
    fn version(&self) -> &PluginVersion {
        &self.version
    }

    fn serving(&self) -> Serving<'_> {
        Serving::PerConnection(self)
    }
}

impl ConnectionPlugin for NativePlugin {
    fn serve(&self, mut conn: Connection) -> (Connection, Outcome) {
        let mut steps = NativeSteps {
            plugin: self,
            conn: &mut conn,
        };
        let outcome = lifecycle::run_blocking(&mut steps, lifecycle::FINISH_TIMEOUT);
        (conn, outcome)
    }
}

/// A native plugin's lifecycle calls on one connection (see
/// [`lifecycle`]); each blocks on the calling thread.
struct NativeSteps<'a> {
    plugin: &'a NativePlugin,
    conn: &'a mut Connection,
}

impl lifecycle::Steps for NativeSteps<'_> {
    async fn setup(&mut self) -> Step {
        step(self.plugin.call(self.plugin.table.setup, self.conn))
    }

    async fn handle(&mut self) -> Step {
        step(self.plugin.call(self.plugin.table.handle, self.conn))
    }

    fn limit_blocking(&mut self, limit: std::time::Duration) {
        self.conn.limit_blocking(limit);
    }

    async fn finish(&mut self) -> Step {
        step(self.plugin.call(self.plugin.table.finish, self.conn))
    }
}

/// A call's status as a lifecycle step: a panic or an unknown status means
/// the plugin must not be called again.
fn step((status, message): (i32, String)) -> Step {
    match status {
        Status::OK => Ok(Ok(())),
        Status::ERROR => Ok(Err(message)),
        Status::PANICKED => Err(Outcome::Trap(format!("plugin panicked: {message}"))),
        other => Err(Outcome::Trap(format!(
            "plugin returned unknown status {other}"
        ))),
    }
}

/// Writes the library to a new file with a random name in the temporary
/// directory (deleted when the returned handle is closed or dropped).
fn private_copy(plugin: &PluginBytes) -> Result<NamedTempFile> {
    let mut copy = tempfile::Builder::new()
        .prefix(&format!("plughost-native-{}-", plugin.version.name))
        .suffix(".so")
        .tempfile()
        .context("cannot create a private copy of a native plugin in the temporary directory")?;
    copy.write_all(&plugin.bytes)
        .and_then(|()| copy.flush())
        .with_context(|| format!("cannot write {}", copy.path().display()))?;
    Ok(copy)
}
