//! Serving connections: the example plugins (as components and as native
//! libraries) behave the same on threads and on an event loop; bulk and
//! urgent data come through intact; many connections are served at once;
//! the bot and http-hello keep their protocol edges; a trap or panic
//! closes only its own connection; `finish` runs after a failing
//! `handle`; and a plugin built against the previous contract still works.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;

use crate::support::checks::{
    ASK_AGAIN, GREETING, check_bot, check_echo, check_http, read_response,
};
use crate::support::clients::echo_to_end;
use crate::support::{
    Host, Mode, SOON, START_TIMEOUT, checked, connect, example_plugin, lean_test_plugin,
    native_test_plugin, round_trip, test_plugin,
};

type Check = fn(&Host);

in_every_mode! {
    /// Every example, as a component and as a native library, passes its
    /// behavioural check; every connection ends `outcome=ok`; native
    /// plugins are flagged unsandboxed (and, on an event loop, still get a
    /// thread each: they block).
    fn every_example_behaves_the_same_as_wasm_and_native(mode: Mode) {
        let table: [(&str, bool, Check); 6] = [
            ("echo.wasm", false, check_echo),
            ("libecho.so", true, check_echo),
            ("bot10086.wasm", false, check_bot),
            ("libbot10086.so", true, check_bot),
            ("http-hello.wasm", false, check_http),
            ("libhttp_hello.so", true, check_http),
        ];
        for (file, native, check) in table {
            let host = Host::serving(example_plugin(file), mode);
            check(&host);
            host.expect_log("outcome=ok", SOON);
            let logs = host.logs();
            assert!(!logs.contains("panicked"), "{file} {mode:?}:\n{logs}");
            if native {
                assert!(
                    logs.contains("unsandboxed"),
                    "native plugins are flagged:\n{logs}"
                );
            }
        }
    }

    /// 10 MiB through the echo plugin while the client writes and reads at
    /// once: a bulk transfer, so reads after the first large one receive
    /// queued bytes straight into the guest's memory.
    fn ten_mib_round_trip_intact_while_reading_and_writing(mode: Mode) {
        let host = Host::serving("echo", mode);
        let stream = host.connect();
        let payload: Vec<u8> = (0..10 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let sent = payload.clone();
        let echoed = echo_to_end(&stream, move |writer| {
            writer.write_all(&sent).expect("send 10 MiB")
        });
        assert_eq!(echoed.len(), payload.len());
        assert!(echoed == payload, "10 MiB came back changed");
        let bytes = payload.len().to_string();
        host.expect_log(&format!("bytes_in={bytes} bytes_out={bytes}"), SOON);
    }

    /// An urgent (out-of-band) byte sent in the middle of a bulk transfer
    /// comes back in its place in the stream.
    fn urgent_data_stays_in_the_stream(mode: Mode) {
        let host = Host::serving("echo", mode);
        let stream = host.connect();
        // Large enough that the echo is in bulk mode when the urgent byte
        // arrives.
        let chunk: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 241) as u8).collect();
        let sent = chunk.clone();
        let echoed = echo_to_end(&stream, move |writer| {
            writer.write_all(&sent).expect("send the first chunk");
            let urgent = socket2::SockRef::from(&*writer).send_out_of_band(b"!");
            assert_eq!(urgent.expect("send the urgent byte"), 1);
            writer.write_all(&sent).expect("send the second chunk");
        });
        let mut expected = chunk.clone();
        expected.push(b'!');
        expected.extend_from_slice(&chunk);
        assert_eq!(echoed.len(), expected.len());
        assert!(echoed == expected, "the stream came back changed");
        host.expect_log("outcome=ok", SOON);
    }

    /// 200 clients at once, 20 round trips each, every echo their own.
    fn two_hundred_concurrent_echo_connections_are_all_correct(mode: Mode) {
        let host = Host::serving("echo", mode);
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

    /// 2000 connections opened before any is answered are all served.
    fn two_thousand_connections_at_once_are_all_served(mode: Mode) {
        let host = Host::serving("echo", mode);
        let addr = host.addr();
        let mut streams: Vec<TcpStream> = (0..2000).map(|_| connect(addr)).collect();
        for (i, stream) in streams.iter_mut().enumerate() {
            stream
                .write_all(format!("{i:05}").as_bytes())
                .expect("send the number");
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let mut reply = [0; 5];
            stream.read_exact(&mut reply).expect("the number back");
            assert_eq!(reply, format!("{i:05}").as_bytes());
        }
    }

    /// A component file serves as well as a built-in name, and IPv6 works.
    fn echo_serves_ipv6_and_component_files(mode: Mode) {
        let host = Host::serving(example_plugin("echo.wasm"), mode);
        assert_eq!(
            round_trip(&mut host.connect(), b"from a file"),
            b"from a file"
        );
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback on this machine: skipping the IPv6 half");
            return;
        }
        let v6 = Host::builder()
            .plugin("echo")
            .mode(mode)
            .args(&["--host", "::1"])
            .start();
        assert!(v6.addr().is_ipv6());
        assert_eq!(round_trip(&mut v6.connect(), b"over ipv6"), b"over ipv6");
    }

    /// A 100 KiB line is refused (not answered) and the bot serves the
    /// next client.
    fn the_bot_refuses_an_endless_line_and_keeps_serving(mode: Mode) {
        let host = Host::serving("bot10086", mode);
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
        lines.read_line(&mut greeting).expect("the next client's greeting");
        assert_eq!(greeting.trim_end(), GREETING);
    }

    /// `Connection: close`, HTTP/1.0 without keep-alive, and an oversized
    /// header each end the connection after the response.
    fn http_hello_honours_close_http10_and_header_limits(mode: Mode) {
        let host = Host::serving("http-hello", mode);
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

    /// curl (if installed) gets two responses over one connection.
    fn http_hello_works_with_curl(mode: Mode) {
        if std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("curl is not installed: skipping (apt-get install curl)");
            return;
        }
        let host = Host::serving("http-hello", mode);
        let url = format!("http://{}/", host.addr());
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", &url, &url])
            .output()
            .expect("run curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Hello, World!Hello, World!"
        );
    }

    /// The SDK's heap on lean builds starts in the initial memory: a
    /// connection that allocates 192 KiB does not grow the memory (growing
    /// costs the host two `mprotect` calls per connection), on a fresh
    /// slot or a recycled one.
    fn a_lean_plugin_allocates_without_growing_its_memory(mode: Mode) {
        let host = Host::serving(lean_test_plugin("heap_probe.wasm"), mode);
        for connection in 0..3 {
            let mut stream = host.connect();
            let mut report = String::new();
            stream.read_to_string(&mut report).expect("the probe's report");
            let pages: Vec<&str> = report.split_whitespace().take(3).collect();
            assert_eq!(pages.first(), Some(&"pages"), "{report:?}");
            assert_eq!(
                pages.get(1),
                pages.get(2),
                "connection {connection}: the memory grew ({report:?})"
            );
        }
    }

    /// A trap (a component's panic, std or lean build) or a native
    /// plugin's panic closes its connection, is logged with its message,
    /// and leaves the open neighbour and new connections served.
    fn a_trap_or_panic_closes_only_its_own_connection(mode: Mode) {
        let cases = [
            // The guest's panic message reaches the log through its stderr
            // (the WASI context built at its first WASI call).
            (
                test_plugin("trap.wasm"),
                &["outcome=trap", "asked to trap"][..],
            ),
            // A lean build has no std stderr; the SDK's panic hook writes
            // the message to WASI's stderr instead.
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
            let host = Host::serving(&plugin, mode);
            let mut good = host.connect();
            assert_eq!(round_trip(&mut good, b"hello"), b"hello");
            let mut bad = host.connect();
            bad.write_all(b"trap").expect("send trap");
            let mut rest = Vec::new();
            let _ = bad.read_to_end(&mut rest);
            assert!(rest.is_empty());
            for line in logged {
                host.expect_log(line, SOON);
            }
            assert_eq!(round_trip(&mut good, b"still here"), b"still here");
            assert_eq!(round_trip(&mut host.connect(), b"new one"), b"new one");
        }
    }

    /// `finish` runs after `handle` returned an error; a failing `setup`
    /// skips both.
    fn finish_runs_after_a_failing_handle_and_setup_errors_skip_both(mode: Mode) {
        let host = Host::serving(test_plugin("handle_fails.wasm"), mode);
        let mut text = String::new();
        host.connect()
            .read_to_string(&mut text)
            .expect("what handle and finish wrote");
        assert_eq!(text, "partial\nfinished\n");
        host.expect_log("handler gave up", SOON);
        assert!(host.stderr_contains("outcome=error"), "{}", host.logs());

        let host = Host::serving(test_plugin("setup_fails.wasm"), mode);
        let mut text = String::new();
        let _ = host.connect().read_to_string(&mut text);
        assert!(!text.contains("should not run"), "{text}");
        host.expect_log("no thanks", SOON);
        assert!(host.stderr_contains("outcome=setup-error"), "{}", host.logs());
    }

    /// A component built against the previous WIT (`connections@0.1.0`) is
    /// described by `check` and serves like the current echo.
    fn a_plugin_built_against_the_previous_contract_still_works(mode: Mode) {
        let plugin = test_plugin("old_wit_echo.wasm");
        let stdout = checked(&plugin, START_TIMEOUT);
        assert!(
            stdout.contains("plughost:handler/connections@0.1.0"),
            "{stdout}"
        );
        check_echo(&Host::serving(&plugin, mode));
    }
}

