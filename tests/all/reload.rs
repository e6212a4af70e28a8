//! Hot reload: swapping a plugin under live connections (`--watch` on a
//! file or a plugin directory, SIGHUP), with every way a file gets
//! replaced, broken builds that must not replace a working plugin, and a
//! load loop across many swaps with no failed or cut connection.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Host, example_plugin, temp_dir, test_plugin};

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
fn wait_for_reply(host: &Host, message: &[u8], expected: &[u8]) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if ask(host, message) == expected {
            return started.elapsed();
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

/// A watched copy of the echo plugin in a fresh directory.
fn watched_echo(label: &str) -> (Host, PathBuf) {
    let dir = temp_dir(label);
    let plugin = dir.join("plugin.wasm");
    fs::write(&plugin, bytes(&example_plugin("echo.wasm"))).expect("copy echo");
    let host = Host::start(&[
        "run",
        "--plugin",
        plugin.to_str().unwrap(),
        "--port",
        "0",
        "--watch",
    ]);
    host.expect_log("watching", Duration::from_secs(10));
    (host, plugin)
}

#[test]
fn open_connections_keep_their_version_and_new_ones_get_the_new_one() {
    let (host, plugin) = watched_echo("reload-keep");
    let mut old = host.connect();
    old.write_all(b"hello").unwrap();
    assert_eq!(read_reply(&mut old, 5), b"hello");

    replace_by_rename(&plugin, &bytes(&test_plugin("shout.wasm")));
    wait_for_reply(&host, b"abc", b"ABC");

    // The connection opened before the swap still runs the old code.
    old.write_all(b"still old").unwrap();
    assert_eq!(read_reply(&mut old, 9), b"still old");
    assert!(host.logs().contains("swapped"), "{}", host.logs());
}

#[test]
fn in_place_writes_and_delete_then_create_are_picked_up() {
    let (host, plugin) = watched_echo("reload-modes");
    fs::write(&plugin, bytes(&test_plugin("shout.wasm"))).unwrap();
    wait_for_reply(&host, b"abc", b"ABC");

    fs::remove_file(&plugin).unwrap();
    thread::sleep(Duration::from_millis(300));
    // Deleted: the old version keeps serving.
    assert_eq!(ask(&host, b"abc"), b"ABC");
    fs::write(&plugin, bytes(&example_plugin("echo.wasm"))).unwrap();
    wait_for_reply(&host, b"abc", b"abc");
}

#[test]
fn a_broken_plugin_never_replaces_a_working_one() {
    let (host, plugin) = watched_echo("reload-broken");
    replace_by_rename(&plugin, b"this is not wasm");
    host.expect_log("reload failed", Duration::from_secs(10));
    assert_eq!(ask(&host, b"abc"), b"abc");
    replace_by_rename(&plugin, &bytes(&test_plugin("wrong_world.wasm")));
    host.expect_log("missing export", Duration::from_secs(10));
    assert_eq!(ask(&host, b"abc"), b"abc");
    assert!(!host.logs().contains("panicked"));
}

#[test]
fn sighup_reloads_without_watch() {
    let dir = temp_dir("reload-hup");
    let plugin = dir.join("plugin.wasm");
    fs::write(&plugin, bytes(&example_plugin("echo.wasm"))).unwrap();
    let host = Host::start(&["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"]);
    fs::write(&plugin, bytes(&test_plugin("shout.wasm"))).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(ask(&host, b"abc"), b"abc", "no reload without a signal");
    host.signal(libc::SIGHUP);
    wait_for_reply(&host, b"abc", b"ABC");
}

#[test]
fn fifty_swaps_under_load_cut_no_connection() {
    let (host, plugin) = watched_echo("reload-load");
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
                        .unwrap();
                    stream
                        .write_all(message.as_bytes())
                        .expect("send during swaps");
                    let mut reply = vec![0; message.len()];
                    stream.read_exact(&mut reply).expect("reply during swaps");
                    let reply = String::from_utf8(reply).unwrap();
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
    for swap in 0..50 {
        let contents: &[u8] = match swap % 5 {
            4 => b"\0asm broken build",
            n if n % 2 == 0 => &shout,
            _ => &echo,
        };
        replace_by_rename(&plugin, contents);
        thread::sleep(Duration::from_millis(200));
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
    let swaps = host.logs().matches("swapped").count();
    assert!(
        swaps >= 25,
        "only {swaps} swaps took effect:\n{}",
        host.logs()
    );
}

#[test]
fn a_plugin_directory_is_rebuilt_with_its_manifest() {
    let dir = temp_dir("reload-project");
    let echo = example_plugin("echo.wasm");
    let shout = test_plugin("shout.wasm");
    fs::write(dir.join("variant"), "echo").unwrap();
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
    .unwrap();
    let host = Host::start(&[
        "run",
        "--plugin",
        dir.to_str().unwrap(),
        "--port",
        "0",
        "--watch",
    ]);
    assert_eq!(ask(&host, b"abc"), b"abc");
    fs::write(dir.join("variant"), "shout").unwrap();
    wait_for_reply(&host, b"abc", b"ABC");
    fs::write(dir.join("variant"), "broken").unwrap();
    host.expect_log("cannot find value", Duration::from_secs(10));
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
    let root = crate::support::workspace_root();
    let dir = temp_dir("reload-cargo");
    fs::create_dir_all(dir.join("src")).unwrap();
    let sdk = root.join("plugins/rust/sdk");
    fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"live\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nplughost-sdk = {{ path = \"{}\" }}\n\n[workspace]\n",
            sdk.display()
        ),
    )
    .unwrap();
    let source = |reply: &str| {
        format!(
            "use plughost_sdk::{{Conn, Handler}};\npub struct Live;\nimpl Handler for Live {{\n    \
             fn handle(conn: &mut Conn) -> Result<(), String> {{\n        \
             conn.write_all(b\"{reply}\")?;\n        Ok(())\n    }}\n}}\nplughost_sdk::export!(Live);\n"
        )
    };
    fs::write(dir.join("src/lib.rs"), source("one")).unwrap();
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
    .unwrap();
    let host = Host::start_with_timeout(
        &[
            "run",
            "--plugin",
            dir.to_str().unwrap(),
            "--port",
            "0",
            "--watch",
        ],
        Duration::from_secs(300),
    );
    let read_all = |host: &Host| {
        let mut stream = host.connect();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).expect("read");
        reply
    };
    assert_eq!(read_all(&host), b"one");
    fs::write(dir.join("src/lib.rs"), source("two")).unwrap();
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

