//! Operability: configuration files (many listeners, per-plugin config
//! values, grants, errors with file/line/key), plugins built against the
//! previous contract, the admin listener's metrics and status, JSON logs,
//! and SO_REUSEPORT.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::behaviour::{GREETING, check_echo};
use crate::support::{
    Host, connect, example_plugin, on_one_loop, round_trip, run_host, temp_dir, test_plugin,
};

fn config_file(label: &str, text: &str) -> std::path::PathBuf {
    let path = temp_dir(label).join("host.toml");
    fs::write(&path, text).unwrap();
    path
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The admin listener's address, from the host's log.
fn admin_addr(host: &Host) -> SocketAddr {
    assert!(host.wait_for_log("admin listening on", Duration::from_secs(5)));
    host.logs()
        .lines()
        .find_map(|l| {
            l.split("http://")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("admin address in the log")
}

/// `/status` as JSON.
fn status(admin: SocketAddr) -> serde_json::Value {
    let response = http_get(admin, "/status");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).expect("status is JSON")
}

#[test]
fn one_process_serves_several_listeners_with_their_own_plugins() {
    let config = config_file(
        "two-listeners",
        "admin = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\n\
         [[listener]]\nname = \"bot\"\naddress = \"[::1]:0\"\nplugin = \"bot10086\"\n",
    );
    let config = config.to_str().unwrap();
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: serving the bot on 127.0.0.1 instead");
        return;
    }
    let host = Host::start(&["run", "--config", config]);
    let echo = host.listener_addr("echo");
    let bot = host.listener_addr("bot");
    assert!(bot.is_ipv6());
    let mut greeting = String::new();
    BufReader::new(connect(bot))
        .read_line(&mut greeting)
        .unwrap();
    assert_eq!(greeting.trim_end(), GREETING);
    let mut stream = connect(echo);
    stream.write_all(b"ping").unwrap();
    let mut reply = [0; 4];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ping");

    // The admin listener reports both, with the traffic just sent.
    assert!(host.wait_for_log("admin listening on", Duration::from_secs(5)));
    let admin = admin_addr(&host);
    drop(stream);
    let metrics = wait_for_metric(
        admin,
        "plughost_connections_closed_total{listener=\"echo\",outcome=\"ok\"} 1",
    );
    assert!(
        metrics.contains("plughost_connections_accepted_total{listener=\"bot\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plughost_received_bytes_total{listener=\"echo\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plughost_plugin_info{listener=\"echo\",version=\"echo@"),
        "{metrics}"
    );
    let status = status(admin);
    assert_eq!(status["listeners"].as_array().unwrap().len(), 2, "{status}");
    assert!(status["uptime_seconds"].as_f64().unwrap() > 0.0);
}

fn wait_for_metric(admin: SocketAddr, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = http_get(admin, "/metrics");
        if metrics.contains(needle) || std::time::Instant::now() > deadline {
            assert!(metrics.contains(needle), "`{needle}` not in:\n{metrics}");
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn plugins_read_their_configuration_values() {
    let config = config_file(
        "plugin-config",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n[listener.config]\ngreeting = \"hello from the operator\"\n",
            test_plugin("greeter.wasm").display()
        ),
    );
    let host = Host::start(&["run", "--config", config.to_str().unwrap()]);
    let mut line = String::new();
    BufReader::new(host.connect()).read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the operator\n");
}

#[test]
fn granted_environment_variables_and_nothing_else_are_visible() {
    // On threads and on an event loop (which links async WASI).
    for serving in ["", "event_loops = 1\n"] {
        let config = config_file(
            "grants",
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n{serving}\
                 [listener.grants]\nenv = [\"HOME\"]\n",
                test_plugin("sandbox.wasm").display()
            ),
        );
        let check = run_host(&["check", "--config", config.to_str().unwrap()]);
        let report = String::from_utf8_lossy(&check.stdout);
        assert!(report.contains("grant:    env HOME"), "{report}");
        let host = Host::start(&["run", "--config", config.to_str().unwrap()]);
        assert!(host.stderr_contains("grant: env HOME"), "{}", host.logs());
        let mut report = String::new();
        let _ = host.connect().read_to_string(&mut report);
        assert!(report.contains("env: ok"), "{serving}{report}");
        assert!(report.contains("vars: ok 1"), "{serving}{report}");
        assert!(
            report.contains("fs: error") && report.contains("net: error"),
            "{serving}{report}"
        );
    }
}

#[test]
fn bad_config_files_name_file_line_and_key() {
    let cases = [
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\nbiuld = 1\n",
            ":4:",
            "unknown field `biuld`",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\nmax_memory = \"lots\"\n",
            ":4:",
            "listener[0].max_memory",
        ),
        (
            "[[listener]]\naddress = \"localhost\"\nplugin = \"echo\"\n",
            ":2:",
            "address",
        ),
        ("[[listener]\n", ":1:", "host.toml"),
        ("grace = \"5s\"\n", "", "no [[listener]]"),
    ];
    for (text, place, needle) in cases {
        let path = config_file("bad-config", text);
        let out = run_host(&["run", "--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(
            line.contains(&format!("host.toml{place}")),
            "{text}: {line}"
        );
        assert!(line.contains(needle), "{text}: {line}");
        assert!(!stderr.contains("panicked"));
    }
}

#[test]
fn a_plugin_built_against_the_previous_contract_still_works() {
    let plugin = test_plugin("old_wit_echo.wasm");
    let out = run_host(&["check", plugin.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("plughost:handler/connections@0.1.0"),
        "{stdout}"
    );
    let host = Host::start(&["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"]);
    check_echo(&host);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let host = Host::start(&[
        "--log-format",
        "json",
        "run",
        "--plugin",
        "echo",
        "--port",
        "0",
    ]);
    let mut stream = host.connect();
    stream.write_all(b"x").unwrap();
    let mut reply = [0; 1];
    stream.read_exact(&mut reply).unwrap();
    drop(stream);
    assert!(host.wait_for_log("connection closed", Duration::from_secs(5)));
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
fn two_processes_share_a_port_with_reuse_port() {
    let first = Host::start(&["run", "--plugin", "echo", "--port", "0", "--reuse-port"]);
    let port = first.addr().port().to_string();
    let second = Host::start(&[
        "run",
        "--plugin",
        "http-hello",
        "--port",
        &port,
        "--reuse-port",
    ]);
    assert_eq!(first.addr(), second.addr());
    // Without the option the second bind fails with a clear message.
    let out = run_host(&["run", "--plugin", "echo", "--port", &port]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_tcp_echo_and_a_unix_socket_bot_are_served_at_once() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let dir = temp_dir("unix");
    let socket = dir.join("bot.sock");
    // A stale socket file, as a crashed process leaves behind.
    drop(UnixListener::bind(&socket).unwrap());
    let config = dir.join("host.toml");
    fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\n\
             [[listener]]\nname = \"bot\"\naddress = \"unix:{}\"\nplugin = \"bot10086\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let mut host = Host::start(&["run", "--config", config.to_str().unwrap()]);
    host.expect_log("removed stale socket", Duration::from_secs(5));
    let echo = host.listener_addr("echo");
    assert!(host.wait_for_log(
        &format!("listening on unix:{}", socket.display()),
        Duration::from_secs(5)
    ));

    let bot = UnixStream::connect(&socket).unwrap();
    bot.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = bot.try_clone().unwrap();
    let mut lines = BufReader::new(bot);
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), GREETING);
    let mut stream = connect(echo);
    stream.write_all(b"both at once").unwrap();
    let mut reply = [0; 12];
    stream.read_exact(&mut reply).unwrap();
    writer.write_all(b"0").unwrap();
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), crate::behaviour::TRANSFER);
    assert!(host.stderr_contains("peer=unix:"), "{}", host.logs());
    drop((writer, lines, stream));

    host.terminate();
    assert!(
        host.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert!(
        !socket.exists(),
        "the socket file is removed on a clean exit"
    );
}

#[test]
fn udp_datagrams_are_echoed_by_a_datagram_plugin() {
    use std::net::UdpSocket;
    let host_process = Host::start_with_log_prefix(
        &["run", "--plugin", "udp-echo", "--udp", "--port", "0"],
        "listening on udp:",
    );
    let server = host_process.addr();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for message in [
        &b"hello"[..],
        &[0u8, 255, 1, 254][..],
        &vec![b'x'; 60_000][..],
    ] {
        client.send_to(message, server).unwrap();
        let mut buf = vec![0; 65_536];
        let (len, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, server);
        assert_eq!(&buf[..len], message);
    }
    // A stream plugin on a UDP listener (and the reverse) is refused clearly.
    let out = run_host(&["run", "--plugin", "echo", "--udp", "--port", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a stream handler"));
    let out = run_host(&["check", "udp-echo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("datagram-handler"));
}

#[test]
fn the_default_connection_cap_follows_how_the_plugin_is_served() {
    // On event loops a connection costs 6 memory mappings, on a thread 10;
    // a native plugin keeps a thread each even with --event-loops.
    let map_count: usize = fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cap = |per_connection: usize| (map_count - 4096) / per_connection;
    let native = example_plugin("libecho.so");
    let cases = [("echo", 6), (native.to_str().unwrap(), 10)];
    for (plugin, per_connection) in cases {
        let host = on_one_loop(plugin, &["--admin", "127.0.0.1:0"]);
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
    let host = Host::serving("echo", &[]);
    let mut open = host.connect();
    assert_eq!(round_trip(&mut open, b"hi"), b"hi");
    let mut seen = Vec::new();
    for task in fs::read_dir(format!("/proc/{}/task", host.pid())).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm")).unwrap();
        let stat = fs::read_to_string(task.join("stat")).unwrap();
        // Fields after the parenthesised name, which may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
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
fn cache_entries(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut entries: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, entry.metadata().unwrap().len())
        })
        .collect();
    entries.sort();
    entries
}

/// `host check` of a built-in plugin with a given cache; the file name of
/// the cache entry it used.
fn check_cached(plugin: &str, cache: &std::path::Path, max_size: &str) -> String {
    let out = run_host(&[
        "check",
        plugin,
        "--cache-dir",
        cache.to_str().unwrap(),
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
    let hash = version.trim().rsplit('@').next().unwrap().to_string();
    // Modification times are what "recently used" goes by; keep the steps
    // apart by more than the file system's clock granularity.
    std::thread::sleep(Duration::from_millis(50));
    hash
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
            .unwrap()
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
    let map_of = |host: &Host| std::path::PathBuf::from(format!("/tmp/perf-{}.map", host.pid()));

    let plain = Host::serving("echo", &[]);
    check_echo(&plain);
    let plain_map = map_of(&plain);
    assert!(
        !plain_map.exists(),
        "{} written unasked",
        plain_map.display()
    );

    let profiled = Host::serving("echo", &["--perf-map"]);
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
