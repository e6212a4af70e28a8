//! TLS termination (`--tls-cert`/`--tls-key`, `[listener.tls]`): the
//! plugin sees plaintext in every serving mode; certificates are chosen by
//! SNI and reloaded without dropping a connection; clients that do not
//! finish a handshake are closed, logged and counted; bad certificate
//! files stop the start with one line.

use std::net::Shutdown;
use std::thread;

use crate::support::admin::{admin_addr, wait_for_metric};
use crate::support::tls::{TestCa, TlsClient};
use crate::support::{Host, Mode, SOON, config_file, connect, refused, test_plugin, utf8};

/// A host serving `plugin` in `mode` over TLS with `ca`'s certificate for
/// `localhost` (plus `extra` flags).
fn tls_host(ca: &TestCa, plugin: &str, mode: Mode, extra: &[&str]) -> Host {
    let issued = ca.issue("server", &["localhost"]);
    let mut args = issued.flags();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Host::builder()
        .plugin(plugin)
        .mode(mode)
        .args(&args)
        .start()
}

/// The protocol-world test plugin (`proto_faults.wasm`, its commands in
/// tests/plugins/README.md) over TLS, and a client past its greeting.
fn faults_over_tls(ca: &TestCa) -> (Host, TlsClient) {
    let host = tls_host(
        ca,
        utf8(&test_plugin("proto_faults.wasm")),
        Mode::Shared,
        &[],
    );
    let mut client = ca.connect(host.addr(), "localhost");
    assert_eq!(client.line(), "hello 1");
    (host, client)
}

/// One MiB through an echo plugin, then a clean end of the stream.
fn echo_a_mebibyte(client: TlsClient) {
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut client = client;
    // Slices of 256 KiB, each read back before the next, so neither
    // side's buffers fill.
    for chunk in data.chunks(256 * 1024) {
        client.send(chunk);
        let back = client.read_exactly(chunk.len());
        assert!(back == chunk, "the echo differs");
    }
    client.finish_sending();
    assert!(client.read_to_end().is_empty(), "nothing after the echo");
}

in_every_mode! {
    fn a_handler_plugin_sees_plaintext_and_a_mebibyte_comes_back(mode: Mode) {
        let ca = TestCa::new("tls-echo");
        let host = tls_host(&ca, "echo", mode, &[]);
        let mut client = ca.connect(host.addr(), "localhost");
        client.say("hello over TLS");
        assert_eq!(client.line(), "hello over TLS");
        echo_a_mebibyte(ca.connect(host.addr(), "localhost"));
        host.expect_log("outcome=ok", SOON);
    }
}

#[test]
fn a_shared_instance_sees_plaintext_and_a_mebibyte_comes_back() {
    let ca = TestCa::new("tls-proto-echo");
    let host = tls_host(&ca, "proto-echo", Mode::Shared, &[]);
    let mut client = ca.connect(host.addr(), "localhost");
    client.say("shared");
    assert_eq!(client.line(), "shared");
    echo_a_mebibyte(ca.connect(host.addr(), "localhost"));
}

#[test]
fn a_request_in_the_handshakes_last_flight_is_answered() {
    // The client's first bytes come with its Finished message: the
    // handshake decrypts them before the plugin runs, with nothing left on
    // the socket to announce them.
    for mode in [Mode::Threads, Mode::EventLoop] {
        let ca = TestCa::new("tls-early");
        let host = tls_host(&ca, "http-hello", mode, &[]);
        check_http_over_tls(&ca, &host);
    }
    let ca = TestCa::new("tls-early-shared");
    let host = tls_host(&ca, "proto-http-hello", Mode::Shared, &[]);
    check_http_over_tls(&ca, &host);
}

