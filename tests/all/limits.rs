//! Limits and fault isolation: hostile plugins (infinite loop, unbounded
//! allocation, stack overflow, a `finish` that never returns) and hostile
//! clients (slowloris, never reading, resets, garbage, a burst of
//! connections) never hurt another connection.
//!
//! Each hostile plugin runs on one listener of a two-listener host whose
//! other listener serves echo, so "everyone else keeps working" is checked
//! in the same process.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    Host, closed_after, connect, round_trip, temp_dir, test_plugin, write_without_reading,
};

/// A host with `hostile` on its first listener and echo on its second.
fn hostile_host(hostile: &str, limits: &str) -> (Host, SocketAddr, SocketAddr) {
    let dir = temp_dir("limits");
    let config = dir.join("host.toml");
    fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"hostile\"\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n{limits}\n\n\
             [[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n",
            test_plugin(hostile).display()
        ),
    )
    .unwrap();
    let host = Host::start(&["run", "--config", config.to_str().unwrap()]);
    let hostile = host.listener_addr("hostile");
    let echo = host.listener_addr("echo");
    (host, hostile, echo)
}

fn echo_works(addr: SocketAddr) {
    let mut stream = connect(addr);
    stream.write_all(b"still here").unwrap();
    let mut reply = [0; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"still here");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_call_timeout() {
    let (host, hostile, echo) = hostile_host("spin.wasm", "call_timeout = \"1s\"");
    let spinner = thread::spawn(move || closed_after(hostile));
    thread::sleep(Duration::from_millis(300));
    echo_works(echo);
    let took = spinner.join().unwrap();
    // Never before the budget is spent, and soon after.
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(10)).contains(&took),
        "took {took:?}"
    );
    host.expect_log("call timeout", Duration::from_secs(5));
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let (host, hostile, echo) = hostile_host("hog.wasm", "max_memory = \"16MiB\"");
    closed_after(hostile);
    host.expect_log("memory limit", Duration::from_secs(5));
    host.expect_log("outcome=trap", Duration::from_secs(5));
    echo_works(echo);
}

#[test]
fn a_stack_overflow_traps_only_its_instance() {
    let (host, hostile, echo) = hostile_host("recurse.wasm", "");
    closed_after(hostile);
    host.expect_log("outcome=trap", Duration::from_secs(5));
    echo_works(echo);
}

#[test]
fn a_finish_that_never_returns_is_stopped() {
    let (host, hostile, echo) = hostile_host("finish_hangs.wasm", "call_timeout = \"1s\"");
    let took = closed_after(hostile);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    host.expect_log("call timeout", Duration::from_secs(5));
    echo_works(echo);
}

#[test]
fn hostile_clients_do_not_disturb_others() {
    hostile_clients_against(&[]);
}

#[test]
fn hostile_clients_do_not_disturb_others_on_an_event_loop() {
    hostile_clients_against(&["--event-loops", "1"]);
}

/// Slowloris, a reset mid-request and 10 MiB of noise against http-hello
/// (started with `serving` flags), while a normal client is served.
fn hostile_clients_against(serving: &[&str]) {
    let mut args = vec![
        "run",
        "--plugin",
        "http-hello",
        "--port",
        "0",
        "--idle-timeout",
        "3s",
    ];
    args.extend_from_slice(serving);
    let host = Host::start(&args);
    let addr = host.addr();

    // Slowloris: one byte at a time, slowly; the idle timeout doesn't fire
    // while bytes keep coming, but others are served meanwhile.
    let slow = thread::spawn(move || {
        let mut stream = connect(addr);
        for byte in b"GET / HT" {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    // A client that resets mid-request.
    let reset = connect(addr);
    (&reset).write_all(b"GET / HTTP/1.1\r\nHost").unwrap();
    socket2::SockRef::from(&reset)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);
    // 10 MiB of random bytes: a 400 and a close, not a buffer that grows.
    let mut garbage = connect(addr);
    let noise: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = garbage.write_all(&noise);
    let mut reply = Vec::new();
    let _ = garbage.read_to_end(&mut reply);
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );

    let mut ok = connect(addr);
    ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    ok.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    slow.join().unwrap();
    assert!(!host.logs().contains("panicked"));
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_client_that_never_reads_costs_bounded_memory() {
    let host = Host::start(&[
        "run",
        "--plugin",
        "echo",
        "--port",
        "0",
        "--idle-timeout",
        "2s",
    ]);
    let before = rss_kib(host.pid());
    let mut stream = connect(host.addr());
    // The echo blocks writing back once the socket buffers fill up.
    write_without_reading(&mut stream);
    let during = rss_kib(host.pid());
    assert!(
        during < before + 64 * 1024,
        "host memory grew from {before} KiB to {during} KiB for a client that never reads"
    );
    // The host gives up on the stalled writer after the idle timeout.
    host.expect_log("outcome=", Duration::from_secs(15));
    echo_works(host.addr());
}

#[test]
fn two_thousand_connections_at_once_are_all_served() {
    two_thousand_connections_against(&[]);
}

#[test]
fn two_thousand_connections_at_once_are_all_served_on_an_event_loop() {
    two_thousand_connections_against(&["--event-loops", "1"]);
}

fn two_thousand_connections_against(serving: &[&str]) {
    let host = Host::serving("echo", serving);
    let addr = host.addr();
    let mut streams: Vec<TcpStream> = (0..2000).map(|_| connect(addr)).collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.write_all(format!("{i:05}").as_bytes()).unwrap();
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut reply = [0; 5];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply, format!("{i:05}").as_bytes());
    }
}

