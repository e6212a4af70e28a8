//! The `store` workload: what the shared store (`--store`) costs, in two
//! tables.
//!
//! - **Increments from a plugin**: the `store_loop` bench plugin
//!   (`tests/plugins/store-loop`) makes N increments of one key, one
//!   store call each, on one connection, and answers when done; the
//!   figure is increments per second. Against Redis's own client doing the
//!   same on the same Redis (`redis-benchmark -t incr -c 1 -P 1`: one
//!   client, no pipelining), and with `--store memory`. Pinned, Redis runs
//!   on the client CPU and its callers (the host, `redis-benchmark`) on
//!   the server CPU, so both rows cross the same two cores. N is chosen per
//!   round from an untimed calibration run, so that a round takes about
//!   `BENCH_SECS`.
//! - **Connections**: the `counter` plugin (connect, read `visit N`, the
//!   server closes) with `--store memory` and on Redis, against the host's
//!   plain echo churn (connect, 64 B echo, close) in the same run.
//!
//! Redis is started on a free loopback port when `redis-server` is
//! installed (nothing kept on disk); without it the Redis rows are
//! skipped with a note.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Settings;
use crate::load;
use crate::report::Table;
use crate::targets::{Placement, Server, output_within, test_plugin, which};
use crate::workloads::{
    CHURN_CLIENTS, SPREAD, churn_extras, churn_with_cpu_using, measure_all, start_host,
};

/// Increments of the untimed calibration run that sizes a round.
const CALIBRATION: u64 = 2_000;
/// Longest one `redis-benchmark` run may take.
const BENCHMARK_LIMIT: Duration = Duration::from_secs(120);

/// The store workload.
pub fn store(settings: &Settings) {
    eprintln!("store");
    let redis = which("redis-server").map(|binary| Server::redis(&binary, &settings.placement));
    let mut notes = Vec::new();
    let redis = match redis {
        Some(Ok(redis)) => Some(redis),
        Some(Err(err)) => {
            notes.push(format!("Redis rows: skipped, {err:#}"));
            None
        }
        None => {
            notes.push("Redis rows: skipped, redis-server is not installed".to_string());
            None
        }
    };
    let url = redis.as_ref().map(|r| format!("redis://{}", r.addr));
    increments(settings, redis.as_ref(), url.as_deref(), &notes);
    connections(settings, url.as_deref(), &notes);
}

/// Something that makes increments: Redis's own client, or a host running
/// `store_loop`.
enum Incrementer {
    Benchmark {
        tool: PathBuf,
        redis: SocketAddr,
        placement: Placement,
    },
    Host(Server),
}

/// One round: increments made and how long they took.
struct Increments {
    count: u64,
    took: Duration,
}

impl Increments {
    fn per_sec(&self) -> f64 {
        self.count as f64 / self.took.as_secs_f64()
    }
}

impl Incrementer {
    /// `count` increments, timed.
    fn run(&self, count: u64) -> Result<Increments> {
        match self {
            Self::Benchmark {
                tool,
                redis,
                placement,
            } => benchmark(tool, *redis, placement, count),
            Self::Host(server) => plugin_loop(server.addr, count),
        }
    }

    /// A round of about `duration`, sized by a calibration run.
    fn round(&self, duration: Duration) -> Result<Increments> {
        let calibration = self.run(CALIBRATION)?;
        let count = (calibration.per_sec() * duration.as_secs_f64()).max(CALIBRATION as f64);
        self.run(count as u64)
    }
}

/// `redis-benchmark -t incr -c 1 -P 1 -n COUNT` against `redis`: its own
/// figure (requests per second, from `--csv`).
fn benchmark(
    tool: &PathBuf,
    redis: SocketAddr,
    placement: &Placement,
    count: u64,
) -> Result<Increments> {
    let mut command = Command::new(tool);
    placement.server(&mut command);
    command
        .args([
            "-h",
            &redis.ip().to_string(),
            "-p",
            &redis.port().to_string(),
        ])
        .args(["-t", "incr", "-c", "1", "-P", "1", "--csv"])
        .args(["-n", &count.to_string()]);
    let output = output_within(&mut command, BENCHMARK_LIMIT)?;
    let rps: f64 = output
        .lines()
        .find_map(|line| line.strip_prefix("\"INCR\",\""))
        .and_then(|rest| rest.split('"').next())
        .and_then(|rps| rps.parse().ok())
        .with_context(|| format!("no INCR figure in redis-benchmark's output:\n{output}"))?;
    Ok(Increments {
        count,
        took: Duration::from_secs_f64(count as f64 / rps),
    })
}

