//! The runtime pieces every Rust guest of plughost shares, whichever world
//! it implements (the `handler` SDK, `plughost-sdk`, and the `protocol`
//! SDK, `plughost-protocol`, both depend on it). It holds no world's
//! bindings, so depending on it adds no exports to a component:
//!
//! - the global allocator of WebAssembly builds (feature `aligned-alloc`,
//!   on by default): large blocks start on a cache line, and lean builds
//!   (`wasm32-unknown-unknown`) allocate from an arena in the initial
//!   memory first;
//! - [`install_panic_report`]: panic messages to WASI's stderr in lean
//!   builds, where std has none;
//! - [`TlsSession`]: what a TLS listener's handshake negotiated, as both
//!   SDKs report it.

#![deny(missing_docs)]

#[cfg(all(any(target_arch = "wasm32", test), feature = "aligned-alloc"))]
mod aligned_alloc;
#[cfg(all(
    target_arch = "wasm32",
    target_os = "unknown",
    feature = "aligned-alloc"
))]
mod lean_heap;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod panic_report;

/// What the TLS handshake of a connection negotiated, on a listener that
/// terminates TLS (`host run --tls-cert`); the plugin reads and writes
/// plaintext either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite, as IANA names it (`TLS13_AES_128_GCM_SHA256`).
    pub cipher_suite: String,
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// The application protocol negotiated (ALPN), if any.
    pub alpn: Option<String>,
}

/// Makes panics reach the host's log as messages, not bare traps: in a
/// lean build (`wasm32-unknown-unknown`) it sets, once, a panic hook that
/// writes to WASI's stderr; elsewhere std already does, and this does
/// nothing.
pub fn install_panic_report() {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    panic_report::install();
}
