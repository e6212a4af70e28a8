//! The workloads: which servers each one runs against, in what order, and
//! what goes in its table.
//!
//! - `pingpong`, `bulk`, `churn`: the native reference echo, the host with
//!   the built-in WASM echo (with its default CPU deadline, and with
//!   `--call-timeout 0`, i.e. without epoch interruption, and on one event
//!   loop), the host with the native echo when it is built, and the
//!   seeds' Python `socketserver.ThreadingTCPServer` echo when `python3`
//!   is installed. The servers stay up for all three.
//! - `http`: wrk against the reference HTTP server, the host with the
//!   built-in `http-hello` (WASM by default, on threads and on one event loop, and
//!   native when built) and nginx.
//! - In both, the other builds under test with their default flags: the
//!   profile-guided build (`target/pgo/host`, from `scripts/build-pgo.sh`)
//!   when it exists, and `BENCH_BASELINE` when set.
//! - `idle`: many idle connections held open against a fresh server of
//!   each kind, its RSS before and while holding them.
//! - `startup` (in its own module): spawn to first echoed connection.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Settings;
use crate::http::{self, Nginx, WRK_CONNECTIONS};
use crate::load::{self, CHUNK, MESSAGE};
use crate::reference::Kind;
use crate::report::{Table, micros};
use crate::targets::{NativePlugins, Server, which};

/// The Python comparison target's row.
const PYTHON_ROW: &str = "python ThreadingTCPServer echo";
/// The column with the spread of a target's rounds.
pub const SPREAD: &str = "IQR";
/// Client threads of the churn workload.
const CHURN_CLIENTS: usize = 4;
/// Longest the idle workload spends opening connections, per server.
const IDLE_OPEN_LIMIT: Duration = Duration::from_secs(120);
/// Longest it waits for the echoes of all idle connections.
const IDLE_ECHO_LIMIT: Duration = Duration::from_secs(30);
/// Idle connections sampled for an echo after the RSS reading.
const IDLE_SAMPLE: usize = 100;

/// A target: its name, and the server or why it did not start.
type Target = (String, Result<Server>);

/// The host binary under test, run with `args`.
fn start_host(name: &str, args: &[&str], settings: &Settings) -> Target {
    start_host_binary(name, &settings.hosts.main, args, settings)
}

/// The other builds under test (the PGO build, `BENCH_BASELINE`) serving
/// `plugin` with their default flags.
fn start_other_hosts(plugin: &str, settings: &Settings) -> Vec<Target> {
    settings
        .hosts
        .others
        .iter()
        .map(|(label, binary)| {
            let name = format!("host ({label}), wasm {plugin}");
            start_host_binary(&name, binary, &["--plugin", plugin], settings)
        })
        .collect()
}

fn start_host_binary(name: &str, binary: &Path, args: &[&str], settings: &Settings) -> Target {
    eprintln!("  starting {name}");
    (
        name.to_string(),
        Server::host(name, binary, args, &settings.placement),
    )
}

/// The native reference's row name.
pub fn reference_row(kind: Kind) -> String {
    format!("native reference ({}, thread/conn)", kind.name())
}

fn start_reference(kind: Kind, settings: &Settings) -> Target {
    (
        reference_row(kind),
        Server::reference(kind, &settings.placement),
    )
}

