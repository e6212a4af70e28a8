//! Write [plughost] connection handlers in Rust.
//!
//! A plugin is a type implementing [`Handler`], exported with
//! [`export!`]. For every accepted TCP connection the host creates a fresh
//! instance of the plugin and calls, like Python's
//! `socketserver.BaseRequestHandler`,
//!
//! ```text
//! setup(conn)    once; an error closes the connection, handle/finish are skipped
//! handle(conn)   the conversation
//! finish(conn)   always after handle, even if it failed
//! ```
//!
//! Each call gets a [`Conn`]: reads (raw, exact, line by line), writes,
//! shutdown, addresses and a read timeout, plus [`std::io::Read`] and
//! [`std::io::Write`]. Errors are [`Error`]; `?` turns them into the
//! `String` a handler returns.
//!
//! A panic becomes a trap: the host logs it, skips `finish` and closes the
//! connection. Other connections are unaffected.
//!
//! # Example
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "greeter"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! plughost-sdk = { path = "../sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use std::time::Duration;
//! use plughost_sdk::{Conn, Error, Handler};
//!
//! /// Greets the client, then answers each line with its length.
//! struct Greeter;
//!
//! impl Handler for Greeter {
//!     fn setup(conn: &mut Conn) -> Result<(), String> {
//!         // Give up on clients that stay silent for a minute.
//!         conn.set_timeout(Some(Duration::from_secs(60)));
//!         Ok(())
//!     }
//!
//!     fn handle(conn: &mut Conn) -> Result<(), String> {
//!         let peer = conn.peer_addr();
//!         conn.write_all(format!("hello {peer}\n").as_bytes())?;
//!         loop {
//!             match conn.read_line(1024) {
//!                 Ok(Some(line)) => {
//!                     let reply = format!("{} bytes\n", line.len());
//!                     conn.write_all(reply.as_bytes())?;
//!                 }
//!                 Ok(None) => return Ok(()), // the client closed
//!                 Err(Error::LineTooLong) => {
//!                     conn.write_all(b"line too long, bye\n")?;
//!                     return Ok(());
//!                 }
//!                 Err(e) => return Err(format!("reading a line: {e}")),
//!             }
//!         }
//!     }
//!
//!     fn finish(conn: &mut Conn) {
//!         // Best effort: the client may be gone already.
//!         let _ = conn.write_all(b"bye\n");
//!     }
//! }
//!
//! plughost_sdk::export!(Greeter);
//!
//! // The same handler runs natively against a scripted client in unit tests:
//! let mut client = plughost_sdk::testing::Script::new([&b"hi\nthere\n"[..]]);
//! client.run::<Greeter>().unwrap();
//! assert_eq!(
//!     client.written(),
//!     b"hello 127.0.0.1:40000\n3 bytes\n6 bytes\nbye\n"
//! );
//! ```
//!
//! Build it with
//! `cargo build --release --target wasm32-wasip2`: the
//! `target/wasm32-wasip2/release/greeter.wasm` it produces is already a
//! component the host loads. Plugin crates need no `wit-bindgen` dependency
//! of their own.
//!
//! A plugin that needs nothing from WASI (no files, environment, clock or
//! `println!`) can build lean instead, for `wasm32-unknown-unknown` with
//! `linker = "wasm-component-ld"` set for that target in
//! `.cargo/config.toml`: its instances import only the contract and WASI's
//! stderr, and are cheaper to create (the echo: 5.0–7.5 µs against
//! 9.6–9.9 µs in alternating `host check` runs on the CI machine kind).
//! std has no stderr there, so the SDK installs a panic hook that writes
//! panic messages to WASI's stderr, which the host logs; and std's
//! allocator there would grow the memory at once, so the SDK's allocator
//! starts in an arena in the initial memory. The example plugins build
//! this way.
//!
//! # State
//!
//! `Handler` functions take no `self`: the instance lives for one
//! connection only, so per-connection state that must outlive one call
//! (from `setup` to `handle`, say) can live in a `thread_local!` or a
//! `static` of the plugin without leaking to other clients. Bytes a `Conn`
//! read ahead (e.g. after a line) are carried from `setup` to `handle` to
//! `finish` for you.
//!
//! # Backends
//!
//! Plugin code only names [`Handler`], [`Conn`], [`Error`] and [`export!`].
//! On `wasm32` the export macro generates the component exports for
//! `wit/handler.wit`; on other targets it exports the native plugin entry
//! point of the host's C ABI (`plughost_plugin_entry`, see
//! `wit/native-abi`), so the same crate built with `crate-type = ["cdylib"]`
//! is both `echo.wasm` and `libecho.so`. Panics in a native build are
//! caught at the boundary and close only their connection.
//! [`testing::Script`] runs a handler against a scripted client on any
//! target.
//!
//! [plughost]: ../../../README.md

#![deny(missing_docs)]

extern crate self as plughost_sdk;

mod conn;
mod error;
#[cfg(not(target_arch = "wasm32"))]
mod native;
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use conn::{Arrival, Conn, MAX_READ, Message, Transport};
pub use error::Error;
pub use plughost_guest_rt::TlsSession;
pub use std::net::Shutdown;

/// A connection handler: the three calls the host makes for every
/// connection, on a fresh instance each time.
///
/// Only [`handle`](Handler::handle) is required.
pub trait Handler: 'static {
    /// Called once before `handle`. Returning an error closes the
    /// connection without calling `handle` or `finish`; the message is
    /// logged by the host.
    fn setup(conn: &mut Conn) -> Result<(), String> {
        let _ = conn;
        Ok(())
    }

    /// Serves the connection: read requests, write responses, until done.
    /// Returning ends the conversation; an error message is logged with the
    /// connection.
    fn handle(conn: &mut Conn) -> Result<(), String>;

    /// Called after `handle` returns, whether it succeeded or not (not after
    /// a trap). The host closes the connection afterwards.
    fn finish(conn: &mut Conn) {
        let _ = conn;
    }
}

