//! Connections held open: the `idle` workload (up to `BENCH_IDLE_CONNS`
//! idle echo connections against each kind of server) and the `scale`
//! workload (`BENCH_SCALE_CONNS`, default 19,000, `proto-echo`
//! connections: as many as one process's open-file limit of 20,000 lets
//! this bench hold). Each server is started fresh and warmed with one
//! connection (which also starts a protocol-world plugin's instance);
//! then the connections are opened one after the other, each echoes one
//! byte, and the server's RSS (`VmRSS`), proportional set size (`Pss`,
//! from `smaps_rollup`) and memory mappings are read before and while all
//! are held. The figure is the RSS growth per connection answered. RSS
//! counts a page once for every place it is mapped, so a copy-on-write
//! memory image that many instances map counts many times over; Pss
//! counts each page once (shared pages split between the processes that
//! map them), which is what the connections really cost.

use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Settings;
use crate::load;
use crate::reference::Kind;
use crate::report::Table;
use crate::targets::{NativePlugins, Server};
use crate::workloads::{Target, start_host, start_reference};

/// Longest the idle workload spends opening connections, per server.
const IDLE_OPEN_LIMIT: Duration = Duration::from_secs(180);
/// Longest it waits for the echoes of all idle connections.
const IDLE_ECHO_LIMIT: Duration = Duration::from_secs(30);
/// Idle connections sampled for an echo after the RSS reading.
const IDLE_SAMPLE: usize = 100;
/// The scale workload's target: host RSS per connection, KiB.
const SCALE_TARGET_KIB: f64 = 8.0;

/// A held-connections table with the usual columns.
pub fn held_table(title: &str) -> Table {
    Table::new(
        title,
        "RSS growth per answered connection in KiB, lower is better",
        &[
            "held",
            "answered",
            "RSS MiB",
            "held MiB",
            "growth MiB",
            "Pss KiB/conn",
            "threads",
            "maps/conn",
            "sample",
        ],
    )
}

/// The note saying what `answered` and `sample` mean.
pub fn held_note() -> String {
    format!(
        "answered = echoed one byte within {}s; sample = {IDLE_SAMPLE} of them echo again after \
         the RSS reading; RSS MiB = after the warm-up connection (with a protocol-world \
         plugin's instance started), held MiB = with all held, growth = the difference; Pss KiB/conn = the \
         growth of the proportional set size per answered connection (each page once, \
         however many instances map it)",
        IDLE_ECHO_LIMIT.as_secs()
    )
}

/// Starts each server in turn (fresh, so that its RSS is this workload's
/// only), holds `count` connections against it and adds its row to
/// `table`; returns each target's figures (`None` where it failed).
pub fn hold_each(
    table: &mut Table,
    starts: Vec<Box<dyn Fn() -> Target + '_>>,
    count: usize,
) -> Vec<(String, Option<Idle>)> {
    let mut measured_all = Vec::new();
    for start in starts {
        let (name, server) = start();
        eprintln!("    {name}: holding {count} connections");
        let measured = server.and_then(|server| {
            let figures = hold_idle(&server, count);
            for warning in dedup(server.warnings()) {
                table.note(format!("{name} logged: {warning}"));
            }
            figures
        });
        match measured {
            Ok(idle) => {
                add_row(table, &name, &idle);
                measured_all.push((name, Some(idle)));
            }
            Err(err) => {
                table.failed(&name, &err);
                measured_all.push((name, None));
            }
        }
    }
    measured_all
}

fn add_row(table: &mut Table, name: &str, idle: &Idle) {
    if let Some(why) = &idle.stopped {
        table.note(format!("{name}: stopped opening at {}: {why}", idle.held));
    }
    // Connections left in the backlog (past the host's cap) cost the
    // server nothing: divide by those it serves.
    table.row(
        name,
        idle.kib_per_connection(),
        vec![
            idle.held.to_string(),
            idle.answered.to_string(),
            format!("{:.1}", idle.before_kib as f64 / 1024.0),
            format!("{:.1}", idle.after_kib as f64 / 1024.0),
            format!("{:.1}", idle.growth_mib()),
            format!("{:.1}", idle.pss_kib_per_connection()),
            idle.threads.to_string(),
            format!("{:.2}", idle.maps_per_connection()),
            format!("{}/{}", idle.sample_ok, idle.sample_size),
        ],
    );
    table.note(format!(
        "{name}: opened {} connections in {:.1} s",
        idle.held,
        idle.open_took.as_secs_f64()
    ));
}

