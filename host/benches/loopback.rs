//! Loopback benchmark: the `host` binary serving its built-in WASM plugins
//! (and native plugins, when built) against a plain native
//! thread-per-connection Rust server written here, all in the same run, on
//! 127.0.0.1 only. Every figure is printed with its ratio to that native
//! reference (reference = 1.00); nothing is asserted.
//!
//! ```text
//! cargo bench -p host --bench loopback
//! BENCH_SECS=1 BENCH_ONLY=pingpong,churn cargo bench -p host --bench loopback
//! ```
//!
//! Environment:
//! - `BENCH_SECS` (default 1): measured seconds per point and round.
//! - `BENCH_ROUNDS` (default 15, odd): rounds per point. Each round
//!   measures every target once, in turn, starting one target further on
//!   than the last; a row shows the round with the median figure and the
//!   spread (interquartile range, as a share of the median) of all. Many
//!   short rounds rather than a few long ones: on a shared VM throughput
//!   swings by 2x from one half second to the next, and short rounds
//!   taken in turn let such spells fall on every target alike.
//! - `BENCH_ONLY`: comma-separated workloads out of `pingpong`, `bulk`,
//!   `churn`, `http`, `tls`, `chat`, `store`, `guests`, `idle`, `scale`, `startup`
//!   (default: all).
//! - `BENCH_IDLE_CONNS` (default 10000): connections the `idle` workload
//!   opens, and the `guests` workload against the socketserver echo and
//!   the protocol-world guests.
//! - `BENCH_GUEST_HANDLER_IDLE` (default 500; 0 leaves them out): idle
//!   connections the `guests` workload holds against the handler-world
//!   Python and JavaScript echo (each holds a whole runtime: ~6 MiB for
//!   Python).
//! - `BENCH_SCALE_CONNS` (default 19000): concurrent connections of the
//!   `scale` workload (this process holds the client ends, under the
//!   open-file limit of 20,000 per process on the CI machine kind).
//! - `BENCH_CHAT_CLIENTS` (default 1000): clients in the `chat` room;
//!   `BENCH_CHAT_WINDOW` (default 32): lines the sender has in flight.
//! - `BENCH_HOST`: the `host` binary to measure (default: the one this
//!   bench was built with). `scripts/build-pgo.sh` points it at an
//!   instrumented build to record a profile.
//! - `BENCH_PGO` (default 1): with 0, leave out the rows of the
//!   profile-guided build (`target/pgo/host`, made by
//!   `scripts/build-pgo.sh`), which are otherwise added when it exists.
//! - `BENCH_BASELINE`: another `host` binary (e.g. the previous commit's
//!   build) that gets rows of its own, with its default flags, in the same
//!   rounds: an A/B run.
//! - `BENCH_PIN` (default 1): with 0, servers and load generators run
//!   wherever the scheduler puts them. By default every server process is
//!   pinned to CPU 0 and every load generator (this process's threads, wrk)
//!   to CPU 1: on 2-core VMs a wake-up across cores costs far more than one
//!   on the same core, so unpinned figures swing with where the scheduler
//!   happened to put the threads.
//!
//! Workloads (the tables, in the order they run):
//! - `pingpong` (1 and 50 connections), `bulk`, `churn`: echo, against
//!   the native reference echo ([`workloads`]).
//! - `http`: HTTP hello with keep-alive under wrk, against the native
//!   reference and nginx ([`workloads`]).
//! - `chat`: one room of 1,000 clients and one sender, deliveries per
//!   second and a check that no line is lost, against a native chat
//!   reference; the same room through the store's topics, in memory and
//!   on Redis, and the handler-world `handler-chat` ([`chat`]).
//! - `tls`: HTTPS hello (keep-alive, and a new TLS connection per request)
//!   against nginx terminating TLS with the same certificate, and the
//!   echo over TLS against plaintext ([`tls`]).
//! - `store`: increments from a plugin against `redis-benchmark` on the
//!   same Redis, and `counter` connections against echo churn ([`store`]).
//! - `guests`: the Python and JavaScript `proto-echo` guests, churn and
//!   idle connections, against the seeds' Python socketserver echo
//!   ([`guests`]).
//! - `idle`: idle echo connections held open, RSS and mappings per
//!   connection; `scale`: 19,000 concurrent `proto-echo` connections, the
//!   same figures ([`idle`]).
//! - `startup`: spawn to the first echoed connection ([`startup`]).
//!
//! Layout: [`targets`] starts and stops the servers under test (the host,
//! the references, nginx), [`reference`] is the native reference server
//! (echo, HTTP, chat), [`load`] the load generator, [`http`] runs wrk,
//! [`workloads`] puts the echo and HTTP workloads together and holds the
//! rounds ([`workloads::measure_all`]), [`tls`], [`chat`], [`store`], [`guests`],
//! [`idle`] and [`startup`] are one workload (or two) each, and [`report`] prints the
//! tables.

