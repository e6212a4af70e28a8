//! Native plugins: the same examples built as shared libraries pass the
//! same behavioural checks as the components; bad libraries are refused
//! with their reason; reload works. (Panics staying in their connection are
//! checked beside traps, in `foundation`.)

use std::fs;
use std::io::{Read, Write};
use std::time::Duration;

use crate::behaviour::{check_bot, check_echo, check_http};
use crate::support::{Host, example_plugin, native_test_plugin, round_trip, run_host, temp_dir};

type Check = fn(&Host);

#[test]
fn every_example_behaves_the_same_as_wasm_and_native() {
    let table: [(&str, &str, Check); 6] = [
        ("echo.wasm", "wasm", check_echo),
        ("libecho.so", "native", check_echo),
        ("bot10086.wasm", "wasm", check_bot),
        ("libbot10086.so", "native", check_bot),
        ("http-hello.wasm", "wasm", check_http),
        ("libhttp_hello.so", "native", check_http),
    ];
    for (file, kind, check) in table {
        let plugin = example_plugin(file);
        let host = Host::start(&["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"]);
        check(&host);
        let logs = host.logs();
        assert!(!logs.contains("panicked"), "{file} ({kind}):\n{logs}");
        if kind == "native" {
            assert!(
                logs.contains("unsandboxed"),
                "native plugins are flagged:\n{logs}"
            );
        }
    }
}

#[test]
fn a_library_of_another_abi_version_is_refused() {
    let plugin = native_test_plugin("libnative_abi_v99.so");
    let out = run_host(&["check", plugin.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ABI version 99") && stderr.contains("version 1"),
        "{stderr}"
    );
    let out = run_host(&["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"]);
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
    let host = Host::start_with_env(
        &["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"],
        &[("TMPDIR", tmp.as_os_str())],
    );
    assert_eq!(round_trip(&mut host.connect(), b"abc"), b"abc");
    // Killed, not shut down: nothing may depend on a clean exit.
    drop(host);
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_native_plugin_reloads_under_a_live_connection() {
    let dir = temp_dir("native-reload");
    let plugin = dir.join("libplugin.so");
    fs::copy(example_plugin("libecho.so"), &plugin).unwrap();
    let host = Host::start(&[
        "run",
        "--plugin",
        plugin.to_str().unwrap(),
        "--port",
        "0",
        "--watch",
    ]);
    let mut old = host.connect();
    old.write_all(b"abc").unwrap();
    let mut reply = [0; 3];
    old.read_exact(&mut reply).unwrap();

    let tmp = dir.join("new.so");
    fs::copy(native_test_plugin("libshout.so"), &tmp).unwrap();
    fs::rename(&tmp, &plugin).unwrap();
    let started = std::time::Instant::now();
    loop {
        let mut fresh = host.connect();
        fresh.write_all(b"abc").unwrap();
        fresh.read_exact(&mut reply).unwrap();
        if &reply == b"ABC" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            host.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The old library stays loaded while its connection lives.
    old.write_all(b"xyz").unwrap();
    old.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"xyz");
}

#[test]
fn a_native_finish_is_bounded_like_a_components() {
    // `finish` reads until the client closes; this client never does, and
    // with no idle timeout only the 5 s bound on `finish` can end the
    // connection (native plugins went without it once).
    let plugin = native_test_plugin("libfinish_drains.so");
    let host = Host::start(&[
        "run",
        "--plugin",
        plugin.to_str().unwrap(),
        "--port",
        "0",
        "--idle-timeout",
        "0",
    ]);
    let mut silent = host.connect();
    host.expect_log("connection closed", Duration::from_secs(30));
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("the host closes the connection");
    assert!(rest.is_empty(), "{rest:?}");
}
