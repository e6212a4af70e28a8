//! Hot reload: swapping a plugin under live connections (`--watch` on a
//! file or a plugin directory, SIGHUP; on threads and on an event loop),
//! with every way a file gets replaced, broken builds that must not
//! replace a working plugin, a load loop across many swaps with no failed
//! or cut connection, UDP listeners, and a native library swapped in on
//! an event-loop listener.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    Host, Mode, SOON, example_plugin, rebuilt, temp_dir, test_plugin, workspace_root,
};

/// Sends `message` on a fresh connection and returns what comes back.
fn ask(host: &Host, message: &[u8]) -> Vec<u8> {
    let mut stream = host.connect();
    stream.write_all(message).expect("send");
    read_reply(&mut stream, message.len())
}

fn read_reply(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut reply = vec![0; len];
    stream.read_exact(&mut reply).expect("reply");
    reply
}

/// Waits (bounded) until a new connection gets `expected` for `message`.
fn wait_for_reply(host: &Host, message: &[u8], expected: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ask(host, message) == expected {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "new connections never got {:?}\n{}",
        String::from_utf8_lossy(expected),
        host.logs()
    );
}

/// Replaces `path` with `contents` by writing a temporary file and renaming
/// it over (what `cargo build` and most editors do).
fn replace_by_rename(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).expect("write temp");
    fs::rename(&tmp, path).expect("rename");
}

fn bytes(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A fresh copy of the echo plugin, served in `mode`, with `--watch` or
/// not.
fn echo_copy(label: &str, mode: Mode, watch: bool) -> (Host, PathBuf) {
    let dir = temp_dir(label);
    let plugin = dir.join("plugin.wasm");
    fs::write(&plugin, bytes(&example_plugin("echo.wasm"))).expect("copy echo");
    let host = Host::builder()
        .plugin(&plugin)
        .mode(mode)
        .args(if watch { &["--watch"] } else { &[] })
        .start();
    if watch {
        host.expect_log("watching", SOON);
    }
    (host, plugin)
}

/// A watched copy of the echo plugin, served in `mode`.
fn watched_echo(label: &str, mode: Mode) -> (Host, PathBuf) {
    echo_copy(label, mode, true)
}

in_every_mode! {
    /// A connection opened before the swap still runs the old code; new
    /// connections get the new one.
    fn open_connections_keep_their_version_and_new_ones_get_the_new_one(mode: Mode) {
        let (host, plugin) = watched_echo("reload-keep", mode);
        let mut old = host.connect();
        old.write_all(b"hello").expect("send hello");
        assert_eq!(read_reply(&mut old, 5), b"hello");

        replace_by_rename(&plugin, &bytes(&test_plugin("shout.wasm")));
        wait_for_reply(&host, b"abc", b"ABC");

        old.write_all(b"still old").expect("send on the old connection");
        assert_eq!(read_reply(&mut old, 9), b"still old");
        assert!(host.logs().contains("swapped"), "{}", host.logs());
    }
}

#[test]
fn in_place_writes_and_delete_then_create_are_picked_up() {
    let (host, plugin) = watched_echo("reload-modes", Mode::Threads);
    fs::write(&plugin, bytes(&test_plugin("shout.wasm"))).expect("write shout in place");
    wait_for_reply(&host, b"abc", b"ABC");

    let failed = host.log_count("reload failed");
    fs::remove_file(&plugin).expect("delete the plugin");
    // The watcher sees the deletion and cannot load a missing file...
    host.expect_log_count("reload failed", failed + 1, SOON);
    // ...so the old version keeps serving.
    assert_eq!(ask(&host, b"abc"), b"ABC");
    fs::write(&plugin, bytes(&example_plugin("echo.wasm"))).expect("create echo again");
    wait_for_reply(&host, b"abc", b"abc");
}

#[test]
fn a_broken_plugin_never_replaces_a_working_one() {
    let (host, plugin) = watched_echo("reload-broken", Mode::Threads);
    replace_by_rename(&plugin, b"this is not wasm");
    host.expect_log("reload failed", SOON);
    assert_eq!(ask(&host, b"abc"), b"abc");
    replace_by_rename(&plugin, &bytes(&test_plugin("wrong_world.wasm")));
    host.expect_log("missing export", SOON);
    assert_eq!(ask(&host, b"abc"), b"abc");
    assert!(!host.logs().contains("panicked"));
}

/// Without `--watch` a changed file is not picked up (while a watching
/// control host serving the same file has swapped) until SIGHUP.
#[test]
fn sighup_reloads_without_watch() {
    let (host, plugin) = echo_copy("reload-hup", Mode::Threads, false);
    let control = Host::builder()
        .plugin(&plugin)
        .mode(Mode::Threads)
        .args(&["--watch"])
        .start();
    control.expect_log("watching", SOON);
    fs::write(&plugin, bytes(&test_plugin("shout.wasm"))).expect("write shout");
    wait_for_reply(&control, b"abc", b"ABC");
    assert_eq!(ask(&host, b"abc"), b"abc", "no reload without a signal");
    host.signal(libc::SIGHUP);
    wait_for_reply(&host, b"abc", b"ABC");
}

/// Four clients connect in a loop while the file is swapped 50 times
/// (every fifth a broken build), each swap once the host has reacted to
/// the one before: every connection is served, by one version or the
/// other, and every good build is swapped in.
#[test]
fn fifty_swaps_under_load_cut_no_connection() {
    let (host, plugin) = watched_echo("reload-load", Mode::Threads);
    let echo = bytes(&example_plugin("echo.wasm"));
    let shout = bytes(&test_plugin("shout.wasm"));
    let addr = host.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let stop = Arc::clone(&stop);
            let served = Arc::clone(&served);
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let message = format!("client{client}-round{round}");
                    let mut stream = TcpStream::connect(addr).expect("connect during swaps");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("set read timeout");
                    stream
                        .write_all(message.as_bytes())
                        .expect("send during swaps");
                    let mut reply = vec![0; message.len()];
                    stream.read_exact(&mut reply).expect("reply during swaps");
                    let reply = String::from_utf8(reply).expect("a UTF-8 reply");
                    assert!(
                        reply == message || reply == message.to_uppercase(),
                        "reply {reply:?} is from neither version of {message:?}"
                    );
                    served.fetch_add(1, Ordering::Relaxed);
                    round += 1;
                }
            })
        })
        .collect();
    let (mut swapped, mut failed) = (0, 0);
    for swap in 0..50 {
        // Each good build differs from the version serving before it.
        let contents: &[u8] = match swap % 5 {
            4 => b"\0asm broken build",
            n if n % 2 == 0 => &shout,
            _ => &echo,
        };
        replace_by_rename(&plugin, contents);
        if swap % 5 == 4 {
            failed += 1;
            host.expect_log_count("file changed: reload failed", failed, SOON);
        } else {
            swapped += 1;
            host.expect_log_count("file changed: swapped", swapped, SOON);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client
            .join()
            .expect("a client saw a failed or cut connection");
    }
    assert!(
        served.load(Ordering::Relaxed) > 50,
        "too little traffic to prove anything"
    );
    assert_eq!(swapped, 40);
    assert_eq!(
        host.log_count("swapped"),
        40,
        "one swap per good build:\n{}",
        host.logs()
    );
}