/// `count` increments by the `store_loop` plugin of the host at `addr`,
/// timed from the request to the answer.
fn plugin_loop(addr: SocketAddr, count: u64) -> Result<Increments> {
    let mut stream = load::connect(addr)?;
    stream
        .set_read_timeout(Some(BENCHMARK_LIMIT))
        .context("read timeout")?;
    let mut reader = BufReader::new(stream.try_clone().context("clone the stream")?);
    let started = Instant::now();
    stream
        .write_all(format!("{count}\n").as_bytes())
        .context("send the count")?;
    let mut answer = String::new();
    reader.read_line(&mut answer).context("read the answer")?;
    let took = started.elapsed();
    if !answer.starts_with("done ") {
        bail!("store_loop answered {answer:?}");
    }
    Ok(Increments { count, took })
}

fn increments(settings: &Settings, redis: Option<&Server>, url: Option<&str>, notes: &[String]) {
    let mut table = Table::new(
        "store increments from a plugin: one connection, one store call per increment",
        "increments/s, higher is better",
        &["per round", SPREAD],
    );
    let plugin = match test_plugin("store_loop.wasm") {
        Ok(plugin) => plugin,
        Err(why) => {
            table.note(format!("skipped: {why}"));
            table.print();
            return;
        }
    };
    let plugin = plugin.to_string_lossy();
    let host = |name: &str, store: &str| {
        let (name, server) = start_host(name, &["--plugin", &plugin, "--store", store], settings);
        (name, server.map(Incrementer::Host))
    };
    let mut targets = Vec::new();
    if let (Some(redis), Some(url)) = (redis, url) {
        match which("redis-benchmark") {
            Some(tool) => targets.push((
                "redis-benchmark -t incr -c 1 -P 1 (same Redis)".to_string(),
                Ok(Incrementer::Benchmark {
                    tool,
                    redis: redis.addr,
                    placement: settings.placement,
                }),
            )),
            None => table.note("redis-benchmark row: skipped, it is not installed"),
        }
        targets.push(host("host, store_loop, --store redis://", url));
    }
    targets.push(host("host, store_loop, --store memory", "memory"));
    measure_all(
        &mut table,
        &targets,
        settings.rounds,
        |target| target.round(settings.duration),
        Increments::per_sec,
        |table, name, round, spread| {
            table.row(name, round.per_sec(), vec![round.count.to_string(), spread]);
        },
    );
    for note in notes {
        table.note(note.clone());
    }
    table.print();
}

fn connections(settings: &Settings, url: Option<&str>, notes: &[String]) {
    let mut table = Table::new(
        &format!(
            "store connections: the counter plugin (connect, `visit N`, closed by the server) \
             against the host's echo churn; {CHURN_CLIENTS} client threads"
        ),
        "connections/s, higher is better",
        &["errors", "µs CPU/conn", "srv CPU", SPREAD],
    );
    let host = |name: &str, args: &[&str], exchange: load::Exchange| {
        let (name, server) = start_host(name, args, settings);
        (name, server.map(|server| (server, exchange)))
    };
    let mut targets = vec![host(
        "host, wasm echo churn (connect, 64 B echo, close)",
        &["--plugin", "echo"],
        load::echo_once,
    )];
    targets.push(host(
        "host, counter, --store memory",
        &["--plugin", "counter", "--store", "memory"],
        load::read_a_visit,
    ));
    if let Some(url) = url {
        targets.push(host(
            "host, counter, --store redis://",
            &["--plugin", "counter", "--store", url],
            load::read_a_visit,
        ));
    }
    let duration = settings.duration;
    measure_all(
        &mut table,
        &targets,
        settings.rounds,
        |(server, exchange)| churn_with_cpu_using(server, duration, *exchange),
        |(figure, _)| figure.rate,
        |table, name, (figure, cpu), spread| {
            table.row(name, figure.rate, churn_extras(&figure, cpu, spread));
        },
    );
    for note in notes {
        table.note(note.clone());
    }
    table.print();
}