/// The echo targets, in table order.
fn echo_targets(settings: &Settings, plugins: &NativePlugins) -> Vec<Target> {
    let mut targets = vec![
        start_reference(Kind::Echo, settings),
        start_host(
            "host, wasm echo (default: event loops)",
            &["--plugin", "echo"],
            settings,
        ),
        start_host(
            "host, wasm echo, --event-loops 0 (threads)",
            &["--plugin", "echo", "--event-loops", "0"],
            settings,
        ),
    ];
    targets.extend(start_other_hosts("echo", settings));
    targets.extend([
        start_host(
            "host, wasm echo, --call-timeout 0",
            &["--plugin", "echo", "--call-timeout", "0"],
            settings,
        ),
        start_host(
            "host, wasm echo, --event-loops 1",
            &["--plugin", "echo", "--event-loops", "1"],
            settings,
        ),
    ]);
    match &plugins.echo {
        Some(path) => {
            let path = path.to_string_lossy();
            targets.push(start_host(
                "host, native echo",
                &["--plugin", &path],
                settings,
            ));
        }
        None => println!(
            "native plugin: not built (no target/plugins/libecho_native.so or libecho.so)\n"
        ),
    }
    match which("python3") {
        Some(python) => targets.push((
            PYTHON_ROW.to_string(),
            Server::python_echo(&python, &settings.placement),
        )),
        None => println!("python3: not installed; no Python socketserver row\n"),
    }
    targets
}

/// Measures every target with `measure`, `rounds` times over (each round
/// goes through all targets, starting one further on each time, so a slow
/// spell of the machine hits them all),
/// and adds one row per target to `table`: the round with the median
/// `rate`, with the spread of the rounds (their interquartile range) as
/// the last column.
pub fn measure_all<S, T>(
    table: &mut Table,
    targets: &[(String, Result<S>)],
    rounds: usize,
    mut measure: impl FnMut(&S) -> Result<T>,
    rate: impl Fn(&T) -> f64,
    mut row: impl FnMut(&mut Table, &str, T, String),
) {
    let mut results: Vec<Result<Vec<T>>> = targets
        .iter()
        .map(|(_, server)| match server {
            Ok(_) => Ok(Vec::new()),
            Err(err) => Err(anyhow::anyhow!("did not start: {err:#}")),
        })
        .collect();
    for round in 1..=rounds {
        // Each round starts one target further on, so that no target is
        // always measured first or last.
        let start = (round - 1) % targets.len().max(1);
        let order = (start..targets.len()).chain(0..start);
        for at in order {
            let ((name, server), result) = (&targets[at], &mut results[at]);
            let (Ok(server), Ok(figures)) = (server, &mut *result) else {
                continue;
            };
            eprintln!("    {name} (round {round}/{rounds})");
            match measure(server) {
                Ok(figure) => figures.push(figure),
                // A target that failed once is not measured again.
                Err(err) => *result = Err(err),
            }
        }
    }
    for ((name, _), result) in targets.iter().zip(results) {
        match result {
            Ok(mut figures) if !figures.is_empty() => {
                figures.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
                let n = figures.len();
                let (lower, upper) = (rate(&figures[n / 4]), rate(&figures[(3 * n) / 4]));
                // The rounds are odd in number: this is the median.
                let median = figures.swap_remove(n / 2);
                let spread = spread(lower, upper, rate(&median));
                row(table, name, median, spread);
            }
            Ok(_) => table.failed(name, &anyhow::anyhow!("no rounds")),
            Err(err) => table.failed(name, &err),
        }
    }
}

/// The spread of a target's rounds: the interquartile range (`upper -
/// lower` quartile; `max - min` with 3 rounds or fewer) as a percentage
/// of the median.
fn spread(lower: f64, upper: f64, median: f64) -> String {
    if median > 0.0 {
        format!("{:.0}%", (upper - lower) / median * 100.0)
    } else {
        "-".to_string()
    }
}

