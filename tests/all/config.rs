//! Configuration: values a plugin reads from its listener's table, errors
//! that name the file, line and key, the number of event loops (from the
//! file, overridden by `--event-loops`, bounded), and every other flag
//! overriding the file's value too.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

use crate::support::admin::{admin_addr, status};
use crate::support::{Host, Mode, config_file, refused, round_trip, run_host, test_plugin, utf8};

in_every_mode! {
    /// `[listener.config]` values reach the plugin.
    fn plugins_read_their_configuration_values(mode: Mode) {
        let config = config_file(
            "plugin-config",
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n[listener.config]\ngreeting = \"hello from the operator\"\n",
                test_plugin("greeter.wasm").display()
            ),
        );
        let host = Host::builder().config(&config).mode(mode).start();
        let mut line = String::new();
        BufReader::new(host.connect())
            .read_line(&mut line)
            .expect("the greeting");
        assert_eq!(line, "hello from the operator\n");
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
        let out = run_host(&["run", "--config", utf8(&path)]);
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

/// The file's `event_loops = 1` serves 20 connections on one loop; with
/// `--event-loops 0` on the command line each gets a thread.
#[test]
fn the_flag_overrides_the_files_event_loops_even_with_zero() {
    let config = config_file(
        "events-override",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\nevent_loops = 1\n",
    );
    let threads_for = |host: Host| {
        let mut open: Vec<TcpStream> = (0..20).map(|_| host.connect()).collect();
        for stream in &mut open {
            assert_eq!(round_trip(stream, b"x"), b"x");
        }
        host.thread_count()
    };
    let on_the_loop = threads_for(Host::builder().config(&config).mode_as_configured().start());
    let on_threads = threads_for(Host::builder().config(&config).mode(Mode::Threads).start());
    assert!(
        on_threads >= on_the_loop + 15,
        "--event-loops 0 did not give each connection a thread \
         ({on_threads} threads vs {on_the_loop} on the file's loop)"
    );
}

#[test]
fn absurd_event_loop_counts_are_refused_clearly() {
    let out = run_host(&["run", "--plugin", "echo", "--event-loops", "100000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("0..=256"), "{stderr}");

    let config = config_file(
        "events-too-many",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\nevent_loops = 3000\n",
    );
    let line = refused(&["run", "--config", utf8(&config)]);
    assert!(line.contains("3000 event loops"), "{line}");
}

/// A one-listener file that sets every per-listener limit.
const EVERY_LIMIT: &str = "admin = \"127.0.0.1:0\"\n\n\
    [[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\
    max_connections = 500\nevent_loops = 2\nidle_timeout = \"1h\"\n\
    max_memory = \"128MiB\"\ncall_timeout = \"10s\"\n";

/// The listener's settings as `/status` reports them, for a host started
/// from [`EVERY_LIMIT`] with `flags`.
fn listener_settings(flags: &[&str]) -> serde_json::Value {
    let config = config_file("precedence", EVERY_LIMIT);
    let host = Host::builder()
        .config(&config)
        .mode_as_configured()
        .args(flags)
        .start();
    status(admin_addr(&host))["config"]["listeners"][0].clone()
}

#[test]
fn every_flag_overrides_the_configuration_file() {
    let listener = listener_settings(&[
        "--max-connections",
        "7",
        "--event-loops",
        "1",
        "--idle-timeout",
        "200ms",
        "--max-memory",
        "2MiB",
        "--call-timeout",
        "50ms",
    ]);
    assert_eq!(listener["max_connections"], 7, "{listener}");
    assert_eq!(listener["event_loops"], 1, "{listener}");
    assert_eq!(listener["idle_timeout_ms"], 200, "{listener}");
    assert_eq!(listener["max_memory"], 2 << 20, "{listener}");
    assert_eq!(listener["call_timeout_ms"], 50, "{listener}");
}

#[test]
fn the_files_values_apply_where_no_flag_is_given() {
    let listener = listener_settings(&[]);
    assert_eq!(listener["max_connections"], 500, "{listener}");
    assert_eq!(listener["event_loops"], 2, "{listener}");
    assert_eq!(listener["idle_timeout_ms"], 3_600_000, "{listener}");
    assert_eq!(listener["max_memory"], 128 << 20, "{listener}");
    assert_eq!(listener["call_timeout_ms"], 10_000, "{listener}");
}

/// With no mode asked for, a WASM plugin is served on event loops (one
/// per CPU the host may use), and the `listening on` line says how.
#[test]
fn the_default_serving_mode_is_event_loops_and_is_logged() {
    let host = Host::builder().plugin("echo").mode_as_configured().start();
    let logs = host.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("listening on"))
        .expect("a listening line");
    assert!(
        line.contains("serving=") && line.contains("event loop"),
        "{line}"
    );
    let threads = Host::builder().plugin("echo").mode(Mode::Threads).start();
    assert!(
        threads.stderr_contains("serving=a thread per connection"),
        "{}",
        threads.logs()
    );
}

#[test]
fn udp_with_a_configuration_file_is_refused_with_what_to_write_instead() {
    let config = config_file(
        "udp-with-file",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n",
    );
    let line = refused(&["run", "--config", utf8(&config), "--udp"]);
    assert!(
        line.contains("--udp") && line.contains("udp:IP:PORT"),
        "{line}"
    );
}