/// `component` with a custom section appended: another build (another
/// content hash) of the same code.
fn rebuilt(component: &[u8], label: &str) -> Vec<u8> {
    let mut content = vec![u8::try_from(label.len()).unwrap()];
    content.extend_from_slice(label.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(content.len()).unwrap());
    out.extend_from_slice(&content);
    out
}

/// A UDP host serving `plugin`, with `extra` flags.
fn udp_host(plugin: &Path, extra: &[&str]) -> Host {
    let mut args = vec![
        "run",
        "--plugin",
        plugin.to_str().unwrap(),
        "--udp",
        "--port",
        "0",
    ];
    args.extend_from_slice(extra);
    Host::start_with_log_prefix(&args, "listening on udp:")
}

/// Sends `message` to `host` and checks it comes back.
fn udp_echoes(client: &std::net::UdpSocket, host: &Host, message: &[u8]) {
    client.send_to(message, host.addr()).unwrap();
    let mut buf = vec![0; 1024];
    let (len, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], message);
}

#[test]
fn udp_listeners_reload_on_change_and_on_sighup() {
    let dir = temp_dir("reload-udp");
    let plugin = dir.join("udp.wasm");
    let original = bytes(&example_plugin("udp-echo.wasm"));
    fs::write(&plugin, &original).unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let host = udp_host(&plugin, &["--watch"]);
    udp_echoes(&client, &host, b"before");
    replace_by_rename(&plugin, &rebuilt(&original, "build-2"));
    host.expect_log("file changed: swapped", Duration::from_secs(10));
    udp_echoes(&client, &host, b"after the watch reload");
    // A broken file never replaces the working plugin.
    replace_by_rename(&plugin, b"not a component");
    host.expect_log("reload failed", Duration::from_secs(10));
    udp_echoes(&client, &host, b"still served");
    drop(host);

    // Without --watch, SIGHUP reloads.
    fs::write(&plugin, &original).unwrap();
    let host = udp_host(&plugin, &[]);
    fs::write(&plugin, rebuilt(&original, "build-3")).unwrap();
    host.signal(libc::SIGHUP);
    host.expect_log("SIGHUP: swapped", Duration::from_secs(10));
    udp_echoes(&client, &host, b"after SIGHUP");
}