/// A request sent in the same write as the end of the handshake.
fn check_http_over_tls(ca: &TestCa, host: &Host) {
    let tcp = connect(host.addr());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut session = rustls::ClientConnection::new(ca.client_config(&[]), name).unwrap();
    // Queue the request before the handshake is done: rustls sends it
    // right after the client's Finished.
    std::io::Write::write_all(
        &mut session.writer(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut stream = rustls::StreamOwned::new(session, tcp);
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("Hello, World!"), "{response}");
}

#[test]
fn a_plaintext_client_is_closed_logged_and_counted_and_others_are_served() {
    let ca = TestCa::new("tls-plaintext");
    let host = tls_host(&ca, "echo", Mode::EventLoop, &["--admin", "127.0.0.1:0"]);
    let mut plain = connect(host.addr());
    std::io::Write::write_all(&mut plain, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    // The host answers with an alert record and closes; it never echoes.
    let _ = std::io::Read::read_to_end(&mut plain, &mut rest);
    assert!(!rest.windows(3).any(|w| w == b"GET"), "nothing echoed");
    host.expect_log(
        "TLS handshake failed: the client does not speak TLS (plaintext on a TLS listener?)",
        SOON,
    );
    let admin = admin_addr(&host);
    wait_for_metric(admin, "plughost_tls_handshakes_total{listener=");
    let metrics = wait_for_metric(admin, "result=\"failed\"} 1");
    assert!(!metrics.contains("result=\"ok\""), "{metrics}");
    let mut client = ca.connect(host.addr(), "localhost");
    client.say("still serving");
    assert_eq!(client.line(), "still serving");
    wait_for_metric(admin, "result=\"ok\"} 1");
    host.assert_no_host_panic("a plaintext client");
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_cut_at_the_timeout() {
    let ca = TestCa::new("tls-silent");
    let host = tls_host(
        &ca,
        "echo",
        Mode::EventLoop,
        &["--tls-handshake-timeout", "300ms", "--admin", "127.0.0.1:0"],
    );
    let mut silent = connect(host.addr());
    let mut buf = [0u8; 1];
    // The host closes it: end of stream, or a reset.
    let read = std::io::Read::read(&mut silent, &mut buf);
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    host.expect_log("TLS handshake failed: not done within 300ms", SOON);
    wait_for_metric(admin_addr(&host), "result=\"timeout\"} 1");
}

#[test]
fn certificates_are_chosen_by_the_name_the_client_asks_for() {
    let ca = TestCa::new("tls-sni");
    let first = ca.issue("first", &["a.test"]);
    let second = ca.issue("second", &["b.test", "*.c.test"]);
    let mut args = first.flags();
    args.extend(second.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = Host::builder()
        .plugin("echo")
        .mode(Mode::EventLoop)
        .args(&args)
        .start();
    let served = |name: &str| ca.connect(host.addr(), name).server_certificate();
    assert_eq!(served("a.test"), first.der);
    assert_eq!(served("b.test"), second.der);
    assert_eq!(served("www.c.test"), second.der, "a wildcard name");
    host.expect_log("tls: certificate", SOON);
    assert!(
        host.stderr_contains("for b.test, *.c.test"),
        "{}",
        host.logs()
    );
    // A name no certificate has gets the default, which the client
    // rejects (it is not issued for that name).
    let refused = TlsClient::over(connect(host.addr()), ca.client_config(&[]), "d.test");
    assert!(
        refused.is_err(),
        "the default certificate is not for d.test"
    );
}

#[test]
fn alpn_is_negotiated_and_a_client_offering_none_of_it_is_refused() {
    let ca = TestCa::new("tls-alpn");
    let host = tls_host(&ca, "echo", Mode::EventLoop, &["--tls-alpn", "echo/1"]);
    let tcp = connect(host.addr());
    let client = TlsClient::over(tcp, ca.client_config(&["other", "echo/1"]), "localhost").unwrap();
    assert_eq!(client.alpn().as_deref(), Some("echo/1"));
    let tcp = connect(host.addr());
    let refused = TlsClient::over(tcp, ca.client_config(&["h2"]), "localhost");
    assert!(refused.is_err());
    host.expect_log(
        "offered no application protocol (ALPN) this listener serves",
        SOON,
    );
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_keep_talking() {
    let ca = TestCa::new("tls-reload");
    let first = ca.issue("server", &["localhost"]);
    let args = first.flags();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = Host::builder()
        .plugin("echo")
        .mode(Mode::EventLoop)
        .args(&args)
        .start();
    let mut open = ca.connect(host.addr(), "localhost");
    open.say("before");
    assert_eq!(open.line(), "before");

    // The same files, a new certificate.
    let second = ca.issue("server", &["localhost"]);
    host.signal(libc::SIGHUP);
    host.expect_log("tls: reloaded (SIGHUP)", SOON);
    assert_eq!(
        ca.connect(host.addr(), "localhost").server_certificate(),
        second.der
    );
    open.say("during");
    assert_eq!(open.line(), "during", "a connection from before the reload");

    // A broken file keeps the certificate in force.
    std::fs::write(&second.cert, "not a certificate").unwrap();
    host.signal(libc::SIGHUP);
    host.expect_log(
        "tls: certificates not reloaded (SIGHUP), the ones in force stay",
        SOON,
    );
    assert_eq!(
        ca.connect(host.addr(), "localhost").server_certificate(),
        second.der
    );
    open.say("after");
    assert_eq!(open.line(), "after");
}

#[test]
fn under_watch_a_changed_certificate_file_is_reloaded() {
    let ca = TestCa::new("tls-watch");
    let host = tls_host(&ca, "echo", Mode::EventLoop, &["--watch"]);
    let renewed = ca.issue("server", &["localhost"]);
    host.expect_log("tls: reloaded (file changed)", SOON);
    // The key file may be written after the certificate: wait for the
    // reload that saw both.
    let deadline = std::time::Instant::now() + SOON;
    while ca.connect(host.addr(), "localhost").server_certificate() != renewed.der {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate is served"
        );
        host.wait_for_log_count("tls: reloaded (file changed)", 2, SOON / 10);
    }
}

#[test]
fn a_configuration_file_names_certificates_relative_to_itself() {
    let ca = TestCa::new("tls-config");
    ca.issue("site", &["localhost"]);
    let config = ca.dir().join("host.toml");
    std::fs::write(
        &config,
        r#"
[[listener]]
address = "127.0.0.1:0"
plugin = "echo"
[listener.tls]
cert = "site.pem"
key = "site.key"
alpn = ["echo/1"]
"#,
    )
    .unwrap();
    let host = Host::builder()
        .config(&config)
        .mode(Mode::EventLoop)
        .start();
    let client = TlsClient::over(
        connect(host.addr()),
        ca.client_config(&["echo/1"]),
        "localhost",
    )
    .unwrap();
    assert_eq!(client.alpn().as_deref(), Some("echo/1"));
}

#[test]
fn behind_a_balancer_the_proxy_header_comes_first_then_the_handshake() {
    let ca = TestCa::new("tls-proxy");
    let host = tls_host(
        &ca,
        utf8(&test_plugin("proto_faults.wasm")),
        Mode::Shared,
        &["--proxy-protocol", "127.0.0.0/8"],
    );
    let mut tcp = connect(host.addr());
    std::io::Write::write_all(&mut tcp, b"PROXY TCP4 192.0.2.7 127.0.0.1 40123 8000\r\n").unwrap();
    let mut client = TlsClient::over(tcp, ca.client_config(&[]), "localhost").unwrap();
    assert_eq!(client.line(), "hello 1");
    client.say("peer");
    assert_eq!(client.line(), "peer 192.0.2.7:40123");
}

#[test]
fn bad_certificate_files_stop_the_start_with_one_line() {
    let ca = TestCa::new("tls-bad");
    let good = ca.issue("good", &["localhost"]);
    let other = ca.issue("other", &["localhost"]);
    let expired = ca.issue_expired("expired", &["localhost"]);
    let missing = ca.dir().join("missing.pem");
    let run = |cert: &std::path::Path, key: &std::path::Path| {
        refused(&[
            "run",
            "--port",
            "0",
            "--tls-cert",
            utf8(cert),
            "--tls-key",
            utf8(key),
        ])
    };
    let line = run(&missing, &good.key);
    assert!(
        line.contains("cannot read the TLS certificate") && line.contains("missing.pem"),
        "{line}"
    );
    let line = run(&good.cert, &other.key);
    assert!(
        line.contains("does not belong to the certificate"),
        "{line}"
    );
    let line = run(&expired.cert, &expired.key);
    assert!(line.contains("expired on"), "{line}");
    let line = run(&good.key, &good.key);
    assert!(line.contains("holds no certificate"), "{line}");
    let line = refused(&[
        "run",
        "--udp",
        "--port",
        "0",
        "--plugin",
        "udp-echo",
        "--tls-cert",
        utf8(&good.cert),
        "--tls-key",
        utf8(&good.key),
    ]);
    assert!(line.contains("stream listeners"), "{line}");
    let config = config_file(
        "tls-bad-config",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n[listener.tls]\ncert = \"x.pem\"\n",
    );
    let line = refused(&["run", "--config", utf8(&config)]);
    assert!(line.contains("`cert` is given without its `key`"), "{line}");
}

#[test]
fn a_client_that_resets_mid_handshake_costs_nothing() {
    let ca = TestCa::new("tls-reset");
    let host = tls_host(&ca, "echo", Mode::EventLoop, &[]);
    for _ in 0..20 {
        let tcp = connect(host.addr());
        // Half a ClientHello, then gone.
        std::io::Write::write_all(&mut &tcp, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        let _ = tcp.shutdown(Shutdown::Both);
    }
    host.expect_log_count("TLS handshake failed", 20, SOON);
    let handles: Vec<_> = (0..4)
        .map(|n| {
            let addr = host.addr();
            let config = ca.client_config(&[]);
            thread::spawn(move || {
                let mut client = TlsClient::over(connect(addr), config, "localhost").unwrap();
                client.say(&format!("client {n}"));
                assert_eq!(client.line(), format!("client {n}"));
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    host.assert_no_host_panic("clients resetting mid-handshake");
}

#[test]
fn a_handler_plugin_is_told_what_was_negotiated() {
    let ca = TestCa::new("tls-info");
    let plugin = test_plugin("tls_probe.wasm");
    for mode in [Mode::Threads, Mode::EventLoop] {
        let host = tls_host(&ca, utf8(&plugin), mode, &["--tls-alpn", "echo/1"]);
        let tcp = connect(host.addr());
        let mut client = TlsClient::over(tcp, ca.client_config(&["echo/1"]), "localhost").unwrap();
        let line = client.line();
        assert!(line.starts_with("tls TLSv1.3 TLS13_"), "{line}");
        assert!(line.ends_with(" localhost echo/1"), "{line}");
    }
    let plain = Host::builder()
        .plugin(&plugin)
        .mode(Mode::EventLoop)
        .start();
    let mut reader = std::io::BufReader::new(connect(plain.addr()));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line, "tls none\n");
}

#[test]
fn a_shared_instance_is_told_what_was_negotiated() {
    let ca = TestCa::new("tls-info-shared");
    let (_host, mut client) = faults_over_tls(&ca);
    client.say("tls");
    let line = client.line();
    assert!(line.starts_with("tls TLSv1.3 TLS13_"), "{line}");
    assert!(line.ends_with(" localhost -"), "{line}");
}

#[test]
fn a_client_that_reads_late_gets_its_whole_echo_from_a_shared_instance() {
    // A client with a 4 KiB receive buffer sends 128 KiB before reading:
    // proto-echo's echo backs up on the host (TLS records and its own
    // buffer), so it pauses reading; once the client reads, the output
    // drains and the instance reads and echoes the rest. (The unit test
    // `output_left_in_tls_records_is_reported_drained_once_sent` pins the
    // case of records alone.)
    let ca = TestCa::new("tls-drained");
    let host = tls_host(&ca, "proto-echo", Mode::Shared, &[]);
    let tcp = crate::support::clients::connect_with_small_buffer(host.addr());
    let mut client = TlsClient::over(tcp, ca.client_config(&[]), "localhost").unwrap();
    let data: Vec<u8> = (0..128 * 1024u32).map(|i| (i % 253) as u8).collect();
    client.send(&data);
    let back = client.read_exactly(data.len());
    assert!(back == data, "the whole echo came back");
}

#[test]
fn a_connection_cut_short_ends_without_close_notify() {
    // A trap closes the shared instance's connections: the client must be
    // able to tell that from an orderly end (which sends `close_notify`,
    // as the mebibyte tests check).
    let ca = TestCa::new("tls-cut");
    let (_host, mut client) = faults_over_tls(&ca);
    client.say("trap");
    let end = client.try_read_to_end();
    let err = end.expect_err("no close_notify after a trap");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
}

#[test]
fn a_unix_socket_listener_terminates_tls_too() {
    use std::io::{BufRead, Write};
    let ca = TestCa::new("tls-unix");
    let issued = ca.issue("server", &["localhost"]);
    let socket = ca.dir().join("tls.sock");
    let config = ca.dir().join("host.toml");
    std::fs::write(
        &config,
        format!(
            // The TCP listener first: the test harness finds the host by it.
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\
             [[listener]]\naddress = \"unix:{}\"\nplugin = \"echo\"\n\
             [listener.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let host = Host::builder()
        .config(&config)
        .mode(Mode::EventLoop)
        .start();
    host.expect_log(&format!("listening on unix:{}", socket.display()), SOON);
    let unix = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    unix.set_read_timeout(Some(crate::support::IO_TIMEOUT))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(ca.client_config(&[]), name).unwrap();
    let mut stream = std::io::BufReader::new(rustls::StreamOwned::new(session, unix));
    stream.get_mut().write_all(b"over a Unix socket\n").unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    assert_eq!(line, "over a Unix socket\n");
    assert_eq!(
        stream.get_ref().conn.peer_certificates().unwrap()[0],
        issued.der
    );
}

#[test]
fn host_check_reads_a_listeners_certificates_too() {
    let ca = TestCa::new("tls-check");
    ca.issue("site", &["localhost", "www.test"]);
    ca.issue_expired("old", &["localhost"]);
    let config = |cert: &str| {
        let path = ca.dir().join(format!("{cert}.toml"));
        std::fs::write(
            &path,
            format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\
                 [listener.tls]\ncert = \"{cert}.pem\"\nkey = \"{cert}.key\"\n"
            ),
        )
        .unwrap();
        path
    };
    let good = config("site");
    let out = crate::support::run_host(&["check", "--config", utf8(&good)]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("tls:      certificate"), "{report}");
    assert!(report.contains("for localhost, www.test"), "{report}");
    let line = refused(&["check", "--config", utf8(&config("old"))]);
    assert!(line.contains("expired on"), "{line}");
}
