//! The `startup` workload: from spawning a server process to the first
//! connection it echoes, against the native reference (a process start
//! and a bind), the host with the WASM echo whose compiled form is in the
//! on-disk cache (what every restart after the first sees), the same with
//! `--no-cache` (it compiles at every start), and the host with the native
//! echo. Each start is a fresh process; the clock stops when the echo of
//! one byte arrives, so it covers loading the plugin, binding, accepting
//! and the first instance.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Settings;
use crate::load;
use crate::reference::Kind;
use crate::report::Table;
use crate::targets::{NativePlugins, Server};
use crate::workloads::{SPREAD, measure_all, reference_row};

/// Longest the first echo may take once the server listens.
const ECHO_LIMIT: Duration = Duration::from_secs(10);

/// How one target's server is started.
enum Launch {
    /// The native reference echo server.
    Reference,
    /// The host binary with these arguments after `run`.
    Host(Vec<String>),
}

/// A private compile cache for the cached target, removed when dropped.
struct CacheDir(PathBuf);

impl CacheDir {
    fn create() -> Result<CacheDir> {
        let dir = std::env::temp_dir().join(format!("plughost-bench-cache-{}", std::process::id()));
        // A leftover of an earlier run with the same pid would make the
        // first start a hit already; start empty.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(CacheDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Start to first echoed connection, per target.
pub fn startup(settings: &Settings, plugins: &NativePlugins) {
    eprintln!("start-up");
    let mut table = Table::new(
        "start-up: spawn the server, wait until it listens, connect, echo one byte",
        "ms from spawn to the echo, lower is better",
        &[SPREAD],
    );
    let cache = CacheDir::create();
    let mut targets: Vec<(String, Result<Launch>)> =
        vec![(reference_row(Kind::Echo), Ok(Launch::Reference))];
    let cached = match &cache {
        Ok(dir) => {
            let mut args = strings(&["--plugin", "echo", "--cache-dir"]);
            args.push(dir.path().to_string_lossy().into_owned());
            let launch = Launch::Host(args);
            // The first start compiles and fills the cache; it is not timed.
            first_echo(&launch, settings)
                .map(|_| launch)
                .context("fill the compile cache")
        }
        Err(err) => Err(anyhow::anyhow!("{err:#}")),
    };
    targets.push(("host, wasm echo, cached compile".to_string(), cached));
    targets.push((
        "host, wasm echo, --no-cache".to_string(),
        Ok(Launch::Host(strings(&["--plugin", "echo", "--no-cache"]))),
    ));
    match &plugins.echo {
        Some(path) => targets.push((
            "host, native echo".to_string(),
            Ok(Launch::Host(vec![
                "--plugin".to_string(),
                path.to_string_lossy().into_owned(),
            ])),
        )),
        None => table
            .note("native plugin: not built (no target/plugins/libecho_native.so or libecho.so)"),
    }
    measure_all(
        &mut table,
        &targets,
        settings.rounds,
        |launch| first_echo(launch, settings),
        |took| took.as_secs_f64(),
        |table, name, took, spread| {
            table.row(name, took.as_secs_f64() * 1000.0, vec![spread]);
        },
    );
    table.print();
}

/// Starts a fresh server as `launch` says and returns how long it took
/// from the spawn to the echo of one byte on a new connection; the server
/// is stopped afterwards, outside the measured time.
fn first_echo(launch: &Launch, settings: &Settings) -> Result<Duration> {
    let started = Instant::now();
    let server = match launch {
        Launch::Reference => Server::reference(Kind::Echo, &settings.placement)?,
        Launch::Host(args) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::host("start-up", &settings.hosts.main, &args, &settings.placement)?
        }
    };
    let stream = load::connect(server.addr)?;
    if load::echo_check(&[&stream], ECHO_LIMIT)? != 1 {
        bail!("no echo within {ECHO_LIMIT:?}");
    }
    let took = started.elapsed();
    drop(stream);
    drop(server);
    Ok(took)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}
