//! The servers under test, each in a process of its own: the `host` binary
//! with a plugin, and the native reference (this bench binary re-run with
//! `--reference-server`), and the Python `socketserver` echo for
//! comparison. Also where processes run (CPU pinning), finding
//! programs on `PATH`, the host binaries under test and the optional native
//! plugins.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::reference::{self, Kind};

/// How long a server may take to print its address (a Python or
/// JavaScript guest compiles for up to a minute when it is not cached).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Warning and error lines of a host's log kept for the report.
const KEPT_LOG_LINES: usize = 50;
/// The Python comparison server's source.
const PYTHON_ECHO_SOURCE: &str = include_str!("socketserver_echo.py");

/// Which CPUs servers and load generators run on.
#[derive(Clone, Copy)]
pub struct Placement {
    /// `(server CPU, client CPU)` when pinning, else `None`.
    cpus: Option<(usize, usize)>,
}

impl Placement {
    /// Servers on CPU 0 and clients on CPU 1 when `pin` and there are two
    /// CPUs or more; otherwise no pinning.
    pub fn new(pin: bool) -> Placement {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        Placement {
            cpus: (pin && cpus >= 2).then_some((0, 1)),
        }
    }

    /// One line saying where things run.
    pub fn describe(&self) -> String {
        match self.cpus {
            Some((server, client)) => {
                format!(
                    "servers pinned to CPU {server}, load generators (incl. wrk) to CPU {client}"
                )
            }
            None => "no CPU pinning (BENCH_PIN=0 or a single CPU)".to_string(),
        }
    }

    /// Pins this process's current thread, and so every thread it spawns
    /// afterwards, to the client CPU.
    pub fn pin_self_to_clients(&self) {
        if let Some((_, client)) = self.cpus {
            // Best effort: if it fails the figures are only noisier.
            let _ = set_affinity(&cpu_set(client));
        }
    }

    /// Makes `command` run on the server CPU.
    pub fn server(&self, command: &mut Command) {
        if let Some((server, _)) = self.cpus {
            pin_command(command, server);
        }
    }

    /// Makes `command` run on the client CPU.
    pub fn client(&self, command: &mut Command) {
        if let Some((_, client)) = self.cpus {
            pin_command(command, client);
        }
    }
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid empty set, and CPU_SET only
    // writes inside the set (cpu is below CPU_SETSIZE: it comes from the
    // count of available CPUs).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from a
    // valid reference.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn pin_command(command: &mut Command, cpu: usize) {
    let set = cpu_set(cpu);
    // SAFETY: the closure runs in the child between fork and exec; it only
    // makes one system call (async-signal-safe) on a set built before the
    // fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || set_affinity(&set));
    }
}

/// The path of `program` if it is an executable file on `PATH` (like
/// `which`).
pub fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The workspace's `target/` directory.
fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// A test-only component from `tests/plugins/`, which the host's build
/// leaves in `target/wasm/wasm32-wasip2/release/<file>`, or why it is
/// missing.
pub fn test_plugin(file: &str) -> Result<PathBuf> {
    let path = workspace_target()
        .join("wasm/wasm32-wasip2/release")
        .join(file);
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{} is missing (cargo build --release builds it)",
            path.display()
        )
    }
}

/// A guest component built by `scripts/build-guests.sh`:
/// `target/guests/<file>`, or why it cannot be used.
pub fn guest(file: &str) -> Result<PathBuf> {
    let path = workspace_target().join("guests").join(file);
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "target/guests/{file} is missing (build it with scripts/build-guests.sh once its \
             sources are in plugins/)"
        )
    }
}

/// The `host` binaries under test.
pub struct HostBinaries {
    /// The one every host row runs: `BENCH_HOST`, else the workspace's
    /// release build.
    pub main: PathBuf,
    /// Other builds with rows of their own, measured in the same rounds,
    /// each with its label: the profile-guided build `scripts/build-pgo.sh`
    /// leaves in `target/pgo/host` (if there is one and `BENCH_PGO` is not
    /// 0), and `BENCH_BASELINE` (e.g. the previous commit's build, for an
    /// A/B run).
    pub others: Vec<(&'static str, PathBuf)>,
}

impl HostBinaries {
    /// The binaries the environment asks for (`pgo_rows`: `BENCH_PGO`).
    pub fn find(pgo_rows: bool) -> HostBinaries {
        let main = std::env::var_os("BENCH_HOST")
            .filter(|path| !path.is_empty())
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_host")), PathBuf::from);
        let pgo = workspace_target().join("pgo/host");
        let baseline = std::env::var_os("BENCH_BASELINE")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        let others = [
            (pgo_rows && pgo.is_file()).then_some(("PGO build", pgo)),
            baseline.map(|path| ("baseline", path)),
        ];
        HostBinaries {
            main,
            others: others.into_iter().flatten().collect(),
        }
    }
}

/// The native plugins built next to the WASM ones, if any.
pub struct NativePlugins {
    /// The native echo library.
    pub echo: Option<PathBuf>,
    /// The native HTTP hello library.
    pub http_hello: Option<PathBuf>,
}

impl NativePlugins {
    /// Looks in `target/plugins/` for `lib<name>_native.so`, then for
    /// `lib<name>.so` (what host/build.rs builds).
    pub fn find() -> NativePlugins {
        let dir = workspace_target().join("plugins");
        let find = |stem: &str| {
            [format!("lib{stem}_native.so"), format!("lib{stem}.so")]
                .into_iter()
                .map(|name| dir.join(name))
                .find(|path| path.is_file())
        };
        NativePlugins {
            echo: find("echo"),
            http_hello: find("http_hello"),
        }
    }
}

/// A server process under test; killed when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    /// Warning and error lines of its log (the host's only).
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// The native reference server: this binary re-run as
    /// `--reference-server <kind>`, which prints its address on stdout.
    pub fn reference(kind: Kind, placement: &Placement) -> Result<Server> {
        let exe = std::env::current_exe().context("find the bench binary")?;
        let mut command = Command::new(exe);
        command.args([reference::FLAG, kind.name()]);
        placement.server(&mut command);
        Server::printing_address(command, "reference server")
    }

