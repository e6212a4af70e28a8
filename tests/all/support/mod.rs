//! Test support: start the real `host` binary on an ephemeral loopback
//! port, read its log, talk to it, stop it; and find the plugins the build
//! produced.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

/// How long a host may take to start (the first start compiles plugins).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Read/write timeout of client sockets: a broken host fails a test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

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

fn host_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .args(args)
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", cache_dir())
        .stdin(Stdio::null());
    command
}

/// Runs a one-shot `host` command (e.g. `check`, or a `run` that must fail)
/// to completion, bounded in time.
pub fn run_host(args: &[&str]) -> Output {
    let mut child = host_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host");
    let deadline = Instant::now() + START_TIMEOUT;
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

/// A running `host run`, killed when dropped.
pub struct Host {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// Starts `host` with `args` and waits for its first `listening on`.
    pub fn start(args: &[&str]) -> Host {
        Self::start_with_timeout(args, START_TIMEOUT)
    }

    /// Starts `host run --plugin PLUGIN --port 0` followed by `extra`
    /// (e.g. `--event-loops 1`).
    pub fn serving(plugin: &str, extra: &[&str]) -> Host {
        let mut args = vec!["run", "--plugin", plugin, "--port", "0"];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Like [`Host::start`], waiting up to `timeout` (e.g. for a build).
    pub fn start_with_timeout(args: &[&str], timeout: Duration) -> Host {
        Self::start_inner(args, timeout, "listening on ")
    }

    /// Like [`Host::start`] for listeners whose log line reads
    /// `<prefix><ip:port>` (e.g. `listening on udp:`).
    pub fn start_with_log_prefix(args: &[&str], prefix: &str) -> Host {
        Self::start_inner(args, START_TIMEOUT, prefix)
    }

    /// Like [`Host::start`] with extra environment variables (e.g. `TMPDIR`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &OsStr)]) -> Host {
        let mut command = host_command(args);
        command.envs(env.iter().copied());
        Self::spawn(command, START_TIMEOUT, "listening on ")
    }

    fn start_inner(args: &[&str], timeout: Duration, prefix: &str) -> Host {
        Self::spawn(host_command(args), timeout, prefix)
    }

    fn spawn(mut command: Command, timeout: Duration, prefix: &str) -> Host {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut host = Host {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(addr) = host.addrs_after(prefix).first() {
                host.addr = *addr;
                return host;
            }
            if let Some(status) = host.child.try_wait().expect("poll host") {
                panic!("host exited ({status}) before listening:\n{}", host.logs());
            }
            assert!(
                Instant::now() < deadline,
                "host never listened:\n{}",
                host.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn addrs_after(&self, prefix: &str) -> Vec<SocketAddr> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| {
                let rest = &line[line.find(prefix)? + prefix.len()..];
                let token = rest
                    .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                    .next()?;
                token.parse().ok()
            })
            .collect()
    }

    /// The address of the listener named `name` (from its `listening on`
    /// line), waiting for it up to the start timeout.
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        let tag = format!("listener=\"{name}\"");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self.lines.lock().unwrap().iter().find_map(|line| {
                if !line.contains(&tag) {
                    return None;
                }
                let rest = &line[line.find("listening on ")? + "listening on ".len()..];
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no listener {name}:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client connection with timeouts set.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Whether the log has a line containing `needle`.
    pub fn stderr_contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits (bounded) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr_contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) for a log line containing `needle`; fails the test,
    /// showing the whole log, if none comes.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        assert!(
            self.wait_for_log(needle, timeout),
            "no log line with {needle:?} within {timeout:?}:\n{}",
            self.logs()
        );
    }

    /// Fails the test if the host itself panicked (a plugin's own panic
    /// message, logged under target `plugin`, does not count).
    pub fn assert_no_host_panic(&self, what: &str) {
        let logs = self.logs();
        let host_panic = logs
            .lines()
            .any(|line| line.contains("panicked") && !line.contains(" plugin: "));
        assert!(!host_panic, "{what}:\n{logs}");
    }

    /// Sends a signal to the host.
    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits (bounded) for the host to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll host") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// `host run --plugin <plugin> --port 0 --event-loops 1 <extra>`.
pub fn on_one_loop(plugin: &str, extra: &[&str]) -> Host {
    let mut args = vec![
        "run",
        "--plugin",
        plugin,
        "--port",
        "0",
        "--event-loops",
        "1",
    ];
    args.extend_from_slice(extra);
    Host::start(&args)
}

/// Sends `message` on `stream` and reads as many bytes back.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    stream.write_all(message).expect("send");
    let mut reply = vec![0; message.len()];
    stream.read_exact(&mut reply).expect("reply");
    reply
}

/// A client connection to `addr` with timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Writes to `stream` without ever reading, until the peer's echo stalls
/// the socket buffers (a write fails after 5 s) or 64 MiB went through.
pub fn write_without_reading(stream: &mut TcpStream) {
    use std::io::Write;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
}

/// Sends `x` to `addr` and returns how long until the host closed the
/// connection (a reset, from unread input at close, counts as well as a
/// FIN); gives up waiting after 30 s.
pub fn closed_after(addr: SocketAddr) -> Duration {
    use std::io::{Read, Write};
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(b"x").unwrap();
    let _ = stream.read_to_end(&mut Vec::new());
    started.elapsed()
}

/// Sends with `send` on a clone of `stream`, in a thread of its own, then
/// ends the client's side; meanwhile reads everything that comes back
/// until the host closes, and returns it. Writing and reading at once, as
/// a bulk transfer through an echo needs (neither side blocks the other).
pub fn echo_to_end(
    stream: &TcpStream,
    send: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> Vec<u8> {
    use std::io::Read;
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        send(&mut writer);
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    let mut reader = stream;
    reader
        .read_to_end(&mut echoed)
        .expect("the host closes after the client's end of stream");
    sender.join().unwrap();
    echoed
}
