//! Test plugin: a native library whose entry point reports ABI version 99.
//! The host must refuse it with a message naming both versions, without
//! reading any other field of the table.

use plughost_native_abi::{Message, PluginTable};
use std::ffi::c_void;

unsafe extern "C" fn never_called(
    _api: *const plughost_native_abi::HostApi,
    _conn: *mut c_void,
    _err: *mut Message,
) -> i32 {
    unreachable!("a host must not call a plugin of another ABI version")
}

static TABLE: PluginTable = PluginTable {
    abi_version: 99,
    name: c"future".as_ptr(),
    setup: never_called,
    handle: never_called,
    finish: never_called,
};

/// The entry point, with a table of the wrong version.
#[unsafe(no_mangle)]
pub extern "C" fn plughost_plugin_entry() -> *const PluginTable {
    &TABLE
}
