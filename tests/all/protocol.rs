//! The protocol world: one instance serving many connections. The
//! built-in `chat`, `proto-echo` and `proto-http-hello` over real
//! sockets; a shared instance's faults (a callback that loops, traps or
//! eats memory; an `init` that fails) and their blast radius; timers;
//! reload under a live chat; drain, idle timeout, access rules and
//! metrics as for per-connection plugins.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use crate::support::admin::{admin_addr, wait_for_metric};
use crate::support::checks::{check_echo, check_http};
use crate::support::clients::echo_to_end;
use crate::support::protocol::{
    LineClient, check_chat, check_chat_cuts_a_client_that_never_reads,
    check_chat_cuts_an_endless_line,
};
use crate::support::{Host, Mode, SOON, rebuilt, run_host, temp_dir, test_plugin};

/// The fault-injecting test plugin (`tests/plugins/proto-faults`).
fn faults() -> std::path::PathBuf {
    test_plugin("proto_faults.wasm")
}

#[test]
fn the_chat_room_names_relays_renames_and_announces() {
    let host = Host::serving("chat", Mode::Shared);
    check_chat(&host);
    host.assert_no_host_panic("chat");
}

#[test]
fn the_chat_cuts_a_client_that_never_reads_and_the_room_goes_on() {
    let host = Host::builder()
        .plugin("chat")
        .mode(Mode::Shared)
        .args(&["--write-buffer", "64KiB"])
        .start();
    check_chat_cuts_a_client_that_never_reads(&host);
    host.expect_log(
        "output buffer full: the client is not reading the room",
        SOON,
    );
}

#[test]
fn the_chat_cuts_the_sender_of_an_endless_line() {
    let host = Host::serving("chat", Mode::Shared);
    check_chat_cuts_an_endless_line(&host);
    host.assert_no_host_panic("chat");
}

#[test]
fn proto_echo_returns_a_megabyte_byte_exact() {
    let host = Host::serving("proto-echo", Mode::Shared);
    check_echo(&host);
}

#[test]
fn proto_echo_sends_everything_before_closing_after_the_clients_end_of_stream() {
    let host = Host::serving("proto-echo", Mode::Shared);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let sent = payload.clone();
    let stream = host.connect();
    let echoed = echo_to_end(&stream, move |writer| {
        writer.write_all(&sent).expect("send 3 MB");
    });
    assert!(
        echoed == payload,
        "{} of {} bytes came back",
        echoed.len(),
        payload.len()
    );
    host.expect_log("outcome=ok", SOON);
}

#[test]
fn proto_echo_serves_many_clients_from_one_instance() {
    let host = Host::serving("proto-echo", Mode::Shared);
    let mut clients: Vec<_> = (0..200).map(|_| host.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("client {i}\n").as_bytes())
            .expect("send");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let expected = format!("client {i}\n");
        let mut reply = vec![0; expected.len()];
        client.read_exact(&mut reply).expect("echo");
        assert_eq!(reply, expected.as_bytes());
    }
    assert_eq!(host.log_count("protocol instance started"), 1);
}

#[test]
fn what_a_closing_connections_last_callback_writes_is_sent_without_waiting_for_an_event() {
    // `kick 2` writes to client 2 and closes it from client 1's callback:
    // that output is held to the end of the round, sending it ends client
    // 2, and `connection-lost` writes `gone 2` to the others — held again.
    // With no idle sweep and no timer to wake the loop, only the end of
    // the round can send it.
    let host = Host::builder()
        .plugin(faults())
        .mode(Mode::Shared)
        .args(&["--idle-timeout", "0"])
        .start();
    let mut one = LineClient::connect(host.addr());
    one.expect("hello 1");
    let mut two = LineClient::connect(host.addr());
    two.expect("hello 2");
    let mut three = LineClient::connect(host.addr());
    three.expect("hello 3");
    one.say("kick 2");
    two.expect("kicked");
    assert!(two.is_closed(), "client 2 was closed after its last line");
    one.expect("gone 2");
    three.expect("gone 2");
}

#[test]
fn proto_http_hello_answers_like_http_hello() {
    let host = Host::serving("proto-http-hello", Mode::Shared);
    check_http(&host);
}

