//! Handlers written in other languages than Rust — C, Go, Python and
//! JavaScript (`plugins/<lang>/`, built by `scripts/build-guests.sh` into
//! `target/guests/<lang>-<plugin>.wasm`) — served by the real host, on
//! threads and on an event loop, and held to the same behavioural checks
//! as the Rust examples; their plugins of the protocol world (chat,
//! proto-echo: one shared instance) held to the checks of the Rust
//! built-ins `chat` and `proto-echo` (`support::protocol`); and guests built
//! against another version of the WIT, refused with the expected world and
//! what is missing.
//!
//! `host new` is checked the same way: every language's scaffold of each
//! world builds with the command its `plugin.toml` names and echoes.
//!
//! A guest missing from `target/guests/` fails the test with its path (CI
//! builds them all; run `scripts/build-guests.sh`), and so does a missing
//! toolchain.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use crate::support::checks::{check_bot, check_echo, check_http};
use crate::support::clients::echo_to_end;
use crate::support::protocol::{
    check_chat, check_chat_cuts_a_client_that_never_reads, check_chat_cuts_an_endless_line,
};
use crate::support::{
    Host, Mode, SOON, checked, refused, run_host, temp_dir, utf8, workspace_root,
};

/// How long a host may take to start with a guest nobody compiled yet:
/// Python and JavaScript components are 12–18 MB (an interpreter inside).
const COLD_START: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
enum Plugin {
    Echo,
    HttpHello,
    Bot10086,
}

/// Every guest and what it must behave like.
const GUESTS: &[(&str, Plugin)] = &[
    ("c-echo", Plugin::Echo),
    ("c-http-hello", Plugin::HttpHello),
    ("go-echo", Plugin::Echo),
    ("go-http-hello", Plugin::HttpHello),
    ("python-echo", Plugin::Echo),
    ("python-http-hello", Plugin::HttpHello),
    ("python-bot10086", Plugin::Bot10086),
    ("js-echo", Plugin::Echo),
    ("js-http-hello", Plugin::HttpHello),
];

/// What a plugin of the protocol world must behave like.
#[derive(Debug, Clone, Copy)]
enum ProtocolPlugin {
    Chat,
    ProtoEcho,
}

/// Every protocol-world guest; each copies the Rust built-in of its name
/// (`chat`, `proto-echo`), which tests/all/protocol.rs holds to the same
/// checks.
const PROTOCOL_GUESTS: &[(&str, ProtocolPlugin)] = &[
    ("python-chat", ProtocolPlugin::Chat),
    ("js-chat", ProtocolPlugin::Chat),
    ("python-proto-echo", ProtocolPlugin::ProtoEcho),
    ("js-proto-echo", ProtocolPlugin::ProtoEcho),
    ("c-proto-echo", ProtocolPlugin::ProtoEcho),
    ("go-proto-echo", ProtocolPlugin::ProtoEcho),
];

/// The host's bound on one connection's unsent output when a chat client
/// never reads: small, so it is cut soon.
const WRITE_BUFFER: &str = "64KiB";

fn guest_path(name: &str) -> PathBuf {
    workspace_root()
        .join("target/guests")
        .join(format!("{name}.wasm"))
}

/// Fails with every missing guest's path.
fn require_built(names: &[&str]) {
    let missing: Vec<String> = names
        .iter()
        .map(|name| guest_path(name))
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "guests missing (scripts/build-guests.sh builds them):\n  {}",
        missing.join("\n  ")
    );
}

/// echo, beyond the shared checks: exactly 16 MiB sent, then end of
/// stream; the guest must echo everything and close. Enough for a guest's
/// garbage collector to run while the host hands it data (Go's used to
/// start inside `cabi_realloc` and trap after about 4 MiB).
fn check_echo_to_eof(host: &Host) {
    let payload: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    let sent = payload.clone();
    let echoed = echo_to_end(&host.connect(), move |writer| {
        writer.write_all(&sent).expect("send 16 MiB")
    });
    assert_eq!(echoed.len(), payload.len(), "16 MiB echo length");
    assert!(echoed == payload, "16 MiB payload came back changed");
}

/// Runs one guest through its checks; then every connection must have
/// ended `outcome=ok` (a guest that forgets to drop its borrowed
/// connection still answers, then traps on return).
fn check_guest(name: &str, plugin: Plugin, mode: Mode) {
    let host = Host::builder()
        .plugin(guest_path(name))
        .mode(mode)
        .start_timeout(COLD_START)
        .start();
    let connections = match plugin {
        Plugin::Echo => {
            check_echo(&host);
            check_echo_to_eof(&host);
            2
        }
        Plugin::HttpHello => {
            check_http(&host);
            2
        }
        Plugin::Bot10086 => {
            check_bot(&host);
            1
        }
    };
    assert_connections_ok(&host, name, connections);
}