/// Echo ping-pong, bulk echo and connection churn.
pub fn echo(settings: &Settings, plugins: &NativePlugins) {
    eprintln!("echo workloads: starting servers");
    let targets = echo_targets(settings, plugins);
    let (duration, rounds) = (settings.duration, settings.rounds);
    if settings.runs("pingpong") {
        for conns in [1, 50] {
            let plural = if conns == 1 { "" } else { "s" };
            eprintln!("  ping-pong, {conns} connection{plural}");
            let mut table = Table::new(
                &format!("echo ping-pong, {MESSAGE} B messages, {conns} connection{plural}"),
                "round trips/s, higher is better",
                &["p50 µs", "p99 µs", SPREAD],
            );
            measure_all(
                &mut table,
                &targets,
                rounds,
                |server| load::pingpong(server.addr, conns, duration),
                |figure| figure.rate,
                |table, name, figure, spread| {
                    table.row(
                        name,
                        figure.rate,
                        vec![micros(figure.p50_us), micros(figure.p99_us), spread],
                    );
                },
            );
            table.print();
        }
    }
    if settings.runs("bulk") {
        eprintln!("  bulk echo");
        let mut table = Table::new(
            &format!(
                "bulk echo, {} KiB writes, 1 connection, a reader thread",
                CHUNK / 1024
            ),
            "MB/s echoed, higher is better",
            &[SPREAD],
        );
        measure_all(
            &mut table,
            &targets,
            rounds,
            |server| load::bulk(server.addr, duration),
            |mbps| *mbps,
            |table, name, mbps, spread| table.row(name, mbps, vec![spread]),
        );
        table.print();
    }
    if settings.runs("churn") {
        eprintln!("  connection churn");
        let mut table = Table::new(
            &format!(
                "connection churn: connect, {MESSAGE} B echo, close; {CHURN_CLIENTS} client threads"
            ),
            "connections/s, higher is better",
            &["errors", SPREAD],
        );
        measure_all(
            &mut table,
            &targets,
            rounds,
            |server| load::churn(server.addr, CHURN_CLIENTS, duration),
            |figure| figure.rate,
            |table, name, figure, spread| {
                table.row(name, figure.rate, vec![figure.errors.to_string(), spread]);
            },
        );
        table.print();
    }
}

/// HTTP keep-alive hello with wrk.
pub fn http(settings: &Settings, plugins: &NativePlugins) {
    let title =
        format!("HTTP hello, keep-alive, wrk -t1 -c{WRK_CONNECTIONS}; only 2xx answers count");
    if which("wrk").is_none() {
        println!(
            "{title}: skipped, wrk is not installed (install it with `apt-get install -y wrk`)\n"
        );
        return;
    }
    eprintln!("http: starting servers");
    let mut targets = vec![
        start_reference(Kind::Http, settings),
        start_host(
            "host, wasm http-hello (default: event loops)",
            &["--plugin", "http-hello"],
            settings,
        ),
        start_host(
            "host, wasm http-hello, --event-loops 0 (threads)",
            &["--plugin", "http-hello", "--event-loops", "0"],
            settings,
        ),
    ];
    targets.extend(start_other_hosts("http-hello", settings));
    targets.extend([start_host(
        "host, wasm http-hello, --event-loops 1",
        &["--plugin", "http-hello", "--event-loops", "1"],
        settings,
    )]);
    let mut notes = Vec::new();
    match &plugins.http_hello {
        Some(path) => {
            let path = path.to_string_lossy();
            targets.push(start_host("host, native http-hello", &["--plugin", &path], settings));
        }
        None => notes.push(
            "native plugin: not built (no target/plugins/libhttp_hello_native.so or libhttp_hello.so)"
                .to_string(),
        ),
    }
    let nginx_name = "nginx (master + 2 workers)";
    let mut servers: Vec<(String, Result<SocketAddr>)> = targets
        .iter()
        .map(|(name, server)| {
            let addr = server.as_ref().map(|s| s.addr);
            (name.clone(), addr.map_err(|e| anyhow::anyhow!("{e:#}")))
        })
        .collect();
    // nginx serves alongside the others, so that each round measures it
    // too.
    let nginx = if which("nginx").is_some() {
        eprintln!("  starting {nginx_name}");
        let nginx = Nginx::start(&settings.placement);
        let addr = nginx.as_ref().map(|n| n.addr);
        servers.push((
            nginx_name.to_string(),
            addr.map_err(|e| anyhow::anyhow!("{e:#}")),
        ));
        Some(nginx)
    } else {
        notes.push(
            "nginx: not installed (install it with `apt-get install -y nginx`); no nginx column"
                .to_string(),
        );
        None
    };
    let mut table = Table::new(
        &title,
        "2xx requests/s, higher is better",
        &["non-2xx", "sock errs", SPREAD],
    );
    let mut nginx_rate = None;
    measure_all(
        &mut table,
        &servers,
        settings.rounds,
        |addr| http::wrk(*addr, settings.duration, &settings.placement),
        |result| result.ok_rate,
        |table, name, r, spread| {
            if name == nginx_name {
                nginx_rate = Some(r.ok_rate);
            }
            let extras = vec![r.non_2xx.to_string(), r.socket_errors.to_string(), spread];
            table.row(name, r.ok_rate, extras);
        },
    );
    drop(nginx);
    drop(targets);
    if let Some(rate) = nginx_rate {
        table.baseline("nginx", rate);
    }
    for note in notes {
        table.note(note);
    }
    table.print();
}

