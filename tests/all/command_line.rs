//! The command line against a configuration file: every flag given
//! overrides the file's value for its listener, and the file's values
//! apply where no flag is given (as `/status` reports them).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{Host, connect, temp_dir};

/// A one-listener file that sets every per-listener limit.
const FILE: &str = "admin = \"127.0.0.1:0\"\n\n\
    [[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\
    max_connections = 500\nevent_loops = 2\nidle_timeout = \"1h\"\n\
    max_memory = \"128MiB\"\ncall_timeout = \"10s\"\n";

/// The first listener's entry in `/status`, for a host started from
/// [`FILE`] with `flags`.
fn listener_status(flags: &[&str]) -> serde_json::Value {
    let config = temp_dir("precedence").join("host.toml");
    std::fs::write(&config, FILE).expect("write host.toml");
    let mut args = vec!["run", "--config", config.to_str().expect("UTF-8 path")];
    args.extend_from_slice(flags);
    let host = Host::start(&args);
    host.expect_log("admin listening on", Duration::from_secs(10));
    let admin: SocketAddr = host
        .logs()
        .lines()
        .find_map(|l| {
            l.split("http://")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the admin address is logged");
    let mut stream = connect(admin);
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("ask for /status");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read /status");
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    let status: serde_json::Value = serde_json::from_str(body).expect("/status is JSON");
    status["config"]["listeners"][0].clone()
}

#[test]
fn every_flag_overrides_the_configuration_file() {
    let listener = listener_status(&[
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
    let listener = listener_status(&[]);
    assert_eq!(listener["max_connections"], 500, "{listener}");
    assert_eq!(listener["event_loops"], 2, "{listener}");
    assert_eq!(listener["idle_timeout_ms"], 3_600_000, "{listener}");
    assert_eq!(listener["max_memory"], 128 << 20, "{listener}");
    assert_eq!(listener["call_timeout_ms"], 10_000, "{listener}");
}