/// Many idle connections: RSS, and whether they are all served.
pub fn idle(settings: &Settings, plugins: &NativePlugins) {
    let count = settings.idle_conns;
    let mut table = held_table(&format!("idle connections: up to {count} opened and held"));
    table.note(raise_fd_limit(count as u64 + 1024));
    table.note(format!(
        "host: default --max-connections here is {} on threads, {} on event loops (vm.max_map_count {})",
        host::capacity::default_max_connections(false, 0),
        host::capacity::default_max_connections(true, 0),
        host::sys::limits::max_map_count().map_or("unknown".to_string(), |m| m.to_string()),
    ));
    table.note(held_note());
    eprintln!("idle connections");
    let mut starts: Vec<Box<dyn Fn() -> Target + '_>> = vec![
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
        Box::new(|| {
            start_host(
                "host, wasm proto-echo (protocol world)",
                &["--plugin", "proto-echo"],
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
    hold_each(&mut table, starts, count);
    table.print();
}

/// `BENCH_SCALE_CONNS` concurrent `proto-echo` connections against one
/// host process, all echoing at the end: RSS and mappings per connection.
pub fn scale(settings: &Settings) {
    let count = settings.scale_conns;
    let mut table = held_table(&format!(
        "scale: {count} concurrent proto-echo connections, each echoing one byte once all are open"
    ));
    table.hide_ratio();
    table.baseline(&format!("{SCALE_TARGET_KIB:.0} KiB"), SCALE_TARGET_KIB);
    table.note(raise_fd_limit(count as u64 + 1024));
    table.note(format!(
        "vm.max_map_count {} (not changed); the host's default cap for a protocol-world listener is \
         what its open-file limit leaves ({} here)",
        host::sys::limits::max_map_count().map_or("unknown".to_string(), |m| m.to_string()),
        host::capacity::shared_connection_cap(None),
    ));
    table.note(held_note());
    table.note(format!(
        "vs {SCALE_TARGET_KIB:.0} KiB: the figure over the target of {SCALE_TARGET_KIB:.0} KiB per \
         connection (at most 1.00 meets it)"
    ));
    eprintln!("scale: {count} connections");
    let starts: Vec<Box<dyn Fn() -> Target + '_>> = vec![
        Box::new(|| {
            start_host(
                "host, wasm proto-echo (1 instance)",
                &["--plugin", "proto-echo"],
                settings,
            )
        }),
        Box::new(|| {
            start_host(
                "host, wasm proto-echo, --instances 2",
                &["--plugin", "proto-echo", "--instances", "2"],
                settings,
            )
        }),
    ];
    hold_each(&mut table, starts, count);
    table.print();
}

/// What holding idle connections against one server showed.
pub struct Idle {
    held: usize,
    answered: usize,
    stopped: Option<String>,
    open_took: std::time::Duration,
    before_kib: u64,
    after_kib: u64,
    /// Proportional set size before and while held, KiB.
    before_pss_kib: u64,
    after_pss_kib: u64,
    /// Memory mappings (`/proc/<pid>/maps` lines) before and while held:
    /// what `vm.max_map_count` bounds.
    before_maps: usize,
    after_maps: usize,
    threads: u64,
    sample_ok: usize,
    sample_size: usize,
}

impl Idle {
    /// RSS growth per answered connection, KiB.
    pub fn kib_per_connection(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.answered.max(1) as f64
    }

    /// Pss growth per answered connection, KiB.
    fn pss_kib_per_connection(&self) -> f64 {
        self.after_pss_kib.saturating_sub(self.before_pss_kib) as f64 / self.answered.max(1) as f64
    }

    /// RSS growth while all were held, MiB.
    pub fn growth_mib(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / 1024.0
    }

    fn maps_per_connection(&self) -> f64 {
        self.after_maps.saturating_sub(self.before_maps) as f64 / self.answered.max(1) as f64
    }

    /// Whether every connection opened was answered, and answered again.
    pub fn all_answered(&self, wanted: usize) -> bool {
        self.held == wanted && self.answered == wanted && self.sample_ok == self.sample_size
    }
}

fn hold_idle(server: &Server, count: usize) -> Result<Idle> {
    // One connection first, so the "before" figure includes whatever the
    // first connection sets up once.
    let warm = load::connect(server.addr)?;
    load::echo_check(&[&warm], Duration::from_secs(5))?;
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before_kib = status_field(server.pid(), "VmRSS")?;
    let before_pss_kib = pss_kib(server.pid())?;
    let before_maps = mappings(server.pid())?;
    let held = load::open_idle(server.addr, count, IDLE_OPEN_LIMIT);
    let all: Vec<&TcpStream> = held.streams.iter().collect();
    let answered = load::echo_check(&all, IDLE_ECHO_LIMIT)?;
    std::thread::sleep(Duration::from_millis(500));
    let after_kib = status_field(server.pid(), "VmRSS")?;
    let after_pss_kib = pss_kib(server.pid())?;
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
        before_pss_kib,
        after_pss_kib,
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
    proc_field(&format!("/proc/{pid}/status"), field)
}

/// Process `pid`'s proportional set size, KiB.
fn pss_kib(pid: u32) -> Result<u64> {
    proc_field(&format!("/proc/{pid}/smaps_rollup"), "Pss")
}

/// The first number after `field:` in a `/proc` file of such lines.
fn proc_field(path: &str, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Log lines without their timestamps, each distinct message once.
pub fn dedup(lines: Vec<String>) -> Vec<String> {
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
pub fn raise_fd_limit(wanted: u64) -> String {
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
