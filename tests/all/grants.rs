//! The `connect` grant, proven against real listening sockets: a plugin
//! reaches a granted address that listens, is denied one that listens but
//! is not granted (the error says so), reaches nothing without the grant,
//! and can never bind a chosen address or listen — on threads and on an
//! event loop.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use crate::support::{Host, temp_dir, test_plugin};

/// A loopback server that greets every client with `hello from <port>`
/// and closes; it serves until the test process exits.
fn greeting_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a greeting server");
    let addr = listener.local_addr().expect("its address");
    thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let _ = writeln!(client, "hello from {}", addr.port());
        }
    });
    addr
}

/// A host serving the network probe with a configuration file granting
/// `connect` to `granted`, in the serving mode `event_loops` names.
fn probe_host(granted: &[SocketAddr], event_loops: &str) -> Host {
    let plugin = test_plugin("net_probe.wasm");
    let list: Vec<String> = granted.iter().map(|a| format!("\"{a}\"")).collect();
    let config = temp_dir("connect-grant").join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n\
             [listener.grants]\nconnect = [{}]\n",
            plugin.display(),
            list.join(", ")
        ),
    )
    .expect("write host.toml");
    let config = config.to_str().expect("UTF-8 path").to_string();
    Host::start(&["run", "--config", &config, "--event-loops", event_loops])
}

/// Sends one probe request and returns the plugin's one-line answer.
fn ask(probe: &mut BufReader<TcpStream>, request: &str) -> String {
    writeln!(probe.get_mut(), "{request}").expect("send a probe request");
    let mut answer = String::new();
    probe.read_line(&mut answer).expect("the probe answers");
    answer.trim_end().to_string()
}

fn a_connect_grant_reaches_only_granted_listening_addresses(event_loops: &str) {
    let granted = greeting_server();
    let other = greeting_server();
    let host = probe_host(&[granted], event_loops);
    let mut probe = BufReader::new(host.connect());

    assert_eq!(
        ask(&mut probe, &format!("connect {granted}")),
        format!("ok hello from {}", granted.port()),
        "the granted address is reached"
    );
    let denied = ask(&mut probe, &format!("connect {other}"));
    assert!(
        denied.starts_with("error") && denied.to_lowercase().contains("permission denied"),
        "an address that listens but is not granted is denied: {denied}"
    );
    for bind in [
        "bind 127.0.0.1:0",
        "bind 0.0.0.0:0",
        &format!("bind {granted}"),
    ] {
        let refused = ask(&mut probe, bind);
        assert!(
            refused.starts_with("error"),
            "`{bind}` must be refused (no listening): {refused}"
        );
    }
    drop(probe);
    host.expect_log("connection closed", std::time::Duration::from_secs(10));
    host.assert_no_host_panic("probing the network");
}

fn without_a_grant_no_listening_address_is_reachable(event_loops: &str) {
    let listening = greeting_server();
    let host = probe_host(&[], event_loops);
    let mut probe = BufReader::new(host.connect());
    let answer = ask(&mut probe, &format!("connect {listening}"));
    assert!(
        answer.starts_with("error"),
        "no grant, no connection: {answer}"
    );
}

#[test]
fn a_connect_grant_reaches_only_granted_listening_addresses_on_threads() {
    a_connect_grant_reaches_only_granted_listening_addresses("0");
}

#[test]
fn a_connect_grant_reaches_only_granted_listening_addresses_on_an_event_loop() {
    a_connect_grant_reaches_only_granted_listening_addresses("1");
}

#[test]
fn without_a_grant_no_listening_address_is_reachable_on_threads() {
    without_a_grant_no_listening_address_is_reachable("0");
}

#[test]
fn without_a_grant_no_listening_address_is_reachable_on_an_event_loop() {
    without_a_grant_no_listening_address_is_reachable("1");
}