/// Many idle connections: RSS, and whether they are all served.
pub fn idle(settings: &Settings, plugins: &NativePlugins) {
    let count = settings.idle_conns;
    let mut table = Table::new(
        &format!("idle connections: up to {count} opened and held"),
        "RSS growth per answered connection in KiB, lower is better",
        &[
            "held",
            "answered",
            "RSS MiB",
            "held MiB",
            "threads",
            "maps/conn",
            "sample",
        ],
    );
    table.note(raise_fd_limit(count as u64 + 1024));
    table.note(format!(
        "host: default --max-connections here is {} on threads, {} on event loops (vm.max_map_count {}); \
         answered = echoed one byte within {}s; sample = {IDLE_SAMPLE} of them echo again after the RSS reading",
        host::capacity::default_max_connections(false, 0),
        host::capacity::default_max_connections(true, 0),
        host::sys::limits::max_map_count().map_or("unknown".to_string(), |m| m.to_string()),
        IDLE_ECHO_LIMIT.as_secs(),
    ));
    eprintln!("idle connections");
    // One server at a time, fresh, so that its RSS is this workload's only.
    let mut starts: Vec<Box<dyn Fn() -> Target>> = vec![
        Box::new(|| start_reference(Kind::Echo, settings)),
        Box::new(|| {
            start_host(
                "host, wasm echo (default: event loops)",
                &["--plugin", "echo"],
                settings,
            )
        }),
        Box::new(|| {
            start_host(
                "host, wasm echo, --event-loops 0 (threads)",
                &["--plugin", "echo", "--event-loops", "0"],
                settings,
            )
        }),
        Box::new(|| {
            start_host(
                "host, wasm echo, --event-loops 1",
                &["--plugin", "echo", "--event-loops", "1"],
                settings,
            )
        }),
    ];
    if let Some(path) = &plugins.echo {
        let path = path.to_string_lossy().into_owned();
        starts.push(Box::new(move || {
            start_host("host, native echo", &["--plugin", &path], settings)
        }));
    }
    for start in starts {
        let (name, server) = start();
        eprintln!("    {name}");
        let measured = server.and_then(|server| {
            let figures = hold_idle(&server, count);
            for warning in dedup(server.warnings()) {
                table.note(format!("{name} logged: {warning}"));
            }
            figures
        });
        match measured {
            Ok(idle) => {
                if let Some(why) = &idle.stopped {
                    table.note(format!("{name}: stopped opening at {}: {why}", idle.held));
                }
                let growth = idle.after_kib.saturating_sub(idle.before_kib);
                // Connections left in the backlog (past the host's cap) cost
                // the server nothing: divide by those it serves.
                table.row(
                    &name,
                    growth as f64 / idle.answered.max(1) as f64,
                    vec![
                        idle.held.to_string(),
                        idle.answered.to_string(),
                        format!("{:.1}", idle.before_kib as f64 / 1024.0),
                        format!("{:.1}", idle.after_kib as f64 / 1024.0),
                        idle.threads.to_string(),
                        format!(
                            "{:.1}",
                            idle.after_maps.saturating_sub(idle.before_maps) as f64
                                / idle.answered.max(1) as f64
                        ),
                        format!("{}/{}", idle.sample_ok, idle.sample_size),
                    ],
                );
                table.note(format!(
                    "{name}: opened {} connections in {:.1} s",
                    idle.held,
                    idle.open_took.as_secs_f64()
                ));
            }
            Err(err) => table.failed(&name, &err),
        }
    }
    table.print();
}