#[test]
fn a_plugin_directory_is_rebuilt_with_its_manifest() {
    let dir = temp_dir("reload-project");
    let echo = example_plugin("echo.wasm");
    let shout = test_plugin("shout.wasm");
    fs::write(dir.join("variant"), "echo").expect("write variant");
    // The "build" picks a prebuilt component by the contents of `variant`
    // (a stand-in for a compiler), and fails on `broken`.
    let build = format!(
        "case $(cat variant) in echo) cp {} out.wasm;; shout) cp {} out.wasm;; \
         *) echo 'error[E0425]: cannot find value `x`' >&2; exit 1;; esac",
        echo.display(),
        shout.display()
    );
    fs::write(
        dir.join("plugin.toml"),
        format!(
            "name = \"proj\"\nbuild = \"{}\"\noutput = \"out.wasm\"\n",
            build.replace('"', "\\\"")
        ),
    )
    .expect("write plugin.toml");
    let host = Host::builder()
        .plugin(&dir)
        .mode(Mode::Threads)
        .args(&["--watch"])
        .start();
    assert_eq!(ask(&host, b"abc"), b"abc");
    fs::write(dir.join("variant"), "shout").expect("write variant");
    wait_for_reply(&host, b"abc", b"ABC");
    fs::write(dir.join("variant"), "broken").expect("write variant");
    host.expect_log("cannot find value", SOON);
    assert_eq!(
        ask(&host, b"abc"),
        b"ABC",
        "a failed build keeps the old version"
    );
    assert!(
        host.logs().contains("build="),
        "the swap line reports the build time"
    );
}