/// One event-loop thread interleaves 500 open connections (each instance
/// waiting in `read`) instead of taking a thread each.
#[test]
fn one_event_loop_serves_many_connections_at_once() {
    let host = Host::serving("echo", Mode::EventLoop);
    let mut streams: Vec<TcpStream> = (0..500).map(|_| host.connect()).collect();
    // Every connection is open before any is answered.
    for (i, stream) in streams.iter_mut().enumerate() {
        stream
            .write_all(format!("{i:04}").as_bytes())
            .expect("send the number");
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut reply = [0; 4];
        stream.read_exact(&mut reply).expect("the number back");
        assert_eq!(reply, format!("{i:04}").as_bytes());
    }
    let threads = host.thread_count();
    assert!(
        threads < 50,
        "500 connections on one event loop used {threads} threads"
    );
}

/// One request on a fresh connection: status, headers, body, and whether
/// the host closed the connection after it.
fn http_exchange(host: &Host, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>, bool) {
    let stream = host.connect();
    (&stream).write_all(request).expect("send the request");
    let mut reader = BufReader::new(stream);
    let (status, headers, body) = read_response(&mut reader);
    let mut rest = Vec::new();
    let closed = reader.read_to_end(&mut rest).is_ok() && rest.is_empty();
    (status, headers, body, closed)
}