/// What holding idle connections against one server showed.
struct Idle {
    held: usize,
    answered: usize,
    stopped: Option<String>,
    open_took: Duration,
    before_kib: u64,
    after_kib: u64,
    /// Memory mappings (`/proc/<pid>/maps` lines) before and while held:
    /// what `vm.max_map_count` bounds.
    before_maps: usize,
    after_maps: usize,
    threads: u64,
    sample_ok: usize,
    sample_size: usize,
}

fn hold_idle(server: &Server, count: usize) -> Result<Idle> {
    // One connection first, so the "before" figure includes whatever the
    // first connection sets up once.
    let warm = load::connect(server.addr)?;
    load::echo_check(&[&warm], Duration::from_secs(5))?;
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before_kib = status_field(server.pid(), "VmRSS")?;
    let before_maps = mappings(server.pid())?;
    let held = load::open_idle(server.addr, count, IDLE_OPEN_LIMIT);
    let all: Vec<&TcpStream> = held.streams.iter().collect();
    let answered = load::echo_check(&all, IDLE_ECHO_LIMIT)?;
    std::thread::sleep(Duration::from_millis(500));
    let after_kib = status_field(server.pid(), "VmRSS")?;
    let after_maps = mappings(server.pid())?;
    let threads = status_field(server.pid(), "Threads")?;
    let step = (all.len() / IDLE_SAMPLE).max(1);
    let sample: Vec<&TcpStream> = all
        .iter()
        .copied()
        .step_by(step)
        .take(IDLE_SAMPLE)
        .collect();
    let sample_ok = load::echo_check(&sample, Duration::from_secs(10))?;
    Ok(Idle {
        held: held.streams.len(),
        answered,
        stopped: held.stopped,
        open_took: held.took,
        before_kib,
        after_kib,
        before_maps,
        after_maps,
        threads,
        sample_ok,
        sample_size: sample.len(),
    })
}

/// How many memory mappings process `pid` has.
fn mappings(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/maps");
    let maps = std::fs::read(&path).with_context(|| format!("read {path}"))?;
    Ok(maps.iter().filter(|&&b| b == b'\n').count())
}

/// A number from `/proc/<pid>/status` (`VmRSS` in KiB, `Threads`).
fn status_field(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Log lines without their timestamps, each distinct message once.
fn dedup(lines: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for line in lines {
        // "2026-01-01T00:00:00.000000Z  WARN target: message" → from WARN on.
        let message = line
            .find(" WARN ")
            .or_else(|| line.find(" ERROR "))
            .map_or(line.as_str(), |at| line[at..].trim());
        if !seen.iter().any(|s| s == message) && seen.len() < 5 {
            seen.push(message.to_string());
        }
    }
    seen
}

/// Raises this process's RLIMIT_NOFILE soft limit (and the hard one if
/// allowed) to `wanted` before any server starts, so that the bench and
/// the servers it starts (which inherit it) can hold the idle connections.
/// Returns a line for the report.
fn raise_fd_limit(wanted: u64) -> String {
    // SAFETY: getrlimit and setrlimit only read and write the local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return format!(
                "RLIMIT_NOFILE: unreadable ({})",
                std::io::Error::last_os_error()
            );
        }
        let before = limit.rlim_cur;
        if before >= wanted {
            return format!("RLIMIT_NOFILE: {before}, enough");
        }
        let mut raised = limit;
        raised.rlim_cur = wanted;
        raised.rlim_max = limit.rlim_max.max(wanted);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            // Not allowed past the hard limit: go as far as it.
            raised = limit;
            raised.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        format!(
            "RLIMIT_NOFILE of the bench (inherited by the servers): raised from {before} to {} (wanted {wanted})",
            limit.rlim_cur
        )
    }
}