#[test]
fn proto_http_hello_serves_curl() {
    let host = Host::serving("proto-http-hello", Mode::Shared);
    let url = format!("http://{}/", host.addr());
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", &url, &url])
        .output()
        .expect("run curl (setup.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "curl failed: {text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches("Hello, World!").count(), 2, "{text}");
    // Both requests went over one kept-alive connection.
    host.expect_log_count("connection opened", 1, SOON);
}

#[test]
fn proto_http_hello_holds_up_under_wrk() {
    let host = Host::serving("proto-http-hello", Mode::Shared);
    let url = format!("http://{}/", host.addr());
    let output = Command::new("wrk")
        .args(["-t1", "-c50", "-d1s", &url])
        .output()
        .expect("run wrk (setup.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    assert!(text.contains("requests in"), "{text}");
    assert!(
        !text.contains("Socket errors") && !text.contains("Non-2xx"),
        "wrk saw errors: {text}"
    );
    host.assert_no_host_panic("wrk");
}

#[test]
fn host_check_names_the_protocol_world() {
    let output = run_host(&["check", "chat"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("implements plughost:handler/protocol@0.1.4"),
        "{text}"
    );
    assert!(
        text.contains("to create and init one shared instance"),
        "{text}"
    );
}

#[test]
fn the_listening_line_says_the_listener_serves_a_shared_instance() {
    let host = Host::builder()
        .plugin("proto-echo")
        // `--instances 2` states the mode itself.
        .mode_as_configured()
        .args(&["--instances", "2"])
        .start();
    host.expect_log("serving=2 shared instances", SOON);
}

#[test]
fn instances_each_have_their_own_state_and_share_the_connections() {
    let host = Host::builder()
        .plugin(faults())
        // `--instances 2` states the mode itself.
        .mode_as_configured()
        .args(&["--instances", "2"])
        .start();
    // Connections spread over both instances: the counts they see add up.
    let mut clients: Vec<LineClient> = (0..4).map(|_| LineClient::connect(host.addr())).collect();
    let hellos: Vec<String> = clients.iter_mut().map(LineClient::line).collect();
    assert_eq!(
        hellos.iter().filter(|h| *h == "hello 1").count(),
        2,
        "each instance greets its first connection as 1: {hellos:?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for client in &mut clients {
        client.say("count");
        let count: usize = client
            .line()
            .strip_prefix("count ")
            .and_then(|n| n.parse().ok())
            .expect("count N");
        seen.insert(count);
    }
    assert_eq!(seen, [2].into(), "each instance serves two connections");
    host.expect_log_count("protocol instance started", 2, SOON);
}

#[test]
fn timers_fire_and_reach_the_connection_that_set_them() {
    let host = Host::serving(faults(), Mode::Shared);
    let mut a = LineClient::connect(host.addr());
    a.expect("hello 1");
    let mut b = LineClient::connect(host.addr());
    b.expect("hello 2");
    a.say("later 50");
    b.say("later 0");
    b.expect("fired");
    a.expect("fired");
    a.say("ping");
    a.expect("echo ping");
}

/// Starts the fault plugin and a plain echo listener in one process.
fn faults_beside_echo(dir: &Path) -> Host {
    let config = dir.join("host.toml");
    fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"faults\"\naddress = \"127.0.0.1:0\"\nplugin = {:?}\n\
             call_timeout = \"200ms\"\nmax_memory = \"32MiB\"\n\
             [[listener]]\nname = \"echo\"\naddress = \"127.0.0.1:0\"\nplugin = \"echo\"\n",
            faults().display().to_string(),
        ),
    )
    .expect("write config");
    Host::builder()
        .config(&config)
        .mode(Mode::EventLoop)
        .start()
}

/// A fault in one callback closes every connection of the instance with
/// the reason, a fresh instance serves new connections, and a second
/// listener of the same process is not touched.
fn a_fault_poisons_only_its_instance(command: &str, reason: &str) {
    let dir = temp_dir("proto-fault");
    let host = faults_beside_echo(&dir);
    let faulty = host.listener_addr("faults");
    let mut bystander = LineClient::connect(faulty);
    bystander.expect("hello 1");
    let mut culprit = LineClient::connect(faulty);
    culprit.expect("hello 2");
    let mut echo = crate::support::connect(host.listener_addr("echo"));
    assert_eq!(crate::support::round_trip(&mut echo, b"before"), b"before");

    culprit.say(command);
    assert!(culprit.is_closed(), "the culprit's connection is closed");
    assert!(
        bystander.is_closed(),
        "every connection of the instance is closed"
    );
    host.expect_log(reason, SOON);
    host.expect_log("protocol instance trapped", SOON);
    host.expect_log_count("outcome=trap", 2, SOON);

    // A fresh instance (its count starts again) serves new connections.
    let mut next = LineClient::connect(faulty);
    next.expect("hello 1");
    next.say("still");
    next.expect("echo still");
    // The other listener never noticed.
    assert_eq!(crate::support::round_trip(&mut echo, b"after"), b"after");
    host.assert_no_host_panic(command);
}

#[test]
fn a_callback_that_loops_is_cut_at_the_deadline() {
    a_fault_poisons_only_its_instance("spin", "call timeout");
}

#[test]
fn a_callback_that_traps_poisons_only_its_instance() {
    a_fault_poisons_only_its_instance("trap", "asked to trap");
}

#[test]
fn a_callback_that_eats_memory_stops_at_the_cap() {
    a_fault_poisons_only_its_instance("hog", "memory limit of 33554432 bytes");
}

#[test]
fn an_init_that_fails_refuses_connections_and_says_why() {
    let dir = temp_dir("proto-init");
    let config = dir.join("failing.toml");
    fs::write(
        &config,
        format!(
            "admin = \"127.0.0.1:0\"\n[[listener]]\nname = \"faults\"\naddress = \"127.0.0.1:0\"\n\
             plugin = {:?}\n[listener.config]\nfail_init = \"yes\"\n",
            faults().display().to_string()
        ),
    )
    .expect("write config");
    let host = Host::builder().config(&config).mode(Mode::Shared).start();
    for _ in 0..2 {
        let mut client = LineClient::connect(host.addr());
        assert!(
            client.is_closed(),
            "a connection without an instance is closed"
        );
    }
    host.expect_log(
        "protocol instance cannot start: init failed: fail_init is set",
        SOON,
    );
    host.expect_log("outcome=host-error", SOON);
    let admin = admin_addr(&host);
    wait_for_metric(
        admin,
        "plughost_protocol_instances_total{listener=\"faults\",event=\"failed\"}",
    );
    host.assert_no_host_panic("init failure");
}

#[test]
fn a_reload_under_a_live_chat_starts_a_new_room_and_keeps_the_old_one() {
    let dir = temp_dir("proto-reload");
    let plugin = dir.join("chat.wasm");
    let original = fs::read(crate::support::example_plugin("chat.wasm")).expect("read chat");
    fs::write(&plugin, &original).expect("copy chat");
    let host = Host::serving(&plugin, Mode::Shared);
    let mut a = LineClient::connect(host.addr());
    a.expect("* welcome, guest1 (/nick NAME to rename)");
    let mut b = LineClient::connect(host.addr());
    b.expect("* welcome, guest2 (/nick NAME to rename)");
    a.expect("* guest2 joined");

    // A new build: the same component with a custom section appended
    // (`plughost-test`, one byte), so its hash differs.
    fs::write(&plugin, rebuilt(&original, "build-2")).expect("write the new build");
    host.signal(libc::SIGHUP);
    host.expect_log("swapped", SOON);

    // A new client is the first of the new version's room.
    let mut c = LineClient::connect(host.addr());
    c.expect("* welcome, guest1 (/nick NAME to rename)");
    host.expect_log_count("protocol instance started", 2, SOON);
    // The old room still talks, and the new one does not hear it.
    a.say("old room");
    b.expect("guest1: old room");
    c.say("new room");
    drop(a);
    b.expect("* guest1 left");
    drop(b);
    host.expect_log("protocol instance of a replaced version dropped", SOON);
    c.say("/who");
    c.expect("* here: guest1");
}

#[test]
fn a_reload_to_another_world_is_refused_and_the_chat_goes_on() {
    let dir = temp_dir("proto-reload-world");
    let plugin = dir.join("chat.wasm");
    fs::copy(crate::support::example_plugin("chat.wasm"), &plugin).expect("copy chat");
    let host = Host::serving(&plugin, Mode::Shared);
    let mut a = LineClient::connect(host.addr());
    a.expect("* welcome, guest1 (/nick NAME to rename)");
    fs::copy(crate::support::example_plugin("echo.wasm"), &plugin).expect("swap in echo");
    host.signal(libc::SIGHUP);
    host.expect_log("this listener serves the protocol world", SOON);
    let mut b = LineClient::connect(host.addr());
    b.expect("* welcome, guest2 (/nick NAME to rename)");
    a.expect("* guest2 joined");
}

#[test]
fn sigterm_drains_a_chat_then_closes_it_at_the_end_of_the_grace_period() {
    let mut host = Host::builder()
        .plugin("chat")
        .mode(Mode::Shared)
        .args(&["--grace", "1s"])
        .start();
    let mut a = LineClient::connect(host.addr());
    a.expect("* welcome, guest1 (/nick NAME to rename)");
    let mut b = LineClient::connect(host.addr());
    b.expect("* welcome, guest2 (/nick NAME to rename)");
    a.expect("* guest2 joined");
    host.terminate();
    host.expect_log("shutting down", SOON);
    // Still served while draining.
    a.say("during the drain");
    b.expect("guest1: during the drain");
    let status = host
        .wait_exit(std::time::Duration::from_secs(15))
        .expect("the host exits after the grace period");
    assert!(status.success(), "{status}");
    assert!(a.is_closed() && b.is_closed());
    assert!(host.stderr_contains("grace period over"), "{}", host.logs());
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let host = Host::builder()
        .plugin(faults())
        .mode(Mode::Shared)
        .args(&["--idle-timeout", "300ms"])
        .start();
    let mut silent = LineClient::connect(host.addr());
    silent.expect("hello 1");
    assert!(silent.is_closed(), "the idle connection is closed");
    host.expect_log("idle timeout", SOON);
}

#[test]
fn access_rules_and_metrics_apply_to_shared_instances() {
    let host = Host::builder()
        .plugin("proto-echo")
        .mode(Mode::Shared)
        .args(&["--deny", "127.0.0.0/8", "--admin", "127.0.0.1:0"])
        .start();
    let mut refused = crate::support::connect(host.addr());
    let mut rest = Vec::new();
    let _ = refused.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a denied peer gets nothing");
    host.expect_log("connection refused by --allow/--deny rules", SOON);
    let admin = admin_addr(&host);
    wait_for_metric(admin, "plughost_connections_refused_total{listener=");
}
