//! The C ABI between the host and a native plugin (version 1): the
//! header-like definition both sides compile against (the host, and the
//! native backend of the Rust guest SDK).
//!
//! A native plugin is a shared library exporting
//!
//! ```c
//! const struct plughost_plugin *plughost_plugin_entry(void);
//! ```
//!
//! which returns a pointer to a static [`PluginTable`]. Its first field is
//! always the ABI version, so the host can refuse another version before
//! reading anything else. The host then calls `setup`, `handle` and
//! `finish` (the same lifecycle as the WIT world) with a [`HostApi`] table
//! and an opaque connection pointer; the plugin does all I/O through the
//! API's callbacks, which mirror the WIT `connection` resource:
//!
//! ```c
//! struct plughost_socket_address { uint8_t family; /* 4 or 6 */ uint8_t ip[16]; uint16_t port; };
//! struct plughost_message { size_t len; uint8_t bytes[1024]; };
//! struct plughost_host_api {
//!     uint32_t abi_version;
//!     int64_t (*read)(void *conn, uint8_t *buf, size_t len);   /* bytes read (0 = EOF), or -error */
//!     int32_t (*write)(void *conn, const uint8_t *buf, size_t len); /* 0, or error */
//!     int32_t (*shutdown)(void *conn, uint32_t how);           /* 0 read, 1 write, 2 both */
//!     int32_t (*peer_address)(void *conn, struct plughost_socket_address *out);
//!     int32_t (*local_address)(void *conn, struct plughost_socket_address *out);
//!     void    (*set_timeout)(void *conn, int64_t timeout_ms);  /* < 0: none */
//!     int64_t (*timeout)(void *conn);                          /* < 0: none */
//! };
//! struct plughost_plugin {
//!     uint32_t abi_version;                                    /* PLUGHOST_ABI_VERSION = 1 */
//!     const char *name;
//!     int32_t (*setup)(const struct plughost_host_api *, void *conn, struct plughost_message *err);
//!     int32_t (*handle)(const struct plughost_host_api *, void *conn, struct plughost_message *err);
//!     int32_t (*finish)(const struct plughost_host_api *, void *conn, struct plughost_message *err);
//! };
//! ```
//!
//! Calls return a [`Status`]; on `ERROR` or `PANICKED` the plugin leaves a
//! UTF-8 message in `err`. Error codes are those of the WIT `error-code`
//! enum, numbered from 1 ([`ErrorCode`]). A plugin must not let a panic or
//! C++ exception unwind into the host: the Rust SDK catches panics and
//! returns `PANICKED`.

use std::ffi::{c_char, c_void};

/// The ABI version this host speaks.
pub const ABI_VERSION: u32 = 1;

/// The symbol every native plugin exports.
pub const ENTRY_SYMBOL: &str = "plughost_plugin_entry";

/// The entry point's type.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// Call results.
pub struct Status;

impl Status {
    /// The call succeeded.
    pub const OK: i32 = 0;
    /// The call returned an error; the message says which.
    pub const ERROR: i32 = 1;
    /// The plugin panicked (caught at its boundary); the message says why.
    pub const PANICKED: i32 = 2;
}

/// Error codes of the host callbacks (the WIT `error-code`, from 1).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The connection is closed.
    Closed = 1,
    /// The read timeout expired.
    TimedOut = 2,
    /// The peer reset the connection.
    Reset = 3,
    /// The peer stopped reading, or the write failed.
    BrokenPipe = 4,
    /// An argument was out of range.
    InvalidArgument = 5,
    /// Any other failure.
    Other = 6,
}

/// An IP socket address.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketAddress {
    /// 4 or 6.
    pub family: u8,
    /// The address: the first 4 bytes for IPv4, all 16 for IPv6.
    pub ip: [u8; 16],
    /// The port.
    pub port: u16,
}

/// Capacity of an error message.
pub const MESSAGE_CAPACITY: usize = 1024;

/// An error message written by the plugin.
#[repr(C)]
pub struct Message {
    /// Bytes used in `bytes`.
    pub len: usize,
    /// UTF-8 text (truncated to the capacity).
    pub bytes: [u8; MESSAGE_CAPACITY],
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self {
            len: 0,
            bytes: [0; MESSAGE_CAPACITY],
        }
    }

    /// The text, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..self.len.min(MESSAGE_CAPACITY)]).into_owned()
    }
}

impl Default for Message {
    fn default() -> Self {
        Self::new()
    }
}

/// The host's callbacks, handed to every plugin call.
#[repr(C)]
pub struct HostApi {
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Reads up to `len` bytes into `buf`: the count (0 = end of stream), or
    /// a negated [`ErrorCode`].
    pub read: unsafe extern "C" fn(conn: *mut c_void, buf: *mut u8, len: usize) -> i64,
    /// Writes all `len` bytes: 0, or an [`ErrorCode`].
    pub write: unsafe extern "C" fn(conn: *mut c_void, buf: *const u8, len: usize) -> i32,
    /// Shuts down reading (0), writing (1) or both (2): 0, or an [`ErrorCode`].
    pub shutdown: unsafe extern "C" fn(conn: *mut c_void, how: u32) -> i32,
    /// Fills `out` with the peer's address: 0, or an [`ErrorCode`].
    pub peer_address: unsafe extern "C" fn(conn: *mut c_void, out: *mut SocketAddress) -> i32,
    /// Fills `out` with the local address: 0, or an [`ErrorCode`].
    pub local_address: unsafe extern "C" fn(conn: *mut c_void, out: *mut SocketAddress) -> i32,
    /// Sets the read timeout in milliseconds (negative: none).
    pub set_timeout: unsafe extern "C" fn(conn: *mut c_void, timeout_ms: i64),
    /// The read timeout in milliseconds (negative: none).
    pub timeout: unsafe extern "C" fn(conn: *mut c_void) -> i64,
}

/// One lifecycle call of a plugin.
pub type CallFn =
    unsafe extern "C" fn(api: *const HostApi, conn: *mut c_void, err: *mut Message) -> i32;

/// What a plugin's entry point returns.
#[repr(C)]
pub struct PluginTable {
    /// The ABI version the plugin was built for (always the first field).
    pub abi_version: u32,
    /// NUL-terminated plugin name.
    pub name: *const c_char,
    /// `setup`.
    pub setup: CallFn,
    /// `handle`.
    pub handle: CallFn,
    /// `finish`.
    pub finish: CallFn,
}

// SAFETY: a plugin table is immutable static data: function pointers and a
// pointer to a static NUL-terminated name. Sharing it between the threads
// that serve connections is what the ABI requires plugins to allow.
unsafe impl Sync for PluginTable {}
// SAFETY: as above; the table is never mutated.
unsafe impl Send for PluginTable {}
