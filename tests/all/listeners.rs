//! Listeners: several in one process (TCP on IPv4 and IPv6, a Unix
//! socket) each with its own plugin, reported by the admin listener; UDP
//! datagrams for datagram plugins; two processes sharing a port with
//! SO_REUSEPORT; and address problems refused clearly.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use crate::support::admin::{admin_addr, status, wait_for_metric};
use crate::support::checks::{GREETING, TRANSFER};
use crate::support::{Host, Mode, SOON, connect, refused, round_trip, run_host, temp_dir};

#[test]
fn one_process_serves_several_listeners_with_their_own_plugins() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipping (the bot listens on [::1])");
        return;
    }
    let config = crate::support::config_file(
        "two-listeners",
        "admin = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\n\
         [[listener]]\nname = \"bot\"\naddress = \"[::1]:0\"\nplugin = \"bot10086\"\n",
    );
    let host = Host::builder().config(&config).mode(Mode::Threads).start();
    let echo = host.listener_addr("echo");
    let bot = host.listener_addr("bot");
    assert!(bot.is_ipv6());
    let mut greeting = String::new();
    BufReader::new(connect(bot))
        .read_line(&mut greeting)
        .expect("the bot's greeting");
    assert_eq!(greeting.trim_end(), GREETING);
    let mut stream = connect(echo);
    assert_eq!(round_trip(&mut stream, b"ping"), b"ping");

    // The admin listener reports both, with the traffic just sent.
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
    let listeners = status["listeners"].as_array().expect("a listeners array");
    assert_eq!(listeners.len(), 2, "{status}");
    assert!(
        status["uptime_seconds"].as_f64().expect("a numeric uptime") > 0.0,
        "{status}"
    );
}

#[test]
fn a_tcp_echo_and_a_unix_socket_bot_are_served_at_once() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let dir = temp_dir("unix");
    let socket = dir.join("bot.sock");
    // A stale socket file, as a crashed process leaves behind.
    drop(UnixListener::bind(&socket).expect("bind a stale socket"));
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n\n\
             [[listener]]\nname = \"bot\"\naddress = \"unix:{}\"\nplugin = \"bot10086\"\n",
            socket.display()
        ),
    )
    .expect("write host.toml");
    let mut host = Host::builder().config(&config).mode(Mode::Threads).start();
    host.expect_log("removed stale socket", SOON);
    let echo = host.listener_addr("echo");
    host.expect_log(&format!("listening on unix:{}", socket.display()), SOON);

    let bot = UnixStream::connect(&socket).expect("connect to the Unix socket");
    bot.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set read timeout");
    let mut writer = bot.try_clone().expect("clone the stream");
    let mut lines = BufReader::new(bot);
    let mut line = String::new();
    lines.read_line(&mut line).expect("the bot's greeting");
    assert_eq!(line.trim_end(), GREETING);
    let mut stream = connect(echo);
    assert_eq!(round_trip(&mut stream, b"both at once"), b"both at once");
    writer.write_all(b"0").expect("send 0 to the bot");
    line.clear();
    lines.read_line(&mut line).expect("the bot's transfer line");
    assert_eq!(line.trim_end(), TRANSFER);
    assert!(host.stderr_contains("peer=unix:"), "{}", host.logs());
    drop((writer, lines, stream));

    host.terminate();
    assert!(
        host.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        host.logs()
    );
    assert!(
        !socket.exists(),
        "the socket file is removed on a clean exit"
    );
}

#[test]
fn udp_datagrams_are_echoed_by_a_datagram_plugin() {
    use std::net::UdpSocket;
    let host = Host::builder()
        .plugin("udp-echo")
        .udp()
        .mode(Mode::Threads)
        .start();
    let server = host.addr();
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");
    for message in [
        &b"hello"[..],
        &[0u8, 255, 1, 254][..],
        &vec![b'x'; 60_000][..],
    ] {
        client.send_to(message, server).expect("send a datagram");
        let mut buf = vec![0; 65_536];
        let (len, from) = client.recv_from(&mut buf).expect("the echoed datagram");
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
fn two_processes_share_a_port_with_reuse_port() {
    let first = Host::builder()
        .plugin("echo")
        .mode(Mode::Threads)
        .args(&["--reuse-port"])
        .start();
    let port = first.addr().port();
    let second = Host::builder()
        .plugin("http-hello")
        .port(port)
        .mode(Mode::Threads)
        .args(&["--reuse-port"])
        .start();
    assert_eq!(first.addr(), second.addr());
    // Without the option the second bind fails with a clear message.
    let port = port.to_string();
    let out = run_host(&["run", "--plugin", "echo", "--port", &port]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn address_problems_are_refused_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let port = taken
        .local_addr()
        .expect("the taken port")
        .port()
        .to_string();
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
