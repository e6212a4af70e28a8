//! The workloads of the echo and HTTP servers: which servers each one
//! runs against, in what order, and what goes in its table; and
//! [`measure_all`], the rounds every measured workload uses.
//!
//! - `pingpong`, `bulk`, `churn`: the native reference echo, the host with
//!   the built-in WASM echo (with its default CPU deadline, and with
//!   `--call-timeout 0`, i.e. without epoch interruption, and on one event
//!   loop), the built-in `proto-echo` (the protocol world: one instance
//!   for every connection, on one reactor thread; and with `--instances
//!   2`), the host with the native echo when it is built, and the seeds'
//!   Python `socketserver.ThreadingTCPServer` echo when `python3` is
//!   installed. The servers stay up for all three.
//! - `http`: wrk against the reference HTTP server, the host with the
//!   built-in `http-hello` (WASM by default, on threads and on one event
//!   loop, and native when built), `proto-http-hello` (the protocol
//!   world) and nginx.
//! - Ping-pong also shows the server's CPU time per round trip (warm-up
//!   included) and its share of a CPU during the point, from
//!   `/proc/PID/stat` (10 ms ticks): on a machine shared with other work
//!   a one-thread server (an event loop, a reactor) gets one thread's
//!   share of the CPU against a thread per connection's many, and these
//!   columns tell that apart from what a round trip costs it.
//! - Churn shows the same two per connection.
//! - In both, the other builds under test with their default flags: the
//!   profile-guided build (`target/pgo/host`, from `scripts/build-pgo.sh`)
//!   when it exists, and `BENCH_BASELINE` when set.
//! - `idle` and `scale` (in [`crate::idle`]), `chat` ([`crate::chat`]),
//!   `guests` ([`crate::guests`]) and `startup` ([`crate::startup`]) have
//!   modules of their own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::Settings;
use crate::http::{self, Nginx, WRK_CONNECTIONS};
use crate::load::{self, CHUNK, MESSAGE};
use crate::reference::Kind;
use crate::report::{Table, micros};
use crate::targets::{NativePlugins, Server, which};

/// The Python comparison target's row.
pub const PYTHON_ROW: &str = "python ThreadingTCPServer echo";
/// The column with the spread of a target's rounds.
pub const SPREAD: &str = "IQR";
/// Client threads of the churn workload.
pub const CHURN_CLIENTS: usize = 4;

/// A target: its name, and the server or why it did not start.
pub type Target = (String, Result<Server>);

/// nginx's row in the HTTP tables.
pub const NGINX_ROW: &str = "nginx (master + 2 workers)";

/// Each target's name and address (or why it did not start), to measure.
pub fn addresses(targets: &[Target]) -> Vec<(String, Result<SocketAddr>)> {
    targets
        .iter()
        .map(|(name, server)| {
            let addr = server.as_ref().map(|s| s.addr);
            (name.clone(), addr.map_err(|e| anyhow::anyhow!("{e:#}")))
        })
        .collect()
}

/// The host binary under test, run with `args`.
pub fn start_host(name: &str, args: &[&str], settings: &Settings) -> Target {
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

pub fn start_reference(kind: Kind, settings: &Settings) -> Target {
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
        start_host(
            "host, wasm proto-echo (protocol world)",
            &["--plugin", "proto-echo"],
            settings,
        ),
        start_host(
            "host, wasm proto-echo, --instances 2",
            &["--plugin", "proto-echo", "--instances", "2"],
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

/// A churn point with the server's CPU time, and how long the point took
/// (wall clock).
pub fn churn_with_cpu(server: &Server, duration: Duration) -> Result<(load::Churn, CpuUse)> {
    churn_with_cpu_using(server, duration, load::echo_once)
}

/// The same, each connection doing `exchange` instead of the echo.
pub fn churn_with_cpu_using(
    server: &Server,
    duration: Duration,
    exchange: load::Exchange,
) -> Result<(load::Churn, CpuUse)> {
    let (cpu, started) = (server.cpu_time()?, Instant::now());
    let figure = load::churn_with(server.addr, CHURN_CLIENTS, duration, exchange)?;
    let cpu = server.cpu_time()?.saturating_sub(cpu);
    Ok((figure, (cpu, started.elapsed())))
}

/// A server's CPU time over a point, and the point's wall-clock time.
pub type CpuUse = (Duration, Duration);

/// A churn row's extra columns: errors, the server's CPU time per
/// connection and its share of a CPU, and the spread.
pub fn churn_extras(figure: &load::Churn, (cpu, took): CpuUse, spread: String) -> Vec<String> {
    let connections = figure.rate * figure.seconds;
    vec![
        figure.errors.to_string(),
        format!("{:.1}", cpu.as_secs_f64() * 1e6 / connections.max(1.0)),
        format!("{:.0}%", cpu.as_secs_f64() / took.as_secs_f64() * 100.0),
        spread,
    ]
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
                &["p50 µs", "p99 µs", "µs CPU/rt", "srv CPU", SPREAD],
            );
            measure_all(
                &mut table,
                &targets,
                rounds,
                |server| {
                    let (cpu, started) = (server.cpu_time()?, Instant::now());
                    let figure = load::pingpong(server.addr, conns, duration)?;
                    let cpu = server.cpu_time()?.saturating_sub(cpu);
                    Ok((figure, cpu, started.elapsed()))
                },
                |(figure, _, _)| figure.rate,
                |table, name, (figure, cpu, took), spread| {
                    table.row(
                        name,
                        figure.rate,
                        vec![
                            micros(figure.p50_us),
                            micros(figure.p99_us),
                            format!(
                                "{:.2}",
                                cpu.as_secs_f64() * 1e6 / figure.all_rounds.max(1) as f64
                            ),
                            format!("{:.0}%", cpu.as_secs_f64() / took.as_secs_f64() * 100.0),
                            spread,
                        ],
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
            &["errors", "µs CPU/conn", "srv CPU", SPREAD],
        );
        measure_all(
            &mut table,
            &targets,
            rounds,
            |server| churn_with_cpu(server, duration),
            |(figure, _)| figure.rate,
            |table, name, (figure, cpu), spread| {
                table.row(name, figure.rate, churn_extras(&figure, cpu, spread));
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
    targets.extend([
        start_host(
            "host, wasm http-hello, --event-loops 1",
            &["--plugin", "http-hello", "--event-loops", "1"],
            settings,
        ),
        start_host(
            "host, wasm proto-http-hello (protocol world)",
            &["--plugin", "proto-http-hello"],
            settings,
        ),
        start_host(
            "host, wasm proto-http-hello, --instances 2",
            &["--plugin", "proto-http-hello", "--instances", "2"],
            settings,
        ),
    ]);
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
    let nginx_name = NGINX_ROW;
    let mut servers = addresses(&targets);
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