/// Waits for `connections` "connection closed" log lines; every one must
/// say `outcome=ok`.
fn assert_connections_ok(host: &Host, name: &str, connections: usize) {
    let closed = || -> Vec<String> {
        host.logs()
            .lines()
            .filter(|line| line.contains("connection closed"))
            .map(str::to_string)
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while closed().len() < connections && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = closed();
    assert_eq!(lines.len(), connections, "{name}: {}", host.logs());
    for line in lines {
        assert!(line.contains("outcome=ok"), "{name}: {line}");
    }
}

/// proto-echo, beyond [`check_echo`] and [`check_echo_to_eof`]: four
/// clients of the one instance echo 1 MiB each at the same time, every
/// byte back to its own sender.
fn check_echo_concurrently(host: &Host) {
    let clients: Vec<_> = (0..4u8)
        .map(|k| {
            let stream = host.connect();
            std::thread::spawn(move || {
                let payload: Vec<u8> = (0..1u32 << 20)
                    .map(|i| (i % 241) as u8 ^ k.wrapping_mul(67))
                    .collect();
                let sent = payload.clone();
                let echoed = echo_to_end(&stream, move |w| w.write_all(&sent).expect("send 1 MiB"));
                assert!(echoed == payload, "client {k}: its 1 MiB came back changed");
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client's check failed");
    }
}

/// A fresh host serving the protocol guest `name` on its one shared
/// instance, with more `host run` options.
fn serve_shared(name: &str, args: &[&str]) -> Host {
    let host = Host::builder()
        .plugin(guest_path(name))
        .mode(Mode::Shared)
        .args(args)
        .start_timeout(COLD_START)
        .start();
    assert!(
        host.stderr_contains("serving=1 shared instance"),
        "{name}: {}",
        host.logs()
    );
    host
}

/// Runs one protocol-world guest through its built-in's checks, each chat
/// check on a fresh host (they count the guests from 1).
fn check_protocol_guest(name: &str, plugin: ProtocolPlugin) {
    match plugin {
        ProtocolPlugin::Chat => {
            let host = serve_shared(name, &[]);
            check_chat(&host);
            host.assert_no_host_panic(name);
            let host = serve_shared(name, &["--write-buffer", WRITE_BUFFER]);
            check_chat_cuts_a_client_that_never_reads(&host);
            host.expect_log(
                "output buffer full: the client is not reading the room",
                SOON,
            );
            host.assert_no_host_panic(name);
            let host = serve_shared(name, &[]);
            check_chat_cuts_an_endless_line(&host);
            host.assert_no_host_panic(name);
        }
        ProtocolPlugin::ProtoEcho => {
            let host = serve_shared(name, &[]);
            check_echo(&host);
            check_echo_to_eof(&host);
            check_echo_concurrently(&host);
            assert_connections_ok(&host, name, 6);
            host.assert_no_host_panic(name);
        }
    }
}

/// Every protocol-world guest behaves like its Rust built-in; all run,
/// then the failures are reported together.
#[test]
fn protocol_guests_in_every_language_behave_like_the_rust_built_ins() {
    let names: Vec<&str> = PROTOCOL_GUESTS.iter().map(|(name, _)| *name).collect();
    require_built(&names);
    let mut failed = Vec::new();
    for (name, plugin) in PROTOCOL_GUESTS {
        eprintln!("--- {name}");
        if catch_unwind(AssertUnwindSafe(|| check_protocol_guest(name, *plugin))).is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "failed (see the panics above): {}",
        failed.join(", ")
    );
}

in_every_mode! {
    /// Every guest passes its example's checks; all of them run even if
    /// one fails, then the failures are reported together.
    fn guests_in_every_language_behave_like_the_rust_examples(mode: Mode) {
        let names: Vec<&str> = GUESTS.iter().map(|(name, _)| *name).collect();
        require_built(&names);
        let mut failed = Vec::new();
        for (name, plugin) in GUESTS {
            eprintln!("--- {name} {mode:?}");
            if catch_unwind(AssertUnwindSafe(|| check_guest(name, *plugin, mode))).is_err() {
                failed.push(*name);
            }
        }
        assert!(
            failed.is_empty(),
            "failed (see the panics above): {}",
            failed.join(", ")
        );
    }
}

/// `host check` sizes its engine as `host run` does: every guest passes,
/// the Python and JavaScript ones (many core instances each) included.
#[test]
fn host_check_accepts_the_guest_of_every_language() {
    let handlers: Vec<&str> = GUESTS.iter().map(|(name, _)| *name).collect();
    let protocols: Vec<&str> = PROTOCOL_GUESTS.iter().map(|(name, _)| *name).collect();
    require_built(&handlers);
    require_built(&protocols);
    for (names, world) in [(handlers, "handler"), (protocols, "protocol")] {
        for name in names {
            let stdout = checked(&guest_path(name), COLD_START);
            assert!(stdout.starts_with("ok: "), "host check {name}: {stdout}");
            let implements = format!("implements plughost:handler/{world}@0.1");
            assert!(stdout.contains(&implements), "{name}: {stdout}");
            assert!(stdout.contains("instance: "), "{name}: {stdout}");
        }
    }
}

#[test]
fn guests_built_against_another_wit_are_refused_by_name() {
    let cases: [(&str, &[&str]); 2] = [
        (
            "mismatch-wit-0.2.0",
            &[
                "plughost:handler/handler@0.1",
                "plughost:handler/connections@0.2.0",
            ],
        ),
        (
            "mismatch-no-finish",
            &["plughost:handler/handler@0.1", "missing export `finish`"],
        ),
    ];
    require_built(&cases.map(|(name, _)| name));
    for (name, needles) in cases {
        let path = guest_path(name);
        let path = utf8(&path);
        for line in [
            refused(&["check", path]),
            refused(&["run", "--plugin", path, "--port", "0"]),
        ] {
            for needle in needles {
                assert!(line.contains(needle), "`{needle}` missing from: {line}");
            }
        }
    }
}

/// Runs a scaffold's `plugin.toml` build command in `dir` as a user would
/// (the toolchains `scripts/build-guests.sh` installs are not on the
/// PATH); returns the built component.
fn build_scaffold(dir: &std::path::Path) -> PathBuf {
    let root = workspace_root();
    let tools = root.join("target/guest-tools");
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).expect("read plugin.toml");
    let manifest: toml::Table = toml::from_str(&manifest).expect("plugin.toml is TOML");
    let build = manifest["build"]
        .as_str()
        .expect("plugin.toml has a build command");
    let output = manifest["output"]
        .as_str()
        .expect("plugin.toml has an output");
    // The user's PATH as it is: `host new` must point the build at the
    // toolchains the setup installed under target/guest-tools itself.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(build)
        .current_dir(dir)
        .env("GOCACHE", tools.join("go-cache"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run the build command");
    assert!(
        out.status.success(),
        "`{build}` failed in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let built = dir.join(output);
    assert!(
        built.exists(),
        "the build did not write {}",
        built.display()
    );
    built
}

/// `host new --world <world>` for every language: each scaffold builds
/// with its `plugin.toml`, passes `host check` as a plugin of `world`, and
/// echoes.
fn scaffolds_build_and_echo(world: &str) {
    let root = workspace_root();
    let venv = root.join("target/guest-tools/venv");
    assert!(
        venv.exists(),
        "{} is missing (scripts/build-guests.sh installs it)",
        venv.display()
    );
    let failed: Vec<&str> = ["c", "go", "python", "js", "rust"]
        .into_iter()
        .filter(|lang| {
            eprintln!("--- host new --world {world} {lang}");
            catch_unwind(AssertUnwindSafe(|| {
                let name = format!("demo-{world}-{lang}");
                let dir = temp_dir(&format!("new-{world}-{lang}")).join(&name);
                let dir_arg = utf8(&dir);
                let out = run_host(&["new", "--world", world, lang, &name, "--dir", dir_arg]);
                assert!(
                    out.status.success(),
                    "host new {lang}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(dir.join("README.md").exists());
                // Share what is already installed or compiled.
                match *lang {
                    // The scaffold's own package.json and lock, installed
                    // from npm's cache (filled by scripts/build-guests.sh).
                    "js" => {
                        let out = std::process::Command::new("npm")
                            .args(["install", "--prefer-offline", "--no-audit", "--no-fund"])
                            .current_dir(&dir)
                            .output()
                            .expect("run npm");
                        assert!(
                            out.status.success(),
                            "npm install: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    "rust" => {
                        let target = root.join("target/scaffold-rust");
                        std::fs::create_dir_all(&target).expect("create the shared target");
                        std::os::unix::fs::symlink(&target, dir.join("target"))
                            .expect("link the shared target");
                    }
                    _ => {}
                }
                let built = build_scaffold(&dir);
                let report = checked(&built, COLD_START);
                let implements = format!("implements plughost:handler/{world}@0.1");
                assert!(report.contains(&implements), "{report}");
                let mode = match world {
                    "protocol" => Mode::Shared,
                    _ => Mode::Threads,
                };
                let host = Host::builder()
                    .plugin(&built)
                    .mode(mode)
                    .start_timeout(COLD_START)
                    .start();
                check_echo(&host);
                assert_connections_ok(&host, &name, 1);
                drop(host);
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir_all(parent);
                }
            }))
            .is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "scaffolds that failed (see the panics above): {}",
        failed.join(", ")
    );
}

#[test]
fn host_new_scaffolds_plugins_that_build_and_echo() {
    scaffolds_build_and_echo("handler");
}

#[test]
fn host_new_scaffolds_protocol_plugins_that_build_and_echo() {
    scaffolds_build_and_echo("protocol");
}
