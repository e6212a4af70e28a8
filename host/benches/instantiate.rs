//! Per-connection plugin cost, measured in-process over Unix socket pairs:
//!
//! - instance creation (`Plugin::time_instantiation`): the store, the
//!   sandbox and a fresh instance from the pre-linked component (pooling
//!   allocator), before `setup` runs;
//! - a whole connection (`Plugin::serve`) whose client has already closed:
//!   the above plus `setup`, `handle` (one read that sees end of stream),
//!   `finish` and tearing the instance down — for the WASM echo and the
//!   native echo.
//!
//! `cargo bench -p host --bench instantiate` prints the median and p99.
//! Not a test: nothing is asserted.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use host::connection::{Connection, Stream};
use host::plugin::loader::Loader;
use host::plugin::source::PluginSource;
use host::plugin::wasm::{InstanceLimits, Sandbox, WasmRuntime};
use host::plugin::{Plugin, Serving};

const ROUNDS: usize = 20_000;
const WARMUP: usize = 1_000;

fn closed_connection() -> Result<Connection> {
    let (server, client) = UnixStream::pair().context("socketpair")?;
    drop(client);
    let stream = Stream::Unix(server);
    let peer = stream.peer_addr().context("peer address")?;
    Connection::blocking(stream, peer, None)
        .map_err(|unwrapped| unwrapped.error)
        .context("wrap socket")
}

/// Runs `once` WARMUP + ROUNDS times; the last ROUNDS timings, sorted.
fn sample(mut once: impl FnMut() -> Result<Duration>) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(ROUNDS);
    for round in 0..WARMUP + ROUNDS {
        let took = once()?;
        if round >= WARMUP {
            samples.push(took);
        }
    }
    samples.sort();
    Ok(samples)
}

/// A whole connection whose client already closed.
fn measure(plugin: &dyn Plugin) -> Result<Vec<Duration>> {
    let Serving::PerConnection(plugin) = plugin.serving() else {
        anyhow::bail!("the plugin does not serve a connection per instance");
    };
    sample(|| {
        let Serving::PerConnection(plugin) = plugin.serving() else {
            anyhow::bail!("the plugin does not serve each connection in an instance");
        };
        let conn = closed_connection()?;
        let started = Instant::now();
        let (_conn, outcome) = plugin.serve(conn);
        let took = started.elapsed();
        anyhow::ensure!(outcome.label() == "ok", "serve failed: {outcome:?}");
        Ok(took)
    })
}

/// Instance creation alone.
fn measure_instantiation(plugin: &dyn Plugin) -> Result<Vec<Duration>> {
    sample(|| {
        plugin
            .time_instantiation()?
            .context("the plugin creates no instance per connection")
    })
}

fn report(name: &str, samples: &[Duration], reference: Option<Duration>) -> Duration {
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    let ratio = reference.map_or(String::new(), |r| {
        format!("  ({:.1}x native)", median.as_secs_f64() / r.as_secs_f64())
    });
    println!(
        "{name:<28} median {:>8.2} µs   p99 {:>8.2} µs{ratio}",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    median
}

fn main() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let limits = InstanceLimits {
        max_instances: 64,
        ..InstanceLimits::default()
    };
    let loader = Loader::new(WasmRuntime::new(limits, None, Sandbox::default())?, None);
    let native_path = root.join("target/plugins/libecho.so");
    let native = PluginSource::File(native_path).read()?;
    let (native, _) = loader.load(&native, "libecho.so")?;
    let wasm = PluginSource::Builtin("echo").read()?;
    let (wasm, _) = loader.load(&wasm, "echo")?;

    println!("instance creation ({ROUNDS} instances; store, sandbox, instance):");
    report(
        "wasm echo (echo.wasm)",
        &measure_instantiation(wasm.as_ref())?,
        None,
    );
    println!();
    println!("per-connection plugin cost ({ROUNDS} connections, client already closed):");
    let reference = report("native echo (libecho.so)", &measure(native.as_ref())?, None);
    report(
        "wasm echo (echo.wasm)",
        &measure(wasm.as_ref())?,
        Some(reference),
    );
    Ok(())
}
