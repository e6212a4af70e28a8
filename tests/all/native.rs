//! Native plugins (shared libraries; always a thread per connection):
//! libraries of another ABI version or without the entry symbol are
//! refused with their reason; a loaded library leaves no temporary file;
//! reload works under a live connection. (The examples built as libraries
//! pass the components' checks in `serving`, beside them; panics staying
//! in their connection are checked beside traps there too.)

use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::support::{
    Host, Mode, SOON, example_plugin, native_test_plugin, round_trip, run_host, temp_dir, utf8,
};

#[test]
fn a_library_of_another_abi_version_is_refused() {
    let plugin = native_test_plugin("libnative_abi_v99.so");
    let out = run_host(&["check", utf8(&plugin)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ABI version 99") && stderr.contains("version 1"),
        "{stderr}"
    );
    let out = run_host(&["run", "--plugin", utf8(&plugin), "--port", "0"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let library = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("libm is present on Linux");
    let out = run_host(&["check", library]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not export `plughost_plugin_entry`"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn a_loaded_native_plugin_leaves_nothing_in_the_temporary_directory() {
    let tmp = temp_dir("native-tmpdir");
    let plugin = example_plugin("libecho.so");
    let host = Host::builder()
        .plugin(&plugin)
        .mode(Mode::Threads)
        .env("TMPDIR", &tmp)
        .start();
    assert_eq!(round_trip(&mut host.connect(), b"abc"), b"abc");
    // Killed, not shut down: nothing may depend on a clean exit.
    drop(host);
    let left: Vec<_> = fs::read_dir(&tmp)
        .expect("list TMPDIR")
        .map(|entry| entry.expect("an entry of TMPDIR").path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A watched library replaced by renaming serves new connections; the
/// old library stays loaded for the connection opened before.
#[test]
fn a_native_plugin_reloads_under_a_live_connection() {
    let dir = temp_dir("native-reload");
    let plugin = dir.join("libplugin.so");
    fs::copy(example_plugin("libecho.so"), &plugin).expect("copy libecho.so");
    let host = Host::builder()
        .plugin(&plugin)
        .mode(Mode::Threads)
        .args(&["--watch"])
        .start();
    host.expect_log("watching", SOON);
    let mut old = host.connect();
    assert_eq!(round_trip(&mut old, b"abc"), b"abc");

    let tmp = dir.join("new.so");
    fs::copy(native_test_plugin("libshout.so"), &tmp).expect("copy libshout.so");
    fs::rename(&tmp, &plugin).expect("rename over the watched library");
    let deadline = Instant::now() + Duration::from_secs(20);
    while round_trip(&mut host.connect(), b"abc") != b"ABC" {
        assert!(Instant::now() < deadline, "never swapped:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The old library stays loaded while its connection lives.
    assert_eq!(round_trip(&mut old, b"xyz"), b"xyz");
}

#[test]
fn a_native_finish_is_bounded_like_a_components() {
    // `finish` reads until the client closes; this client never does, and
    // with no idle timeout only the 5 s bound on `finish` can end the
    // connection (native plugins went without it once).
    let host = Host::builder()
        .plugin(native_test_plugin("libfinish_drains.so"))
        .mode(Mode::Threads)
        .args(&["--idle-timeout", "0"])
        .start();
    let mut silent = host.connect();
    host.expect_log("connection closed", Duration::from_secs(30));
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("the host closes the connection");
    assert!(rest.is_empty(), "{rest:?}");
}
