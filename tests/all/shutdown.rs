//! Shutting down, on threads and on an event loop: SIGTERM closes the
//! listener, lets open connections finish (and exits as soon as they
//! have), and at the end of the grace period closes the stragglers and
//! exits 0.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Host, SOON, round_trip};

in_every_mode! {
    /// Drained before a long grace period ends: the host exits 0 at once,
    /// without closing anyone.
    fn sigterm_stops_accepting_and_lets_open_connections_finish(mode: Mode) {
        let mut host = Host::builder()
            .plugin("echo")
            .mode(mode)
            .args(&["--grace", "60s"])
            .start();
        let mut open = host.connect();
        assert_eq!(round_trip(&mut open, b"before"), b"before");
        host.terminate();
        host.expect_log("shutting down", SOON);
        // New connections are refused (the listener is closed).
        let refused = TcpStream::connect_timeout(&host.addr(), Duration::from_secs(2));
        assert!(
            refused.is_err(),
            "a new connection was accepted while draining"
        );
        // The open one is still served.
        assert_eq!(round_trip(&mut open, b"during"), b"during");
        drop(open);
        let status = host
            .wait_exit(Duration::from_secs(30))
            .expect("host exits once drained, long before the grace period ends");
        assert!(status.success(), "{status}");
        assert!(
            !host.stderr_contains("grace period over"),
            "the host waited out the grace period:\n{}",
            host.logs()
        );
    }

    /// SIGTERM with a connection open: it is still served while draining,
    /// then closed when the 1 s grace ends, and the host exits 0.
    fn the_grace_period_ends_with_stragglers_closed_and_exit_zero(mode: Mode) {
        let mut host = Host::builder()
            .plugin("echo")
            .mode(mode)
            .args(&["--grace", "1s"])
            .start();
        let mut idle = host.connect();
        assert_eq!(round_trip(&mut idle, b"hi"), b"hi");
        host.terminate();
        host.expect_log("shutting down", SOON);
        assert_eq!(round_trip(&mut idle, b"during"), b"during");
        let status = host
            .wait_exit(Duration::from_secs(15))
            .expect("host exits after the grace period");
        assert!(status.success(), "{status}");
        let mut rest = Vec::new();
        let _ = idle.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert!(host.stderr_contains("grace period over"), "{}", host.logs());
    }
}
