//! Limits and fault isolation, on threads and on an event loop: hostile
//! plugins (an infinite loop, unbounded allocation, a stack overflow, a
//! `finish` that never returns) are stopped with their reason; the call
//! timeout charges computing only (not waiting for the client, not time
//! parked for neighbours), and `0` turns it off; a computing plugin does
//! not starve its neighbours; hostile clients (slowloris, resets, garbage,
//! never reading, trickling, idling) and a full connection cap never hurt
//! another connection.
//!
//! Each hostile plugin runs on one listener of a two-listener host whose
//! other listener serves echo, so "everyone else keeps working" is checked
//! in the same process.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::clients::{
    Spinner, read_until_closed, stay_silent_for, wait_closed_after_x, write_without_reading,
};
use crate::support::{Host, Mode, SOON, config_file, connect, round_trip, test_plugin};

/// A host (in `mode`) with `hostile` on its first listener, with `limits`
/// (lines of the listener's table), and echo on its second.
fn hostile_host(hostile: &str, limits: &str, mode: Mode) -> (Host, SocketAddr, SocketAddr) {
    let config = config_file(
        "limits",
        &format!(
            "[[listener]]\nname = \"hostile\"\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n{limits}\n\n\
             [[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n",
            test_plugin(hostile).display()
        ),
    );
    let host = Host::builder().config(&config).mode(mode).start();
    let hostile = host.listener_addr("hostile");
    let echo = host.listener_addr("echo");
    (host, hostile, echo)
}

/// The echo listener at `addr` answers a new connection.
fn echo_works(addr: SocketAddr) {
    let mut stream = connect(addr);
    assert_eq!(round_trip(&mut stream, b"still here"), b"still here");
}

/// After its instance was stopped: the echo listener still serves, the
/// hostile listener still accepts (a new connection is opened), and the
/// host itself did not panic.
fn everyone_else_keeps_working(host: &Host, hostile: SocketAddr, echo: SocketAddr) {
    echo_works(echo);
    let opened = host.log_count("connection opened");
    let _again = connect(hostile);
    host.expect_log_count("connection opened", opened + 1, SOON);
    host.assert_no_host_panic("a hostile plugin");
}

fn rss_kib(pid: u32) -> u64 {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<host>/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in KiB")
}

