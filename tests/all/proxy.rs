//! The PROXY protocol (`--proxy-protocol CIDR`): a trusted balancer's v1
//! or v2 header names the client the plugin, the access rules and the log
//! see; a peer outside the trusted networks, a malformed header and a
//! silent peer are refused and logged.

use crate::support::protocol::LineClient;
use crate::support::{Host, Mode, SOON, test_plugin};

/// The protocol-world test plugin, which answers `peer` with the client's
/// address as the host gives it.
fn host_behind_a_balancer(extra: &[&str]) -> Host {
    let mut args = vec!["--proxy-protocol", "127.0.0.0/8"];
    args.extend_from_slice(extra);
    Host::builder()
        .plugin(test_plugin("proto_faults.wasm"))
        .mode(Mode::Shared)
        .args(&args)
        .start()
}

/// A client that sends `header` first.
fn with_header(host: &Host, header: &[u8]) -> LineClient {
    let mut client = LineClient::connect(host.addr());
    client.send(header);
    client
}

fn v2_ipv4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&src);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&8000u16.to_be_bytes());
    header
}

#[test]
fn a_v1_header_names_the_client_for_the_plugin_and_the_log() {
    let host = host_behind_a_balancer(&[]);
    let mut client = with_header(&host, b"PROXY TCP4 192.0.2.7 127.0.0.1 40123 8000\r\n");
    client.expect("hello 1");
    client.say("peer");
    client.expect("peer 192.0.2.7:40123");
    host.expect_log("connection opened peer=192.0.2.7:40123", SOON);
}

#[test]
fn a_v2_header_names_the_client_and_data_after_it_reaches_the_plugin() {
    let host = host_behind_a_balancer(&[]);
    let mut header = v2_ipv4([198, 51, 100, 9], 5555);
    // The client's first bytes arrive in the same segment as the header.
    header.extend_from_slice(b"peer\n");
    let mut client = with_header(&host, &header);
    client.expect("hello 1");
    client.expect("peer 198.51.100.9:5555");
}

#[test]
fn access_rules_apply_to_the_address_the_header_names() {
    let host = host_behind_a_balancer(&["--deny", "192.0.2.0/24"]);
    let mut denied = with_header(&host, b"PROXY TCP4 192.0.2.7 127.0.0.1 40123 8000\r\n");
    assert!(denied.is_closed());
    host.expect_log("peer=192.0.2.7:40123", SOON);
    host.expect_log("refused by --allow/--deny rules", SOON);
    let mut allowed = with_header(&host, b"PROXY TCP4 203.0.113.1 127.0.0.1 1 8000\r\n");
    allowed.expect("hello 1");
}

#[test]
fn a_malformed_header_is_refused_and_logged() {
    let host = host_behind_a_balancer(&[]);
    let mut client = with_header(&host, b"GET / HTTP/1.1\r\n\r\n");
    assert!(client.is_closed());
    host.expect_log(
        "connection refused: the connection does not start with a PROXY protocol header",
        SOON,
    );
    let mut client = with_header(&host, b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\n");
    assert!(client.is_closed());
    host.expect_log("PROXY v1 header has a bad address", SOON);
}

#[test]
fn a_peer_outside_the_trusted_networks_is_refused() {
    let host = Host::builder()
        .plugin("echo")
        .mode(Mode::EventLoop)
        .args(&["--proxy-protocol", "10.0.0.0/8"])
        .start();
    let mut client = with_header(&host, b"PROXY TCP4 192.0.2.7 127.0.0.1 40123 8000\r\n");
    assert!(client.is_closed());
    host.expect_log("not in the networks trusted to send a PROXY header", SOON);
}

#[test]
fn a_peer_that_never_sends_its_header_is_refused_after_the_timeout() {
    let host = host_behind_a_balancer(&[]);
    let mut silent = LineClient::connect(host.addr());
    assert!(silent.is_closed());
    host.expect_log("no PROXY header within 5 s", SOON);
}

#[test]
fn a_handler_plugin_behind_a_balancer_sees_the_client_too() {
    let host = Host::builder()
        .plugin("echo")
        .mode(Mode::Threads)
        .args(&["--proxy-protocol", "127.0.0.1/32"])
        .start();
    let mut client = with_header(&host, b"PROXY TCP4 192.0.2.8 127.0.0.1 4000 8000\r\nhi\n");
    client.expect("hi");
    host.expect_log("connection opened peer=192.0.2.8:4000", SOON);
}
