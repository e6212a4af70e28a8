//! [`Host`]: a running `host run`, started by [`HostBuilder`] in an
//! explicit serving [`Mode`], with its log captured for the test to read
//! and wait on.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::{START_TIMEOUT, connect, host_command};

/// How a host serves WASM plugins. Every started host states one (the
/// host's default is not what the tests pin down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--event-loops 0`: a thread per connection.
    Threads,
    /// `--event-loops 1`: every connection a fiber on one event-loop
    /// thread.
    EventLoop,
    /// `--instances 1`: a protocol plugin's one shared instance (the mode
    /// a protocol-world plugin is always served in).
    Shared,
}

impl Mode {
    /// The `host run` flags that select this mode.
    pub fn flags(self) -> [&'static str; 2] {
        match self {
            Mode::Threads => ["--event-loops", "0"],
            Mode::EventLoop => ["--event-loops", "1"],
            Mode::Shared => ["--instances", "1"],
        }
    }
}

/// Where the serving mode comes from.
#[derive(Debug, Clone, Copy)]
enum Serving {
    /// Not said yet: [`HostBuilder::start`] refuses to start.
    Unstated,
    /// `--event-loops` on the command line.
    Mode(Mode),
    /// The configuration file's `event_loops` (no flag).
    AsConfigured,
}

/// Builds the command line of a `host run` and starts it:
///
/// ```ignore
/// Host::builder().plugin("echo").mode(Mode::Threads).args(&["--grace", "1s"]).start()
/// ```
///
/// The command is `host <global args> run <--config FILE | --plugin P
/// --port N [--udp]> <mode flags> <args>`.
#[must_use]
pub struct HostBuilder {
    global_args: Vec<OsString>,
    listener: Vec<OsString>,
    port: u16,
    udp: bool,
    serving: Serving,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    listening_prefix: String,
    start_timeout: Duration,
}

impl HostBuilder {
    /// Serves `plugin` (a built-in name or a path) on 127.0.0.1.
    pub fn plugin(mut self, plugin: impl AsRef<OsStr>) -> Self {
        self.listener = vec!["--plugin".into(), plugin.as_ref().to_owned()];
        self
    }

    /// Serves the listeners of the configuration file `path` instead.
    pub fn config(mut self, path: &Path) -> Self {
        self.listener = vec!["--config".into(), path.as_os_str().to_owned()];
        self
    }

    /// The port of a `plugin` listener (default 0: an ephemeral one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// A UDP listener (`--udp`), found by its `listening on udp:` line.
    pub fn udp(mut self) -> Self {
        self.udp = true;
        self.listening_prefix = "listening on udp:".into();
        self
    }

    /// How WASM plugins are served (`--event-loops 0` or `1`).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.serving = Serving::Mode(mode);
        self
    }

    /// No `--event-loops` flag: the configuration file's `event_loops`
    /// decides (for tests of that key).
    pub fn mode_as_configured(mut self) -> Self {
        self.serving = Serving::AsConfigured;
        self
    }

    /// More `host run` options, after the listener and the mode.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// Options of `host` itself, before `run` (e.g. `--log-format json`).
    pub fn global_args(mut self, args: &[&str]) -> Self {
        self.global_args.extend(args.iter().map(OsString::from));
        self
    }

    /// An environment variable of the host's process.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.into(), value.as_ref().to_owned()));
        self
    }

    /// How long the host may take to listen (default [`START_TIMEOUT`];
    /// longer for a plugin that must be built or compiled cold).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the host and waits for its first listening address.
    pub fn start(self) -> Host {
        assert!(
            !self.listener.is_empty(),
            "a host needs .plugin(..) or .config(..)"
        );
        let mut args: Vec<OsString> = self.global_args;
        args.push("run".into());
        let port = self.port.to_string();
        let is_plugin = self.listener[0] == "--plugin";
        args.extend(self.listener);
        if is_plugin {
            args.extend(["--port".into(), port.into()]);
            if self.udp {
                args.push("--udp".into());
            }
        }
        match self.serving {
            Serving::Unstated => panic!(
                "state the serving mode: .mode(Mode::Threads), .mode(Mode::EventLoop) \
                 or .mode_as_configured()"
            ),
            Serving::Mode(mode) => args.extend(mode.flags().map(OsString::from)),
            Serving::AsConfigured => {}
        }
        args.extend(self.args);
        Host::spawn(&args, &self.env, &self.listening_prefix, self.start_timeout)
    }
}

/// A running `host run`, killed when dropped.
pub struct Host {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// A builder for a host; see [`HostBuilder`].
    pub fn builder() -> HostBuilder {
        HostBuilder {
            global_args: Vec::new(),
            listener: Vec::new(),
            port: 0,
            udp: false,
            serving: Serving::Unstated,
            args: Vec::new(),
            env: Vec::new(),
            listening_prefix: "listening on ".into(),
            start_timeout: START_TIMEOUT,
        }
    }

    /// `host run --plugin <plugin> --port 0` in `mode`: the common case.
    pub fn serving(plugin: impl AsRef<OsStr>, mode: Mode) -> Host {
        Host::builder().plugin(plugin).mode(mode).start()
    }

    fn spawn(
        args: &[OsString],
        env: &[(OsString, OsString)],
        prefix: &str,
        timeout: Duration,
    ) -> Host {
        let shown = || {
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut child = host_command()
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut host = Host {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(addr) = host.first_addr_after(prefix) {
                host.addr = addr;
                return host;
            }
            if let Some(status) = host.child.try_wait().expect("poll host") {
                panic!(
                    "`host {}` exited ({status}) before listening:\n{}",
                    shown(),
                    host.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "`host {}` never listened:\n{}",
                shown(),
                host.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().expect("log lock")
    }

    fn first_addr_after(&self, prefix: &str) -> Option<SocketAddr> {
        self.lines().iter().find_map(|line| {
            let rest = &line[line.find(prefix)? + prefix.len()..];
            let token = rest
                .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                .next()?;
            token.parse().ok()
        })
    }

    /// The address of the listener named `name` (from its `listening on`
    /// line), waiting for it up to the start timeout.
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        let tag = format!("listener=\"{name}\"");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self.lines().iter().find_map(|line| {
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
        self.lines().join("\n")
    }

    /// Whether the log has a line containing `needle`.
    pub fn stderr_contains(&self, needle: &str) -> bool {
        self.log_count(needle) > 0
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits (bounded) until at least `count` log lines contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_count(needle) >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for a log line containing `needle`; fails the test,
    /// showing the whole log, if none comes.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        self.expect_log_count(needle, 1, timeout);
    }

    /// Waits (bounded) until `count` log lines contain `needle`; fails the
    /// test, showing the whole log, if they do not come.
    pub fn expect_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        assert!(
            self.wait_for_log_count(needle, count, timeout),
            "not {count} log line(s) with {needle:?} within {timeout:?}:\n{}",
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

    /// The CPU time the host's process has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<host>/stat");
        // Fields after the parenthesised name: utime and stime are the
        // 14th and 15th of the whole line, in clock ticks.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat has a (name)")
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_second = u64::try_from(per_second).expect("clock ticks per second");
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// Waits (bounded) until the host's process has used at least `cpu`
    /// of CPU time in all: proof that a plugin has been computing.
    pub fn wait_for_cpu_time(&self, cpu: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let used = self.cpu_time();
            if used >= cpu {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the host used only {used:?} of CPU, not {cpu:?}, within {timeout:?}:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The number of threads of the host's process.
    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("list /proc/<host>/task")
            .count()
    }

    /// Sends a signal to the host.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits an i32");
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(pid, signal) };
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
