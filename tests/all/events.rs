//! `--event-loops`: connections served as tasks on a few threads instead of
//! a thread each. The examples behave exactly as on threads; a plugin that
//! computes cannot starve the connections sharing its loop; timeouts,
//! never-reading clients and reloads work the same (the SIGTERM drain is
//! tested on both in `foundation`); native plugins still get a thread each.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::behaviour::{check_bot, check_echo, check_http};
use crate::support::{
    Host, closed_after, connect, example_plugin, on_one_loop, refused, round_trip, run_host,
    temp_dir, test_plugin, write_without_reading,
};

type Check = fn(&Host);

#[test]
fn every_example_behaves_the_same_on_an_event_loop() {
    let table: [(&str, Check); 4] = [
        ("echo.wasm", check_echo),
        ("bot10086.wasm", check_bot),
        ("http-hello.wasm", check_http),
        // Native plugins block: they fall back to a thread per connection.
        ("libecho.so", check_echo),
    ];
    for (file, check) in table {
        let plugin = example_plugin(file);
        let host = on_one_loop(plugin.to_str().unwrap(), &[]);
        check(&host);
        assert!(
            host.wait_for_log("outcome=ok", Duration::from_secs(5)),
            "{file}:\n{}",
            host.logs()
        );
        host.assert_no_host_panic(file);
    }
}

#[test]
fn one_loop_serves_many_connections_at_once() {
    let host = on_one_loop("echo", &[]);
    let mut streams: Vec<TcpStream> = (0..500).map(|_| host.connect()).collect();
    // Every connection is open (its instance waiting in `read`) before any
    // is answered: one thread interleaves them all.
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.write_all(format!("{i:04}").as_bytes()).unwrap();
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut reply = [0; 4];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply, format!("{i:04}").as_bytes());
    }
    let threads = fs::read_dir(format!("/proc/{}/task", host.pid()))
        .unwrap()
        .count();
    assert!(
        threads < 50,
        "500 connections on one event loop used {threads} threads"
    );
}

#[test]
fn a_computing_plugin_does_not_starve_its_neighbours() {
    let plugin = test_plugin("spin.wasm");
    let host = on_one_loop(plugin.to_str().unwrap(), &["--call-timeout", "2s"]);
    let addr = host.addr();
    // Two spinning instances on the only loop thread...
    let spinners = spinners(addr, 2);
    thread::sleep(Duration::from_millis(300));
    // ...and a well-behaved connection on the same loop is still served,
    // long before the spinners hit their call timeout.
    let started = Instant::now();
    let mut neighbour = connect(addr);
    neighbour.write_all(b"e").unwrap();
    for round in 0..5 {
        let message = format!("round {round}");
        assert_eq!(
            round_trip(&mut neighbour, message.as_bytes()),
            message.as_bytes()
        );
    }
    let served_in = started.elapsed();
    assert!(
        served_in < Duration::from_millis(1500),
        "the neighbour waited {served_in:?} behind the spinning plugins"
    );
    for spinner in spinners {
        let took = spinner.join().unwrap();
        assert!(
            took < Duration::from_secs(10),
            "spinner closed after {took:?}"
        );
    }
    host.expect_log("call timeout", Duration::from_secs(5));
}

#[test]
fn idle_clients_are_closed_after_the_idle_timeout() {
    let host = on_one_loop("echo", &["--idle-timeout", "1s"]);
    let mut idle = host.connect();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // A busy connection is not: the timeout bounds silence, not life.
    let mut busy = host.connect();
    for round in 0..6 {
        thread::sleep(Duration::from_millis(300));
        let message = format!("still busy {round}");
        assert_eq!(
            round_trip(&mut busy, message.as_bytes()),
            message.as_bytes()
        );
    }
}

#[test]
fn a_plugins_own_read_timeout_fires_on_the_loop() {
    // After answering `Connection: close`, http-hello shuts down its write
    // side and drains the client with a 250 ms read timeout. A client that
    // then stays connected, silent, must not keep the instance for the
    // (10 minute) idle timeout.
    let host = on_one_loop("http-hello", &[]);
    let mut stream = host.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));
    host.expect_log("outcome=ok", Duration::from_secs(3));
    drop(stream);
}

#[test]
fn a_client_that_never_reads_is_given_up_on() {
    let host = on_one_loop("echo", &["--idle-timeout", "2s"]);
    let mut stream = host.connect();
    write_without_reading(&mut stream);
    host.expect_log("outcome=", Duration::from_secs(15));
    let mut other = host.connect();
    assert_eq!(round_trip(&mut other, b"others fine"), b"others fine");
}

#[test]
fn a_reload_keeps_open_event_loop_connections_on_their_version() {
    let dir = temp_dir("events-reload");
    let plugin = dir.join("plugin.wasm");
    fs::write(&plugin, fs::read(example_plugin("echo.wasm")).unwrap()).unwrap();
    let host = on_one_loop(plugin.to_str().unwrap(), &["--watch"]);
    host.expect_log("watching", Duration::from_secs(10));
    let mut old = host.connect();
    assert_eq!(round_trip(&mut old, b"hello"), b"hello");
    let staged = dir.join("staged.wasm");
    fs::write(&staged, fs::read(test_plugin("shout.wasm")).unwrap()).unwrap();
    fs::rename(&staged, &plugin).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut fresh = host.connect();
        if round_trip(&mut fresh, b"abc") == b"ABC" {
            break;
        }
        assert!(Instant::now() < deadline, "{}", host.logs());
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(round_trip(&mut old, b"still old"), b"still old");
}