#[test]
fn the_sandbox_grants_nothing_by_default() {
    sandbox_probes_against(&[]);
}

#[test]
fn the_sandbox_grants_nothing_by_default_on_an_event_loop() {
    // Event loops link the async flavour of WASI: it must deny the same.
    sandbox_probes_against(&["--event-loops", "1"]);
}

fn sandbox_probes_against(serving: &[&str]) {
    let plugin = test_plugin("sandbox.wasm");
    let host = Host::serving(plugin.to_str().unwrap(), serving);
    let mut stream = host.connect();
    let mut report = String::new();
    let _ = stream.read_to_string(&mut report);
    assert!(!report.contains("root:"), "read /etc/passwd:\n{report}");
    for probe in [
        "fs: error",
        "env: error",
        "vars: ok 0",
        "net: error",
        "dir: error",
    ] {
        assert!(report.contains(probe), "expected `{probe}` in:\n{report}");
    }
}

/// A client that stays silent for several times the call timeout between
/// messages, on threads and on an event loop: the plugin spends that time
/// blocked in `read`, which its CPU budget does not count.
#[test]
fn time_spent_waiting_for_the_client_does_not_count_against_the_call_timeout() {
    for extra in [&[][..], &["--event-loops", "1"][..]] {
        let mut args = vec!["--call-timeout", "100ms"];
        args.extend_from_slice(extra);
        let host = Host::serving("echo", &args);
        let mut stream = host.connect();
        for message in [&b"first"[..], b"after a pause"] {
            assert_eq!(round_trip(&mut stream, message), message, "{extra:?}");
            thread::sleep(Duration::from_millis(600));
        }
        assert!(!host.stderr_contains("call timeout"), "{}", host.logs());
    }
}

#[test]
fn a_zero_call_timeout_turns_the_cpu_deadline_off() {
    let host = Host::start(&[
        "run",
        "--plugin",
        "echo",
        "--port",
        "0",
        "--call-timeout",
        "0",
    ]);
    echo_works(host.addr());
}

#[test]
fn the_connection_cap_makes_extra_clients_wait_and_says_so_only_then() {
    let host = Host::start(&[
        "run",
        "--plugin",
        "echo",
        "--port",
        "0",
        "--max-connections",
        "2",
    ]);
    let mut first = host.connect();
    let mut second = host.connect();
    assert_eq!(round_trip(&mut first, b"one"), b"one");
    assert_eq!(round_trip(&mut second, b"two"), b"two");
    // At the cap but nobody waiting: no warning yet.
    thread::sleep(Duration::from_millis(300));
    assert!(
        !host.logs().contains("connection limit reached"),
        "{}",
        host.logs()
    );
    // A third client waits in the backlog, and that is logged.
    let mut third = host.connect();
    third.write_all(b"three").unwrap();
    host.expect_log("connection limit reached", Duration::from_secs(5));
    // It is served as soon as a slot frees.
    drop(first);
    let mut reply = [0; 5];
    third.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"three");
}

#[test]
fn a_client_trickling_bytes_cannot_keep_finish_alive() {
    // `finish` may do I/O for 5 s in all, not 5 s per read: a client that
    // sends a byte every 300 ms is cut off after about 5 s, on threads and
    // on an event loop.
    let plugin = test_plugin("finish_drains.wasm");
    for serving in [&[][..], &["--event-loops", "1"][..]] {
        let host = Host::serving(plugin.to_str().unwrap(), serving);
        let mut stream = connect(host.addr());
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        while Instant::now() < deadline && stream.write_all(b".").is_ok() {
            if host.stderr_contains("connection closed") {
                break;
            }
            thread::sleep(Duration::from_millis(300));
        }
        let took = started.elapsed();
        assert!(
            host.wait_for_log("connection closed", Duration::from_secs(2)),
            "{serving:?}: finish still running after {took:?}:\n{}",
            host.logs()
        );
        assert!(took < Duration::from_secs(10), "{serving:?}: {took:?}");
    }
}