    /// The seeds' kind of Python server: `socketserver_echo.py` (a
    /// `ThreadingTCPServer` echo) under `python3`, which prints its
    /// address on stdout.
    pub fn python_echo(python: &Path, placement: &Placement) -> Result<Server> {
        let mut command = Command::new(python);
        command.args(["-c", PYTHON_ECHO_SOURCE]);
        placement.server(&mut command);
        Server::printing_address(command, "python socketserver echo")
    }

    /// Starts `command` and waits for the address it prints as its first
    /// line on stdout.
    fn printing_address(command: Command, what: &str) -> Result<Server> {
        Server::when_stdout_says(command, what, |line| line.trim().parse().ok())
    }

    /// Starts `command` and waits for the first line on its stdout that
    /// `ready` accepts, which gives the address it serves.
    fn when_stdout_says(
        mut command: Command,
        what: &str,
        ready: impl Fn(&str) -> Option<SocketAddr>,
    ) -> Result<Server> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .with_context(|| format!("start the {what}"))?;
        let stdout = child
            .stdout
            .take()
            .with_context(|| format!("{what} stdout"))?;
        let lines = read_lines(stdout, None);
        let addr =
            wait_for_line(&mut child, &lines, ready).with_context(|| format!("{what} address"))?;
        Ok(Server {
            addr,
            child,
            log: Arc::default(),
        })
    }

    /// A Redis server (`redis_server`, the Debian package's binary) on a
    /// free loopback port, keeping nothing on disk, on the client CPU
    /// when pinned: whatever calls it (a host, or `redis-benchmark` put on
    /// the server CPU) then crosses the same two cores. Waits until it
    /// accepts connections.
    pub fn redis(redis_server: &Path, placement: &Placement) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("a free port for Redis")?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(redis_server);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        placement.client(&mut command);
        Server::when_stdout_says(command, "redis-server", |line| {
            line.contains("Ready to accept connections").then_some(addr)
        })
    }

    /// A `host` binary: `host run --port 0 <args>`. It logs at `warn`
    /// except the listening line (`host::server` at `info`), so
    /// per-connection lines (target `connection`) cost nothing; the log is
    /// drained on a thread for as long as the host runs, keeping warnings.
    pub fn host(name: &str, binary: &Path, args: &[&str], placement: &Placement) -> Result<Server> {
        let mut command = Command::new(binary);
        command
            .args(["run", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn,host::server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        placement.server(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stderr = child.stderr.take().context("host stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = read_lines(stderr, Some(Arc::clone(&log)));
        let addr = wait_for_line(&mut child, &lines, |line| {
            let rest = line.split("listening on ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("{name}: host {}", args.join(" ")))?;
        Ok(Server { addr, child, log })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time (user and system) the server's process has used so
    /// far, all its threads together, exited ones included (`/proc/PID/stat`,
    /// in clock ticks of usually 10 ms).
    pub fn cpu_time(&self) -> Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |at: usize| fields.get(at).and_then(|v| v.parse::<u64>().ok());
        // utime and stime are fields 14 and 15, 12 and 13 after the name.
        let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
            bail!("no CPU times in {path}");
        };
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Duration::from_secs_f64((user + system) as f64 / per_second))
    }

    /// The warning and error lines the server logged so far.
    pub fn warnings(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    /// Asks the server to stop (SIGTERM: the host drains and exits, and an
    /// instrumented build writes its profile on the way out), and kills it
    /// if it has not within [`STOP_TIMEOUT`].
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our
            // own child, not yet reaped, so the id is still its.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `source` line by line on a thread until it ends, sending each line
/// on the returned channel (the first ones are what starting waits for)
/// and keeping warning/error lines in `keep`. Draining never stops while
/// the process runs, so it never blocks on a full pipe.
fn read_lines(
    source: impl Read + Send + 'static,
    keep: Option<Arc<Mutex<Vec<String>>>>,
) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { return };
            if let Some(keep) = &keep
                && (line.contains(" WARN ") || line.contains(" ERROR "))
                && let Ok(mut kept) = keep.lock()
                && kept.len() < KEPT_LOG_LINES
            {
                kept.push(line.clone());
            }
            // Once starting is over nobody listens; keep draining anyway.
            let _ = sender.send(line);
        }
    });
    receiver
}

/// Waits (bounded) for the first line `parse` accepts.
fn wait_for_line<T>(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(found) = parse(&line) {
                    return Ok(found);
                }
                if seen.len() < 20 {
                    seen.push(line);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "no address within {START_TIMEOUT:?}; output:\n{}",
                    seen.join("\n")
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                // It closed its output, so it has most likely exited; make
                // sure before waiting, so the wait cannot hang.
                let _ = child.kill();
                let status = child.wait().map_err(|e| anyhow!("wait: {e}"))?;
                bail!(
                    "exited ({status}) before printing its address; output:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// Runs `command` to completion with its stdout captured, killing it after
/// `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Result<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().context("wait")? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {limit:?}; killed");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().map_err(|_| anyhow!("stdout reader panicked"))?;
    let err = err.join().map_err(|_| anyhow!("stderr reader panicked"))?;
    if !status.success() {
        bail!("exited with {status}: {}{}", err.trim(), out.trim());
    }
    Ok(out)
}
