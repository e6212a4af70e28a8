//! The foundation: the example plugins over real sockets, isolation between
//! connections, every bad-input case with its message, `host check`, and
//! the SIGTERM drain.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::behaviour::{ASK_AGAIN, GREETING, read_response};
use crate::support::{
    Host, connect, echo_to_end, example_plugin, lean_test_plugin, native_test_plugin, refused,
    round_trip, run_host, temp_dir, test_plugin,
};

#[test]
fn ten_mib_round_trip_intact_while_reading_and_writing() {
    ten_mib_round_trip(&[]);
}

#[test]
fn ten_mib_round_trip_intact_on_an_event_loop() {
    ten_mib_round_trip(&["--event-loops", "1"]);
}

/// 10 MiB through the echo plugin while the client writes and reads at
/// once: a bulk transfer, so reads after the first large one receive
/// queued bytes straight into the guest's memory.
fn ten_mib_round_trip(serving: &[&str]) {
    let host = Host::serving("echo", serving);
    let stream = host.connect();
    let payload: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let sent = payload.clone();
    let echoed = echo_to_end(&stream, move |writer| writer.write_all(&sent).unwrap());
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "10 MiB came back changed");
    let bytes = payload.len().to_string();
    host.expect_log(
        &format!("bytes_in={bytes} bytes_out={bytes}"),
        Duration::from_secs(5),
    );
}

#[test]
fn urgent_data_stays_in_the_stream() {
    for serving in [&[][..], &["--event-loops", "1"][..]] {
        let host = Host::serving("echo", serving);
        let stream = host.connect();
        // Large enough that the echo is in bulk mode when the urgent
        // byte arrives.
        let chunk: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 241) as u8).collect();
        let sent = chunk.clone();
        let echoed = echo_to_end(&stream, move |writer| {
            writer.write_all(&sent).unwrap();
            let urgent = socket2::SockRef::from(&*writer).send_out_of_band(b"!");
            assert_eq!(urgent.unwrap(), 1);
            writer.write_all(&sent).unwrap();
        });
        let mut expected = chunk.clone();
        expected.push(b'!');
        expected.extend_from_slice(&chunk);
        assert_eq!(echoed.len(), expected.len(), "{serving:?}");
        assert!(
            echoed == expected,
            "{serving:?}: the stream came back changed"
        );
        host.expect_log("outcome=ok", Duration::from_secs(5));
    }
}

