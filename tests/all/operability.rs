//! Operability: JSON logs, the default connection cap (reported by the
//! admin listener's `/status`), the accept loop's scheduling class, the
//! compile cache's size cap, and `--perf-map` for profiling.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::admin::{admin_addr, status};
use crate::support::checks::check_echo;
use crate::support::{Host, Mode, SOON, example_plugin, round_trip, run_host, temp_dir, utf8};

#[test]
fn json_logs_are_one_object_per_line() {
    let host = Host::builder()
        .global_args(&["--log-format", "json"])
        .plugin("echo")
        .mode(Mode::Threads)
        .start();
    let mut stream = host.connect();
    assert_eq!(round_trip(&mut stream, b"x"), b"x");
    drop(stream);
    host.expect_log("connection closed", SOON);
    for line in host.logs().lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["message"].is_string(),
            "{line}"
        );
    }
    assert!(host.logs().contains("\"listening on 127.0.0.1:"));
}

#[test]
fn the_default_connection_cap_follows_how_the_plugin_is_served() {
    // On event loops a connection costs 6 memory mappings, on a thread 10;
    // a native plugin keeps a thread each even with --event-loops.
    let map_count: usize = fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("read vm.max_map_count")
        .trim()
        .parse()
        .expect("a numeric vm.max_map_count");
    let cap = |per_connection: usize| (map_count - 4096) / per_connection;
    let native = example_plugin("libecho.so");
    let cases = [("echo", 6), (utf8(&native), 10)];
    for (plugin, per_connection) in cases {
        let host = Host::builder()
            .plugin(plugin)
            .mode(Mode::EventLoop)
            .args(&["--admin", "127.0.0.1:0"])
            .start();
        let status = status(admin_addr(&host));
        assert_eq!(
            status["config"]["listeners"][0]["max_connections"],
            cap(per_connection).min(10_000),
            "{plugin}: {status}"
        );
    }
}

#[test]
fn the_accept_loop_does_not_preempt_the_threads_serving_connections() {
    // SCHED_BATCH is policy 3 in /proc/<pid>/task/<tid>/stat: a new
    // connection waits for the serving thread's turn to end. The thread
    // serving a connection (started by the accept loop, whose class it
    // inherits) is back in the normal class, 0.
    let host = Host::serving("echo", Mode::Threads);
    let mut open = host.connect();
    assert_eq!(round_trip(&mut open, b"hi"), b"hi");
    let mut seen = Vec::new();
    for task in fs::read_dir(format!("/proc/{}/task", host.pid())).expect("list the threads") {
        let task = task.expect("a thread's entry").path();
        let name = fs::read_to_string(task.join("comm")).expect("a thread's name");
        let stat = fs::read_to_string(task.join("stat")).expect("a thread's stat");
        // Fields after the parenthesised name, which may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat has a (name)")
            .1
            .split_whitespace()
            .collect();
        seen.push((name.trim().to_string(), fields[38].to_string()));
    }
    let policy_of = |prefix: &str| {
        seen.iter()
            .find(|(name, _)| name.starts_with(prefix))
            .map(|(_, policy)| policy.as_str())
    };
    assert_eq!(policy_of("listener"), Some("3"), "{seen:?}");
    assert_eq!(policy_of("conn"), Some("0"), "{seen:?}");
}

/// The compiled plugins in a cache directory, by file name, with sizes.
fn cache_entries(dir: &Path) -> Vec<(String, u64)> {
    let mut entries: Vec<(String, u64)> = fs::read_dir(dir)
        .expect("list the cache")
        .map(|entry| {
            let entry = entry.expect("a cache entry");
            let name = entry.file_name().into_string().expect("a UTF-8 entry name");
            (name, entry.metadata().expect("the entry's metadata").len())
        })
        .collect();
    entries.sort();
    entries
}