#[test]
fn a_real_cargo_rebuild_is_served() {
    let root = workspace_root();
    let dir = temp_dir("reload-cargo");
    fs::create_dir_all(dir.join("src")).expect("create src/");
    let sdk = root.join("plugins/rust/sdk");
    fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"live\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nplughost-sdk = {{ path = \"{}\" }}\n\n[workspace]\n",
            sdk.display()
        ),
    )
    .expect("write Cargo.toml");
    let source = |reply: &str| {
        format!(
            "use plughost_sdk::{{Conn, Handler}};\npub struct Live;\nimpl Handler for Live {{\n    \
             fn handle(conn: &mut Conn) -> Result<(), String> {{\n        \
             conn.write_all(b\"{reply}\")?;\n        Ok(())\n    }}\n}}\nplughost_sdk::export!(Live);\n"
        )
    };
    fs::write(dir.join("src/lib.rs"), source("one")).expect("write src/lib.rs");
    // Its own target directory, shared between runs so only the first
    // build compiles the dependencies.
    let target = root.join("target/test-live-plugin");
    fs::write(
        dir.join("plugin.toml"),
        format!(
            "build = \"cargo build --release --target wasm32-wasip2 --target-dir {0}\"\n\
             output = \"{0}/wasm32-wasip2/release/live.wasm\"\nwatch = [\"src\"]\n",
            target.display()
        ),
    )
    .expect("write plugin.toml");
    let host = Host::builder()
        .plugin(&dir)
        .mode(Mode::Threads)
        .args(&["--watch"])
        .start_timeout(Duration::from_secs(300))
        .start();
    let read_all = |host: &Host| {
        let mut stream = host.connect();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).expect("read");
        reply
    };
    assert_eq!(read_all(&host), b"one");
    fs::write(dir.join("src/lib.rs"), source("two")).expect("write src/lib.rs");
    let started = Instant::now();
    while read_all(&host) != b"two" {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "rebuild never served\n{}",
            host.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A UDP host serving `plugin` (UDP is served on threads), with `extra`
/// flags.
fn udp_host(plugin: &Path, extra: &[&str]) -> Host {
    Host::builder()
        .plugin(plugin)
        .udp()
        .mode(Mode::Threads)
        .args(extra)
        .start()
}

/// Sends `message` to `host` and checks it comes back.
fn udp_echoes(client: &std::net::UdpSocket, host: &Host, message: &[u8]) {
    client
        .send_to(message, host.addr())
        .expect("send a datagram");
    let mut buf = vec![0; 1024];
    let (len, _) = client.recv_from(&mut buf).expect("the echoed datagram");
    assert_eq!(&buf[..len], message);
}

#[test]
fn udp_listeners_reload_on_change_and_on_sighup() {
    let dir = temp_dir("reload-udp");
    let plugin = dir.join("udp.wasm");
    let original = bytes(&example_plugin("udp-echo.wasm"));
    fs::write(&plugin, &original).expect("copy udp-echo");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");

    let host = udp_host(&plugin, &["--watch"]);
    udp_echoes(&client, &host, b"before");
    replace_by_rename(&plugin, &rebuilt(&original, "build-2"));
    host.expect_log("file changed: swapped", SOON);
    udp_echoes(&client, &host, b"after the watch reload");
    // A broken file never replaces the working plugin.
    replace_by_rename(&plugin, b"not a component");
    host.expect_log("reload failed", SOON);
    udp_echoes(&client, &host, b"still served");
    drop(host);

    // Without --watch, SIGHUP reloads.
    fs::write(&plugin, &original).expect("copy udp-echo");
    let host = udp_host(&plugin, &[]);
    fs::write(&plugin, rebuilt(&original, "build-3")).expect("write another build");
    host.signal(libc::SIGHUP);
    host.expect_log("SIGHUP: swapped", SOON);
    udp_echoes(&client, &host, b"after SIGHUP");
}

/// A native library (which blocks) swapped in by SIGHUP on a listener
/// serving on an event loop: the host warns that it takes a thread per
/// connection, and serves it.
#[test]
fn swapping_in_a_native_plugin_on_an_event_loop_listener_warns_and_serves() {
    let dir = temp_dir("events-to-native");
    let plugin = dir.join("plugin");
    fs::write(&plugin, bytes(&example_plugin("echo.wasm"))).expect("copy echo");
    let host = Host::serving(&plugin, Mode::EventLoop);
    assert_eq!(ask(&host, b"wasm"), b"wasm");
    fs::write(&plugin, bytes(&example_plugin("libecho.so"))).expect("copy libecho.so");
    host.signal(libc::SIGHUP);
    host.expect_log("cannot run on this listener's event loops", SOON);
    host.expect_log("SIGHUP: swapped", SOON);
    assert_eq!(ask(&host, b"native"), b"native");
}