#[test]
fn two_hundred_concurrent_echo_connections_are_all_correct() {
    let host = Host::start(&["run", "--plugin", "echo", "--port", "0"]);
    let addr = host.addr();
    let clients: Vec<_> = (0..200)
        .map(|client| {
            thread::spawn(move || {
                let mut stream = connect(addr);
                for round in 0..20 {
                    let message = format!("client {client} round {round}");
                    assert_eq!(
                        round_trip(&mut stream, message.as_bytes()),
                        message.as_bytes()
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client saw a wrong echo");
    }
}

#[test]
fn echo_serves_ipv6_and_component_files() {
    let file = example_plugin("echo.wasm");
    let host = Host::start(&["run", "--plugin", file.to_str().unwrap(), "--port", "0"]);
    assert_eq!(
        round_trip(&mut host.connect(), b"from a file"),
        b"from a file"
    );
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: skipping the IPv6 half");
        return;
    }
    let v6 = Host::start(&["run", "--plugin", "echo", "--host", "::1", "--port", "0"]);
    assert!(v6.addr().is_ipv6());
    assert_eq!(round_trip(&mut v6.connect(), b"over ipv6"), b"over ipv6");
}

#[test]
fn the_bot_refuses_an_endless_line_and_keeps_serving() {
    let host = Host::start(&["run", "--plugin", "bot10086", "--port", "0"]);
    let mut stream = host.connect();
    let _ = stream.write_all(&vec![b'1'; 100 * 1024]);
    let mut everything = Vec::new();
    let _ = stream.read_to_end(&mut everything);
    let text = String::from_utf8_lossy(&everything);
    assert!(text.starts_with(GREETING), "{text}");
    assert!(
        !text.contains(ASK_AGAIN),
        "an over-long line is refused, not answered: {text}"
    );

    let mut lines = BufReader::new(host.connect());
    let mut greeting = String::new();
    lines.read_line(&mut greeting).unwrap();
    assert_eq!(greeting.trim_end(), GREETING);
}

fn http_exchange(host: &Host, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>, bool) {
    let stream = host.connect();
    (&stream).write_all(request).unwrap();
    let mut reader = BufReader::new(stream);
    let (status, headers, body) = read_response(&mut reader);
    let mut rest = Vec::new();
    let closed = reader.read_to_end(&mut rest).is_ok() && rest.is_empty();
    (status, headers, body, closed)
}

#[test]
fn http_hello_honours_close_http10_and_header_limits() {
    let host = Host::start(&["run", "--plugin", "http-hello", "--port", "0"]);
    let (status, headers, body, closed) = http_exchange(
        &host,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (status, body.as_slice(), closed),
        (200, &b"Hello, World!"[..], true)
    );
    assert!(
        headers.contains(&("content-length".into(), "13".into())),
        "{headers:?}"
    );
    let (status, _, _, closed) = http_exchange(&host, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (status, closed),
        (200, true),
        "HTTP/1.0 without keep-alive closes"
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let (status, _, _, closed) = http_exchange(&host, big.as_bytes());
    assert!(status == 431 || status == 400, "status {status}");
    assert!(closed);
}

#[test]
fn http_hello_works_with_curl() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed: skipping (apt-get install curl)");
        return;
    }
    let host = Host::start(&["run", "--plugin", "http-hello", "--port", "0"]);
    let url = format!("http://{}/", host.addr());
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", &url, &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, World!Hello, World!"
    );
}

/// The SDK's heap on lean builds starts in the initial memory: a connection
/// that allocates 192 KiB does not grow the memory (growing costs the host
/// two `mprotect` calls per connection), on a fresh slot or a recycled one.
#[test]
fn a_lean_plugin_allocates_without_growing_its_memory() {
    let probe = lean_test_plugin("heap_probe.wasm");
    let host = Host::serving(probe.to_str().unwrap(), &[]);
    for connection in 0..3 {
        let mut stream = host.connect();
        let mut report = String::new();
        stream.read_to_string(&mut report).unwrap();
        let pages: Vec<&str> = report.split_whitespace().take(3).collect();
        assert_eq!(pages.first(), Some(&"pages"), "{report:?}");
        assert_eq!(
            pages.get(1),
            pages.get(2),
            "connection {connection}: the memory grew ({report:?})"
        );
    }
}

#[test]
fn a_trap_or_panic_closes_only_its_own_connection() {
    let cases = [
        // The guest's panic message reaches the log through its stderr
        // (the WASI context built at its first WASI call).
        (
            test_plugin("trap.wasm"),
            &["outcome=trap", "asked to trap"][..],
        ),
        // A lean build has no std stderr; the SDK's panic hook writes the
        // message to WASI's stderr instead.
        (
            lean_test_plugin("trap.wasm"),
            &["outcome=trap", "asked to trap"][..],
        ),
        (
            native_test_plugin("libtrap.so"),
            &["plugin panicked: asked to trap"][..],
        ),
    ];
    for (plugin, logged) in cases {
        let host = Host::start(&["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"]);
        let mut good = host.connect();
        assert_eq!(round_trip(&mut good, b"hello"), b"hello");
        let mut bad = host.connect();
        bad.write_all(b"trap").unwrap();
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest);
        assert!(rest.is_empty());
        for line in logged {
            host.expect_log(line, Duration::from_secs(5));
        }
        assert_eq!(round_trip(&mut good, b"still here"), b"still here");
        assert_eq!(round_trip(&mut host.connect(), b"new one"), b"new one");
    }
}

#[test]
fn finish_runs_after_a_failing_handle_and_setup_errors_skip_both() {
    let plugin = test_plugin("handle_fails.wasm");
    let host = Host::start(&["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"]);
    let mut text = String::new();
    host.connect().read_to_string(&mut text).unwrap();
    assert_eq!(text, "partial\nfinished\n");
    host.expect_log("handler gave up", Duration::from_secs(5));
    assert!(host.stderr_contains("outcome=error"));

    let plugin = test_plugin("setup_fails.wasm");
    let host = Host::start(&["run", "--plugin", plugin.to_str().unwrap(), "--port", "0"]);
    let mut text = String::new();
    let _ = host.connect().read_to_string(&mut text);
    assert!(!text.contains("should not run"), "{text}");
    host.expect_log("no thanks", Duration::from_secs(5));
    assert!(host.stderr_contains("outcome=setup-error"));
}

#[test]
fn bad_plugins_are_refused_by_run_and_check_with_one_clear_line() {
    let dir = temp_dir("bad-input");
    let text = dir.join("notes.wasm");
    fs::write(&text, "just some text\n").unwrap();
    let core = dir.join("core.wasm");
    fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.join("missing.wasm");
    let wrong = test_plugin("wrong_world.wasm");
    let cases: [(&std::path::Path, &[&str]); 4] = [
        (&missing, &["not found", "missing.wasm"]),
        (&text, &["not a WebAssembly file"]),
        (&core, &["core WebAssembly module", "not a component"]),
        (
            &wrong,
            &[
                "plughost:handler/handler@0.1",
                "missing exports `setup`, `handle`, `finish`",
            ],
        ),
    ];
    for (file, needles) in cases {
        let file = file.to_str().unwrap();
        for line in [
            refused(&["run", "--plugin", file, "--port", "0"]),
            refused(&["check", file]),
        ] {
            for needle in needles {
                assert!(line.contains(needle), "`{needle}` missing from: {line}");
            }
        }
    }
    let line = refused(&["run", "--plugin", "nosuch", "--port", "0"]);
    assert!(
        line.contains("nosuch") && line.contains("not found"),
        "{line}"
    );
}

#[test]
fn address_problems_are_refused_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let line = refused(&["run", "--plugin", "echo", "--port", &port]);
    assert!(line.contains("already in use"), "{line}");

    let out = run_host(&["run", "--plugin", "echo", "--host", "not-an-ip"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed command line: {stderr}"
    );
    assert!(stderr.contains("not-an-ip"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn check_describes_a_good_plugin() {
    let out = run_host(&["check", example_plugin("http-hello.wasm").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("implements plughost:handler/handler@0.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("exports:  setup, handle, finish"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imports:") && stdout.contains("plughost:handler/connections"),
        "{stdout}"
    );
    assert!(stdout.contains("grants:   none"), "{stdout}");
    assert!(
        stdout.contains("instance:") && stdout.contains("to create per connection"),
        "{stdout}"
    );
}

#[test]
fn sigterm_stops_accepting_and_lets_open_connections_finish() {
    let mut host = Host::start(&["run", "--plugin", "echo", "--port", "0", "--grace", "5s"]);
    let mut open = host.connect();
    assert_eq!(round_trip(&mut open, b"before"), b"before");
    host.terminate();
    host.expect_log("shutting down", Duration::from_secs(5));
    // New connections are refused (the listener is closed).
    let refused = TcpStream::connect_timeout(&host.addr(), Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "a new connection was accepted while draining"
    );
    // The open one is still served.
    assert_eq!(round_trip(&mut open, b"during"), b"during");
    let started = Instant::now();
    drop(open);
    let status = host
        .wait_exit(Duration::from_secs(5))
        .expect("host exits once drained");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn the_grace_period_ends_with_stragglers_closed_and_exit_zero() {
    grace_period_against(&[]);
}

#[test]
fn the_grace_period_ends_the_same_on_an_event_loop() {
    grace_period_against(&["--event-loops", "1"]);
}

/// SIGTERM with a connection open (host started with `serving` flags): it
/// is still served while draining, then closed when the 1 s grace ends,
/// and the host exits 0.
fn grace_period_against(serving: &[&str]) {
    let mut host = Host::serving("echo", &[&["--grace", "1s"], serving].concat());
    let mut idle = host.connect();
    assert_eq!(round_trip(&mut idle, b"hi"), b"hi");
    host.terminate();
    host.expect_log("shutting down", Duration::from_secs(5));
    assert_eq!(round_trip(&mut idle, b"during"), b"during");
    let status = host
        .wait_exit(Duration::from_secs(6))
        .expect("host exits after the grace period");
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(host.stderr_contains("grace period over"), "{}", host.logs());
}