#[test]
fn hostile_plugins_on_an_event_loop_are_stopped_with_their_reason() {
    let table = [
        ("trap.wasm", "", "trap", "outcome=trap"),
        ("hog.wasm", "max_memory = \"16MiB\"", "x", "memory limit"),
        ("recurse.wasm", "", "x", "outcome=trap"),
        (
            "finish_hangs.wasm",
            "call_timeout = \"1s\"",
            "x",
            "call timeout",
        ),
    ];
    for (file, limits, send, expected) in table {
        let dir = temp_dir("events-hostile");
        let config = dir.join("host.toml");
        fs::write(
            &config,
            format!(
                "[[listener]]\nname = \"hostile\"\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n\
                 event_loops = 1\n{limits}\n\n\
                 [[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\
                 event_loops = 1\n",
                test_plugin(file).display()
            ),
        )
        .unwrap();
        let host = Host::start(&["run", "--config", config.to_str().unwrap()]);
        let mut hostile = connect(host.listener_addr("hostile"));
        hostile.write_all(send.as_bytes()).unwrap();
        let _ = hostile.read_to_end(&mut Vec::new());
        assert!(
            host.wait_for_log(expected, Duration::from_secs(10)),
            "{file}:\n{}",
            host.logs()
        );
        let mut echo = connect(host.listener_addr("echo"));
        assert_eq!(round_trip(&mut echo, b"still here"), b"still here");
        // The hostile listener's loop survived its instance too.
        let _again = connect(host.listener_addr("hostile"));
        assert!(
            host.wait_for_log("connection opened", Duration::from_secs(5)),
            "{file}:\n{}",
            host.logs()
        );
        host.assert_no_host_panic(file);
    }
}

#[test]
fn absurd_event_loop_counts_are_refused_clearly() {
    let out = run_host(&["run", "--plugin", "echo", "--event-loops", "100000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("0..=256"), "{stderr}");

    let dir = temp_dir("events-too-many");
    let config = dir.join("host.toml");
    fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\nevent_loops = 3000\n",
    )
    .unwrap();
    let line = refused(&["run", "--config", config.to_str().unwrap()]);
    assert!(line.contains("3000 event loops"), "{line}");
}

/// Connects `count` clients that each send `x` to a spin.wasm host at
/// `addr` (so each instance computes forever) and returns the threads that
/// report how long until the host closed them.
fn spinners(addr: std::net::SocketAddr, count: usize) -> Vec<thread::JoinHandle<Duration>> {
    (0..count)
        .map(|_| thread::spawn(move || closed_after(addr)))
        .collect()
}

#[test]
fn without_a_call_timeout_computing_plugins_still_yield() {
    let plugin = test_plugin("spin.wasm");
    let host = on_one_loop(plugin.to_str().unwrap(), &["--call-timeout", "0"]);
    let _spinning = spinners(host.addr(), 1);
    thread::sleep(Duration::from_millis(300));
    let mut neighbour = connect(host.addr());
    neighbour.write_all(b"e").unwrap();
    assert_eq!(round_trip(&mut neighbour, b"served"), b"served");
}

#[test]
fn time_parked_for_neighbours_does_not_count_against_the_call_timeout() {
    // Three instances computing on one loop thread share it: each gets
    // about a third, so each needs about 3 s of wall time to use up a 1 s
    // budget. Charging them wall time would stop them all after 1 s.
    let plugin = test_plugin("spin.wasm");
    let host = on_one_loop(plugin.to_str().unwrap(), &["--call-timeout", "1s"]);
    for spinner in spinners(host.addr(), 3) {
        let took = spinner.join().unwrap();
        assert!(
            took >= Duration::from_secs(2),
            "stopped after {took:?}: charged for time parked"
        );
    }
    assert!(host.stderr_contains("call timeout"), "{}", host.logs());
}

#[test]
fn the_flag_overrides_the_files_event_loops_even_with_zero() {
    let dir = temp_dir("events-override");
    let config = dir.join("host.toml");
    fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\nevent_loops = 1\n",
    )
    .unwrap();
    let threads_for = |extra: &[&str]| {
        let mut args = vec!["run", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let host = Host::start(&args);
        let mut open: Vec<TcpStream> = (0..20).map(|_| host.connect()).collect();
        for stream in &mut open {
            assert_eq!(round_trip(stream, b"x"), b"x");
        }
        fs::read_dir(format!("/proc/{}/task", host.pid()))
            .unwrap()
            .count()
    };
    let on_the_loop = threads_for(&[]);
    let on_threads = threads_for(&["--event-loops", "0"]);
    assert!(
        on_threads >= on_the_loop + 15,
        "--event-loops 0 did not give each connection a thread \
         ({on_threads} threads vs {on_the_loop} on the file's loop)"
    );
}

#[test]
fn swapping_in_a_native_plugin_on_an_event_loop_listener_warns_and_serves() {
    let dir = temp_dir("events-to-native");
    let plugin = dir.join("plugin");
    fs::write(&plugin, fs::read(example_plugin("echo.wasm")).unwrap()).unwrap();
    let host = on_one_loop(plugin.to_str().unwrap(), &[]);
    assert_eq!(round_trip(&mut host.connect(), b"wasm"), b"wasm");
    fs::write(&plugin, fs::read(example_plugin("libecho.so")).unwrap()).unwrap();
    host.signal(libc::SIGHUP);
    host.expect_log(
        "cannot run on this listener's event loops",
        Duration::from_secs(10),
    );
    host.expect_log("SIGHUP: swapped", Duration::from_secs(10));
    assert_eq!(round_trip(&mut host.connect(), b"native"), b"native");
}