#[path = "loopback/chat.rs"]
mod chat;
#[path = "loopback/guests.rs"]
mod guests;
#[path = "loopback/http.rs"]
mod http;
#[path = "loopback/idle.rs"]
mod idle;
#[path = "loopback/load.rs"]
mod load;
#[path = "loopback/reference.rs"]
mod reference;
#[path = "loopback/report.rs"]
mod report;
#[path = "loopback/startup.rs"]
mod startup;
#[path = "loopback/store.rs"]
mod store;
#[path = "loopback/targets.rs"]
mod targets;
#[path = "loopback/tls.rs"]
mod tls;
#[path = "loopback/workloads.rs"]
mod workloads;

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The workloads, in the order they run.
const WORKLOADS: &[&str] = &[
    "pingpong", "bulk", "churn", "http", "tls", "chat", "store", "guests", "idle", "scale",
    "startup",
];

/// What this run does, from the environment.
pub struct Settings {
    /// Measured time per point.
    pub duration: Duration,
    /// How many times each point is measured (the median is reported).
    pub rounds: usize,
    /// Workloads to run.
    pub only: Vec<String>,
    /// Connections the idle workload opens.
    pub idle_conns: usize,
    /// Idle connections held against the handler-world guests.
    pub guest_handler_idle: usize,
    /// Concurrent connections of the scale workload.
    pub scale_conns: usize,
    /// Clients in the chat room.
    pub chat_clients: usize,
    /// Lines the chat sender has in flight.
    pub chat_window: usize,
    /// Where servers and load generators run.
    pub placement: targets::Placement,
    /// The host binaries under test.
    pub hosts: targets::HostBinaries,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let secs: u64 = env_number("BENCH_SECS", 1)?;
        if secs == 0 || secs > 600 {
            bail!("BENCH_SECS must be between 1 and 600, not {secs}");
        }
        let rounds: usize = env_number("BENCH_ROUNDS", 15)?;
        if rounds.is_multiple_of(2) || rounds > 51 {
            bail!(
                "BENCH_ROUNDS must be odd (a row is the median round) and at most 51, not {rounds}"
            );
        }
        let only = match std::env::var("BENCH_ONLY") {
            Ok(list) if !list.trim().is_empty() => {
                let only: Vec<String> = list.split(',').map(|w| w.trim().to_string()).collect();
                if let Some(unknown) = only.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
                    bail!(
                        "BENCH_ONLY: unknown workload {unknown:?} (known: {})",
                        WORKLOADS.join(", ")
                    );
                }
                only
            }
            _ => WORKLOADS.iter().map(|w| w.to_string()).collect(),
        };
        let idle_conns: usize = env_number("BENCH_IDLE_CONNS", 10_000)?;
        if idle_conns == 0 || idle_conns > 100_000 {
            bail!("BENCH_IDLE_CONNS must be between 1 and 100000, not {idle_conns}");
        }
        let guest_handler_idle: usize = env_number("BENCH_GUEST_HANDLER_IDLE", 500)?;
        if guest_handler_idle > 10_000 {
            bail!("BENCH_GUEST_HANDLER_IDLE must be at most 10000, not {guest_handler_idle}");
        }
        let scale_conns: usize = env_number("BENCH_SCALE_CONNS", 19_000)?;
        if scale_conns == 0 || scale_conns > 100_000 {
            bail!("BENCH_SCALE_CONNS must be between 1 and 100000, not {scale_conns}");
        }
        let chat_clients: usize = env_number("BENCH_CHAT_CLIENTS", 1000)?;
        if !(2..=10_000).contains(&chat_clients) {
            bail!("BENCH_CHAT_CLIENTS must be between 2 and 10000, not {chat_clients}");
        }
        let chat_window: usize = env_number("BENCH_CHAT_WINDOW", 32)?;
        if !(1..=100_000).contains(&chat_window) {
            bail!("BENCH_CHAT_WINDOW must be between 1 and 100000, not {chat_window}");
        }
        let pin: u8 = env_number("BENCH_PIN", 1)?;
        let pgo: u8 = env_number("BENCH_PGO", 1)?;
        Ok(Settings {
            duration: Duration::from_secs(secs),
            rounds,
            only,
            idle_conns,
            guest_handler_idle,
            scale_conns,
            chat_clients,
            chat_window,
            placement: targets::Placement::new(pin != 0),
            hosts: targets::HostBinaries::find(pgo != 0),
        })
    }

    /// Whether `workload` is to run.
    fn runs(&self, workload: &str) -> bool {
        self.only.iter().any(|w| w == workload)
    }
}

/// `name` parsed from the environment, or `default` when unset.
fn env_number<T>(name: &str, default: T) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<()> {
    // The reference server is this binary, run again in its own process.
    if let Some(kind) = reference::requested()? {
        return reference::serve(kind);
    }
    let settings = Settings::from_env()?;
    report::machine(&settings.placement);
    settings.placement.pin_self_to_clients();
    let plugins = targets::NativePlugins::find();

    let echo = ["pingpong", "bulk", "churn"]
        .iter()
        .any(|w| settings.runs(w));
    if echo {
        workloads::echo(&settings, &plugins);
    }
    if settings.runs("http") {
        workloads::http(&settings, &plugins);
    }
    if settings.runs("tls") {
        tls::tls(&settings);
    }
    if settings.runs("chat") {
        chat::chat(&settings);
    }
    if settings.runs("store") {
        store::store(&settings);
    }
    if settings.runs("guests") {
        guests::guests_workload(&settings);
    }
    if settings.runs("idle") {
        idle::idle(&settings, &plugins);
    }
    if settings.runs("scale") {
        idle::scale(&settings);
    }
    if settings.runs("startup") {
        startup::startup(&settings, &plugins);
    }
    Ok(())
}
