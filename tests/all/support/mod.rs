//! Test support: start the real `host` binary ([`Host`], built with
//! [`Host::builder`], in an explicit [`Mode`]); run one-shot `host`
//! commands; find the plugins the build produced; temporary directories;
//! a real Redis ([`redis::Redis`]); and the [`in_every_mode!`] macro that runs a behaviour test on threads
//! and on an event loop.

pub mod admin;
pub mod checks;
pub mod clients;
mod host;
pub mod protocol;
pub mod redis;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub use clients::{connect, round_trip};
pub use host::{Host, Mode};

/// How long a host may take to start (the first start compiles plugins),
/// and a one-shot command to finish.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Read/write timeout of client sockets: a broken host fails a test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a log line or a state that is due at once (the
/// host's reaction to something the test did).
pub const SOON: Duration = Duration::from_secs(10);

/// Defines a behaviour test once and runs it in every serving mode: each
/// `fn name(mode: Mode) { ... }` becomes a module `name` with the tests
/// `name::on_threads` (`--event-loops 0`) and `name::on_an_event_loop`
/// (`--event-loops 1`), each calling the body with its [`Mode`]. The body
/// sees everything its file imports.
macro_rules! in_every_mode {
    ($($(#[$attr:meta])* fn $name:ident($mode:ident: Mode) $body:block)*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($mode: $crate::support::Mode) $body

            #[test]
            fn on_threads() {
                run($crate::support::Mode::Threads);
            }

            #[test]
            fn on_an_event_loop() {
                run($crate::support::Mode::EventLoop);
            }
        }
    )*};
}

/// `component` with a custom section appended: another build (another
/// content hash) of the same code.
pub fn rebuilt(component: &[u8], label: &str) -> Vec<u8> {
    let mut content = vec![u8::try_from(label.len()).expect("a short label")];
    content.extend_from_slice(label.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(content.len()).expect("a short section"));
    out.extend_from_slice(&content);
    out
}

/// A free loopback port for a server the test starts with a fixed port
/// (Redis, HAProxy, a host restarted on the same port).
///
/// It comes from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), never from `bind(":0")`: the kernel
/// hands ephemeral ports to every listener started on port 0 and every
/// client socket's source, so a port picked that way and released can be
/// taken by another test's host before this test's server binds it (seen
/// in CI: a Redis PING landed on another test's chat host). Each call
/// gives a port no earlier call in this process gave, checked free by
/// binding it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (low, high) = fixed_port_range();
    let span = u64::from(high - low);
    // Start at a place of the range that depends on the process, so two
    // test processes at once are unlikely to walk the same ports.
    let start = u64::from(std::process::id()).wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + u16::try_from(offset).expect("offset within a u16 range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// The ports [`free_port`] picks from: 10,000 up to the start of the
/// kernel's ephemeral range.
fn fixed_port_range() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        ephemeral_start > 11_000,
        "the ephemeral port range starts at {ephemeral_start}: no room below it for fixed test ports"
    );
    (10_000, ephemeral_start)
}

#[test]
fn free_ports_are_outside_the_ephemeral_range_and_never_repeat() {
    let (low, high) = fixed_port_range();
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    assert!(
        ports.iter().all(|port| (low..high).contains(port)),
        "{ports:?}"
    );
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    // What a host on port 0 gets is never one of them.
    let ephemeral = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port();
    assert!(ephemeral >= high, "{ephemeral}");
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf()
}

/// The compile cache shared by every test's hosts.
fn cache_dir() -> PathBuf {
    workspace_root().join("target/test-cache")
}

/// An example plugin the build leaves in `target/plugins/`.
pub fn example_plugin(file: &str) -> PathBuf {
    existing(workspace_root().join("target/plugins").join(file))
}

/// A test-only component from `tests/plugins/`.
pub fn test_plugin(file: &str) -> PathBuf {
    existing(
        workspace_root()
            .join("target/wasm/wasm32-wasip2/release")
            .join(file),
    )
}

/// A test-only component from `tests/plugins/` in its lean build
/// (`wasm32-unknown-unknown`, as the examples are built).
pub fn lean_test_plugin(file: &str) -> PathBuf {
    existing(
        workspace_root()
            .join("target/wasm/wasm32-unknown-unknown/release")
            .join(file),
    )
}

/// A test-only native library from `tests/plugins/`.
pub fn native_test_plugin(file: &str) -> PathBuf {
    existing(workspace_root().join("target/native/release").join(file))
}

fn existing(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: `cargo build --release` builds it (host/build.rs)",
        path.display()
    );
    path
}

/// What every test directory's name starts with.
const TEMP_PREFIX: &str = "plughost-test-";

/// A fresh, empty directory for one test (under the system's temporary
/// directory, so Unix socket paths in it stay short). The first call also
/// removes what earlier test processes left behind.
pub fn temp_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SWEEP: Once = Once::new();
    let base = std::env::temp_dir();
    SWEEP.call_once(|| remove_dirs_of_exited_runs(&base));
    let dir = base.join(format!(
        "{TEMP_PREFIX}{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Writes `text` to `host.toml` in a fresh temporary directory.
pub fn config_file(label: &str, text: &str) -> PathBuf {
    let path = temp_dir(label).join("host.toml");
    std::fs::write(&path, text).expect("write host.toml");
    path
}

/// Removes `plughost-test-<label>-<pid>-<n>` directories whose test
/// process has exited (a failed test keeps its files until then, for a
/// look; a scaffolded JavaScript plugin's is hundreds of MB).
fn remove_dirs_of_exited_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `host` with the test environment: info logs, the shared compile cache.
fn host_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", cache_dir())
        .stdin(Stdio::null());
    command
}

/// Runs a one-shot `host` command (e.g. `check`, or a `run` that must fail)
/// to completion, bounded in time.
pub fn run_host(args: &[&str]) -> Output {
    run_host_within(args, START_TIMEOUT)
}

/// [`run_host`] with a bound of its own (a first compile of a big guest
/// takes longer than [`START_TIMEOUT`]).
pub fn run_host_within(args: &[&str], timeout: Duration) -> Output {
    let mut child = host_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait for host").is_some() {
            return child.wait_with_output().expect("host output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`host {}` did not finish", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `host check PLUGIN`, which must succeed (within `timeout`); its report.
pub fn checked(plugin: &Path, timeout: Duration) -> String {
    let out = run_host_within(&["check", utf8(plugin)], timeout);
    assert!(
        out.status.success(),
        "host check {}: {}",
        plugin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a bad `host` command line and returns its one error line.
pub fn refused(args: &[&str]) -> String {
    let out = run_host(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "`host {}`: {stderr}",
        args.join(" ")
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one clear line expected:\n{stderr}");
    errors[0].to_string()
}

/// The path of `path` as UTF-8 (every test path is).
pub fn utf8(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Whether the tests run as root (some checks need to hand a file to
/// another user).
pub fn is_root() -> bool {
    // SAFETY: `geteuid` takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