in_every_mode! {
    /// spin.wasm computes for ever: the 1 s call timeout stops it, never
    /// before its budget is spent, while echo is served.
    fn an_infinite_loop_is_stopped_by_the_call_timeout(mode: Mode) {
        let (host, hostile, echo) = hostile_host("spin.wasm", "call_timeout = \"1s\"", mode);
        let spinner = Spinner::start(hostile);
        spinner.wait_until_spinning();
        echo_works(echo);
        let took = spinner.wait_closed();
        assert!(took >= Duration::from_secs(1), "stopped after {took:?}");
        host.expect_log("call timeout", SOON);
        everyone_else_keeps_working(&host, hostile, echo);
    }

    /// hog.wasm allocates without bound: the 16 MiB cap traps it.
    fn unbounded_allocation_hits_the_memory_cap(mode: Mode) {
        let (host, hostile, echo) = hostile_host("hog.wasm", "max_memory = \"16MiB\"", mode);
        wait_closed_after_x(hostile);
        host.expect_log("memory limit", SOON);
        host.expect_log("outcome=trap", SOON);
        everyone_else_keeps_working(&host, hostile, echo);
    }

    /// recurse.wasm overflows its stack: a trap of its instance only.
    fn a_stack_overflow_traps_only_its_instance(mode: Mode) {
        let (host, hostile, echo) = hostile_host("recurse.wasm", "", mode);
        wait_closed_after_x(hostile);
        host.expect_log("outcome=trap", SOON);
        everyone_else_keeps_working(&host, hostile, echo);
    }

    /// finish_hangs.wasm loops in `finish`: the call timeout stops it too.
    fn a_finish_that_never_returns_is_stopped(mode: Mode) {
        let (host, hostile, echo) =
            hostile_host("finish_hangs.wasm", "call_timeout = \"1s\"", mode);
        wait_closed_after_x(hostile);
        host.expect_log("call timeout", SOON);
        everyone_else_keeps_working(&host, hostile, echo);
    }

    /// Two instances computing (each cut by a 6 s call timeout: long
    /// enough that a machine busy with other work still serves the
    /// neighbour's five round trips first) do not keep a well-behaved
    /// connection to the same listener from being served meanwhile; on an
    /// event loop all three share one thread.
    fn a_computing_plugin_does_not_starve_its_neighbours(mode: Mode) {
        let host = Host::builder()
            .plugin(test_plugin("spin.wasm"))
            .mode(mode)
            .args(&["--call-timeout", "6s"])
            .start();
        let spinners = Spinner::spinning(host.addr(), 2);
        let mut neighbour = host.connect();
        neighbour.write_all(b"e").expect("ask spin.wasm to echo");
        for round in 0..5 {
            let message = format!("round {round}");
            assert_eq!(
                round_trip(&mut neighbour, message.as_bytes()),
                message.as_bytes()
            );
        }
        assert!(
            spinners.iter().all(Spinner::is_open) && !host.stderr_contains("call timeout"),
            "the neighbour was served only after the spinners were stopped:\n{}",
            host.logs()
        );
        for spinner in spinners {
            spinner.wait_closed();
        }
        host.expect_log_count("call timeout", 2, SOON);
    }

    /// `--call-timeout 0` turns the CPU deadline off: beside a control host
    /// whose spinner is cut by a 50 ms call timeout, the spinner of a host
    /// without one computes for ten times as long and is not cut (its
    /// connection stays open, nothing is logged against it).
    fn a_zero_call_timeout_turns_the_cpu_deadline_off(mode: Mode) {
        let spin = test_plugin("spin.wasm");
        let unlimited = Host::builder()
            .plugin(&spin)
            .mode(mode)
            .args(&["--call-timeout", "0"])
            .start();
        let control = Host::builder()
            .plugin(&spin)
            .mode(mode)
            .args(&["--call-timeout", "50ms"])
            .start();
        let before = unlimited.cpu_time();
        let spinner = Spinner::start(unlimited.addr());
        spinner.wait_until_spinning();
        let cut = Spinner::start(control.addr());
        cut.wait_closed();
        control.expect_log("call timeout", SOON);
        unlimited.wait_for_cpu_time(before + Duration::from_millis(500), Duration::from_secs(30));
        assert!(spinner.is_open(), "the spinner was cut:\n{}", unlimited.logs());
        for stopped in ["call timeout", "outcome=", "trap"] {
            assert!(
                !unlimited.stderr_contains(stopped),
                "`{stopped}` logged without a call timeout:\n{}",
                unlimited.logs()
            );
        }
        // The host still serves beside it.
        let mut neighbour = unlimited.connect();
        neighbour.write_all(b"e").expect("ask spin.wasm to echo");
        assert_eq!(round_trip(&mut neighbour, b"served"), b"served");
    }

    /// A client that stays silent for several times the call timeout
    /// between messages: the plugin spends that time blocked in `read`,
    /// which its CPU budget does not count.
    fn time_spent_waiting_for_the_client_does_not_count_against_the_call_timeout(mode: Mode) {
        let host = Host::builder()
            .plugin("echo")
            .mode(mode)
            .args(&["--call-timeout", "100ms"])
            .start();
        let mut stream = host.connect();
        for message in [&b"first"[..], b"after a pause"] {
            assert_eq!(round_trip(&mut stream, message), message);
            stay_silent_for(Duration::from_millis(600));
        }
        assert_eq!(round_trip(&mut stream, b"last"), b"last");
        assert!(!host.stderr_contains("call timeout"), "{}", host.logs());
    }

    /// Slowloris, a reset mid-request and 10 MiB of noise against
    /// http-hello, while a normal client is served.
    fn hostile_clients_do_not_disturb_others(mode: Mode) {
        let host = Host::builder()
            .plugin("http-hello")
            .mode(mode)
            .args(&["--idle-timeout", "3s"])
            .start();
        let addr = host.addr();

        // Slowloris: one byte at a time, slowly; the idle timeout doesn't
        // fire while bytes keep coming, but others are served meanwhile.
        let slow = thread::spawn(move || {
            let mut stream = connect(addr);
            for byte in b"GET / HT" {
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                stay_silent_for(Duration::from_millis(200));
            }
        });
        // A client that resets mid-request.
        let reset = connect(addr);
        (&reset)
            .write_all(b"GET / HTTP/1.1\r\nHost")
            .expect("send half a request");
        socket2::SockRef::from(&reset)
            .set_linger(Some(Duration::ZERO))
            .expect("set SO_LINGER 0");
        drop(reset);
        // 10 MiB of random bytes: a 400 and a close, not a buffer that
        // grows.
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
            .expect("send a request");
        let mut response = String::new();
        ok.read_to_string(&mut response).expect("read the response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        slow.join().expect("the slow client panicked");
        assert!(!host.logs().contains("panicked"), "{}", host.logs());
    }

    /// A client that never reads stalls the echo's writes: the host's
    /// memory stays bounded, the host gives up on it after the idle
    /// timeout, and others are served.
    fn a_client_that_never_reads_costs_bounded_memory_and_is_given_up_on(mode: Mode) {
        let host = Host::builder()
            .plugin("echo")
            .mode(mode)
            .args(&["--idle-timeout", "2s"])
            .start();
        let before = rss_kib(host.pid());
        let mut stream = host.connect();
        // The echo blocks writing back once the socket buffers fill up.
        write_without_reading(&mut stream);
        let during = rss_kib(host.pid());
        assert!(
            during < before + 64 * 1024,
            "host memory grew from {before} KiB to {during} KiB for a client that never reads"
        );
        host.expect_log("outcome=", Duration::from_secs(15));
        echo_works(host.addr());
    }

    /// A silent client is closed once the idle timeout passes (not
    /// before); a busy one is not: the timeout bounds silence, not life.
    fn idle_clients_are_closed_after_the_idle_timeout(mode: Mode) {
        let host = Host::builder()
            .plugin("echo")
            .mode(mode)
            .args(&["--idle-timeout", "1s"])
            .start();
        let mut idle = host.connect();
        let started = Instant::now();
        assert!(
            read_until_closed(&mut idle),
            "an idle client was not closed:\n{}",
            host.logs()
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "closed after {took:?}");
        let mut busy = host.connect();
        for round in 0..6 {
            stay_silent_for(Duration::from_millis(300));
            let message = format!("still busy {round}");
            assert_eq!(
                round_trip(&mut busy, message.as_bytes()),
                message.as_bytes()
            );
        }
    }

    /// After answering `Connection: close`, http-hello shuts down its
    /// write side and drains the client with a 250 ms read timeout of its
    /// own. A client that then stays connected, silent, does not keep the
    /// instance for the (10 minute) idle timeout.
    fn a_plugins_own_read_timeout_ends_its_connection(mode: Mode) {
        let host = Host::serving("http-hello", mode);
        let mut stream = host.connect();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send a request");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read the response");
        assert!(response.starts_with(b"HTTP/1.1 200"));
        host.expect_log("outcome=ok", SOON);
        drop(stream);
    }

    /// `finish` may do I/O for 5 s in all, not 5 s per read: a client that
    /// sends a byte every 300 ms is cut off while it still trickles.
    fn a_client_trickling_bytes_cannot_keep_finish_alive(mode: Mode) {
        let host = Host::serving(test_plugin("finish_drains.wasm"), mode);
        let mut stream = connect(host.addr());
        let deadline = Instant::now() + Duration::from_secs(20);
        let cut_while_trickling = loop {
            if host.stderr_contains("connection closed") || stream.write_all(b".").is_err() {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            stay_silent_for(Duration::from_millis(300));
        };
        assert!(
            cut_while_trickling,
            "finish still running after 20 s of trickling:\n{}",
            host.logs()
        );
        host.expect_log("connection closed", SOON);
    }

    /// At `--max-connections 2` a third client waits in the backlog, which
    /// is logged, and is served as soon as a slot frees; merely reaching
    /// the cap logs nothing.
    fn the_connection_cap_makes_extra_clients_wait_and_says_so_only_then(mode: Mode) {
        let host = Host::builder()
            .plugin("echo")
            .mode(mode)
            .args(&["--max-connections", "2"])
            .start();
        let mut first = host.connect();
        let mut second = host.connect();
        assert_eq!(round_trip(&mut first, b"one"), b"one");
        assert_eq!(round_trip(&mut second, b"two"), b"two");
        // Both accepted (the accept loop decides whether to warn as it
        // takes the last slot) and nobody waiting: no warning.
        host.expect_log_count("connection opened", 2, SOON);
        assert!(
            !host.logs().contains("connection limit reached"),
            "{}",
            host.logs()
        );
        // A third client waits in the backlog, and that is logged.
        let mut third = host.connect();
        third.write_all(b"three").expect("send three");
        host.expect_log("connection limit reached", SOON);
        // It is served as soon as a slot frees.
        drop(first);
        let mut reply = [0; 5];
        third.read_exact(&mut reply).expect("three back");
        assert_eq!(&reply, b"three");
    }
}

/// On an event loop guests yield to the loop at every epoch tick even with
/// no CPU budget to enforce: a neighbour is served while an instance
/// computes on the only loop thread.
#[test]
fn without_a_call_timeout_computing_plugins_still_yield_on_an_event_loop() {
    let host = Host::builder()
        .plugin(test_plugin("spin.wasm"))
        .mode(Mode::EventLoop)
        .args(&["--call-timeout", "0"])
        .start();
    let spinner = Spinner::start(host.addr());
    spinner.wait_until_spinning();
    let mut neighbour = host.connect();
    neighbour.write_all(b"e").expect("ask spin.wasm to echo");
    assert_eq!(round_trip(&mut neighbour, b"served"), b"served");
    assert!(spinner.is_open(), "{}", host.logs());
}

/// Three instances computing on one loop thread share it: each gets about
/// a third, so each needs about 3 s of wall time to use up a 1 s budget.
/// Charging them wall time would stop them all after 1 s.
#[test]
fn time_parked_for_neighbours_does_not_count_against_the_call_timeout() {
    let host = Host::builder()
        .plugin(test_plugin("spin.wasm"))
        .mode(Mode::EventLoop)
        .args(&["--call-timeout", "1s"])
        .start();
    let spinners: Vec<Spinner> = (0..3).map(|_| Spinner::start(host.addr())).collect();
    for spinner in spinners {
        let took = spinner.wait_closed();
        assert!(
            took >= Duration::from_secs(2),
            "stopped after {took:?}: charged for time parked"
        );
    }
    host.expect_log_count("call timeout", 3, SOON);
}