/// Exports a [`Handler`] as the plugin's `setup`/`handle`/`finish`.
///
/// Use it once per plugin crate, at the top level:
///
/// ```
/// struct Echo;
/// impl plughost_sdk::Handler for Echo {
///     fn handle(conn: &mut plughost_sdk::Conn) -> Result<(), String> {
///         loop {
///             let data = conn.read(64 * 1024)?;
///             if data.is_empty() {
///                 return Ok(());
///             }
///             conn.write_all(&data)?;
///         }
///     }
/// }
/// plughost_sdk::export!(Echo);
/// ```
#[macro_export]
macro_rules! export {
    ($handler:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __PlughostExport = $crate::__private::Adapter<$handler>;
            $crate::__private::bindings::__export_handler!(
                __PlughostExport with_types_in $crate::__private::bindings
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            use $crate::__private::abi;
            type __PlughostExport = $crate::__private::Adapter<$handler>;
            static __PLUGHOST_TABLE: abi::PluginTable = abi::PluginTable {
                abi_version: abi::ABI_VERSION,
                name: concat!(env!("CARGO_PKG_NAME"), "\0").as_ptr().cast(),
                setup: __PlughostExport::setup,
                handle: __PlughostExport::handle,
                finish: __PlughostExport::finish,
            };
            /// The native plugin's entry point (C ABI version 1).
            #[unsafe(no_mangle)]
            pub extern "C" fn plughost_plugin_entry() -> *const abi::PluginTable {
                &__PLUGHOST_TABLE
            }
        };
    };
}

/// Implementation details of [`export!`]; not part of the API.
/// The shared store: buckets, counters and topics (see [`plughost_store`]).
pub use plughost_store as store;

#[doc(hidden)]
pub mod __private {
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::native::Adapter;
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{Adapter, bindings};
    #[cfg(not(target_arch = "wasm32"))]
    pub use plughost_native_abi as abi;
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;
}

/// Configuration values the operator set for this plugin (the
/// `[listener.config]` table of the host's configuration file).
///
/// Inside a component this reads the host's `config` interface. Native
/// plugins have no configuration channel in C ABI version 1 and always get
/// `None`.
pub mod config {
    /// The value set for `key`, if any.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::wasm::bindings::plughost::handler::config::get(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = key;
            None
        }
    }
}