/// `host check` of a built-in plugin with a given cache; the file name of
/// the cache entry it used.
fn check_cached(plugin: &str, cache: &Path, max_size: &str) -> String {
    let out = run_host(&[
        "check",
        plugin,
        "--cache-dir",
        utf8(cache),
        "--cache-max-size",
        max_size,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("version:"))
        .expect("check prints the version");
    let hash = version
        .trim()
        .rsplit('@')
        .next()
        .expect("version is name@hash")
        .to_string();
    // Modification times are what "recently used" goes by: the next step
    // must be later than every entry, by the file system's own clock.
    wait_for_a_later_mtime(cache);
    hash
}

/// Waits until a file written now (beside `cache`, on the same file
/// system) gets a later modification time than every entry in `cache`.
fn wait_for_a_later_mtime(cache: &Path) {
    let mtime = |path: &Path| {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .expect("a modification time")
    };
    let newest = fs::read_dir(cache)
        .expect("list the cache")
        .map(|entry| mtime(&entry.expect("a cache entry").path()))
        .max();
    let Some(newest) = newest else { return };
    let probe = cache.with_extension("mtime-probe");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        fs::write(&probe, b"").expect("write the probe");
        if mtime(&probe) > newest {
            fs::remove_file(&probe).expect("remove the probe");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the file system's clock did not advance"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_compile_cache_stays_under_its_cap_dropping_the_least_recently_used() {
    let plugins = ["echo", "bot10086", "http-hello"];
    // Each plugin's compiled size, from a cache without a tight cap.
    let sizes_dir = temp_dir("cache-sizes");
    let hashes: Vec<String> = plugins
        .iter()
        .map(|plugin| check_cached(plugin, &sizes_dir, "1GiB"))
        .collect();
    let size_of = |hash: &str| {
        cache_entries(&sizes_dir)
            .into_iter()
            .find(|(name, _)| name.starts_with(hash))
            .map(|(_, size)| size)
            .expect("the plugin's entry in the cache")
    };
    let [echo, bot, http] = [0, 1, 2].map(|i| size_of(&hashes[i]));
    // Room for echo and either other plugin, not for all three.
    let cap = (echo + bot.max(http)).to_string();

    let cache = temp_dir("cache-cap");
    check_cached("echo", &cache, &cap);
    check_cached("bot10086", &cache, &cap);
    check_cached("echo", &cache, &cap); // a hit: echo is now the most recent
    check_cached("http-hello", &cache, &cap);
    let kept: Vec<String> = cache_entries(&cache)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter().any(|name| name.starts_with(&hashes[0])),
        "echo kept: {kept:?}"
    );
    assert!(
        kept.iter().any(|name| name.starts_with(&hashes[2])),
        "http kept: {kept:?}"
    );

    // A plugin larger than the whole cap is still cached, alone.
    check_cached("bot10086", &cache, "1");
    let kept = cache_entries(&cache);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].0.starts_with(&hashes[1]), "{kept:?}");
}

/// `--perf-map` writes wasmtime's perf map for the host's process, naming
/// the plugin's compiled functions for `perf report`; without it no map is
/// written.
#[test]
fn perf_map_names_the_plugins_compiled_functions_only_when_asked() {
    let map_of = |host: &Host| PathBuf::from(format!("/tmp/perf-{}.map", host.pid()));

    let plain = Host::serving("echo", Mode::Threads);
    check_echo(&plain);
    let plain_map = map_of(&plain);
    assert!(
        !plain_map.exists(),
        "{} written unasked",
        plain_map.display()
    );

    let profiled = Host::builder()
        .plugin("echo")
        .mode(Mode::Threads)
        .args(&["--perf-map"])
        .start();
    check_echo(&profiled);
    let map = map_of(&profiled);
    let text = fs::read_to_string(&map).unwrap_or_default();
    let _ = fs::remove_file(&map);
    // Each line: start address (0x…), length (hex), name.
    let plugin_functions = text
        .lines()
        .filter(|line| {
            let mut fields = line.splitn(3, ' ');
            let hex = |f: Option<&str>| {
                f.is_some_and(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).is_ok())
            };
            hex(fields.next())
                && hex(fields.next())
                && fields.next().is_some_and(|n| n.starts_with("wasm["))
        })
        .count();
    assert!(
        plugin_functions > 0,
        "no plugin function in {}:\n{text}",
        map.display()
    );
}

#[test]
fn healthz_is_live_and_readyz_follows_listening_and_draining() {
    use crate::support::admin::http_get;
    let mut host = Host::builder()
        .plugin("echo")
        .mode(Mode::EventLoop)
        .args(&["--admin", "127.0.0.1:0", "--grace", "60s"])
        .start();
    let admin = admin_addr(&host);
    assert!(http_get(admin, "/healthz").starts_with("HTTP/1.1 200"));
    // Ready once the listener accepts (its `listening on` line is out).
    let deadline = Instant::now() + SOON;
    while !http_get(admin, "/readyz").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "never ready");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(http_get(admin, "/metrics").contains("plughost_listener_ready{listener="));
    // Draining with a connection open: alive, but not ready.
    let mut open = host.connect();
    assert_eq!(round_trip(&mut open, b"hi"), b"hi");
    host.terminate();
    host.expect_log("shutting down", SOON);
    let readyz = http_get(admin, "/readyz");
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(readyz.contains("not ready: 127.0.0.1:"), "{readyz}");
    assert!(http_get(admin, "/healthz").starts_with("HTTP/1.1 200"));
    drop(open);
    host.wait_exit(SOON).expect("exits once drained");
}
