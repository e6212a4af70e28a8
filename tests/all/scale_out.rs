//! Scale-out behind a real HAProxy (`examples/haproxy/`): three hosts
//! with the PROXY protocol and `/readyz` checks, connection churn through
//! HAProxy while each host is restarted in turn (SIGTERM, drain delay,
//! drain, a new process on the same port): no connection fails, and the
//! plugin sees every client's own address. Skipped, saying so, where
//! `haproxy` is not installed (`scripts/setup.sh` installs it).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Host, IO_TIMEOUT, Mode, SOON, free_port, temp_dir, test_plugin};

/// One of the three hosts: its serving and admin ports.
#[derive(Clone, Copy)]
struct Slot {
    port: u16,
    admin: u16,
}

impl Slot {
    fn start(self) -> Host {
        let admin = format!("127.0.0.1:{}", self.admin);
        Host::builder()
            .plugin(test_plugin("proto_faults.wasm"))
            .mode(Mode::Shared)
            .port(self.port)
            .args(&[
                "--admin",
                &admin,
                "--proxy-protocol",
                "127.0.0.1/32",
                "--drain-delay",
                "1s",
                "--grace",
                "10s",
            ])
            .start()
    }
}

/// HAProxy, killed when dropped.
struct HaProxy(Child);

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example's configuration with the test's ports.
fn haproxy_config(front: u16, slots: &[Slot]) -> String {
    let example =
        fs::read_to_string(crate::support::workspace_root().join("examples/haproxy/haproxy.cfg"))
            .expect("read examples/haproxy/haproxy.cfg");
    let mut config = example.replace("127.0.0.1:8000", &format!("127.0.0.1:{front}"));
    for (i, slot) in slots.iter().enumerate() {
        let n = i + 1;
        config = config
            .replace(
                &format!("127.0.0.1:900{n}"),
                &format!("127.0.0.1:{}", slot.port),
            )
            .replace(&format!("port 910{n}"), &format!("port {}", slot.admin));
    }
    config
}

/// One connection through HAProxy: greeting, then the client's address
/// as the plugin sees it, which must be this socket's own.
fn one_client(front: u16) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", front)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let me = stream.local_addr().map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("greeting: {e}"))?;
    if !line.starts_with("hello ") {
        return Err(format!("greeting: {line:?}"));
    }
    writer
        .write_all(b"peer\n")
        .map_err(|e| format!("send: {e}"))?;
    line.clear();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("peer: {e}"))?;
    if line.trim_end() != format!("peer {me}") {
        return Err(format!(
            "the plugin saw {:?}, the client is {me}",
            line.trim_end()
        ));
    }
    Ok(())
}

#[test]
fn rolling_restarts_behind_haproxy_fail_no_connection() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!("skipped: haproxy is not installed (scripts/setup.sh installs it)");
        return;
    }
    let slots: Vec<Slot> = (0..3)
        .map(|_| Slot {
            port: free_port(),
            admin: free_port(),
        })
        .collect();
    let mut hosts: Vec<Host> = slots.iter().map(|slot| slot.start()).collect();
    let front = free_port();
    let dir = temp_dir("haproxy");
    let config = dir.join("haproxy.cfg");
    fs::write(&config, haproxy_config(front, &slots)).expect("write haproxy.cfg");
    let log = dir.join("haproxy.log");
    let _haproxy = HaProxy(
        Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("create haproxy.log"))
            .spawn()
            .expect("start haproxy"),
    );
    // Wait until HAProxy forwards (its checks found the hosts ready).
    let deadline = Instant::now() + SOON;
    while let Err(err) = one_client(front) {
        assert!(
            Instant::now() < deadline,
            "haproxy never forwarded a connection ({err}):\n{}\n{}",
            fs::read_to_string(&log).unwrap_or_default(),
            hosts[0].logs()
        );
        thread::sleep(Duration::from_millis(50));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match one_client(front) {
                    Ok(()) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => failures.push(err),
                }
            }
            failures
        })
    };
    for (i, slot) in slots.iter().enumerate() {
        let before = served.load(Ordering::Relaxed);
        hosts[i].terminate();
        hosts[i].expect_log("still accepting for the drain delay", SOON);
        let status = hosts[i]
            .wait_exit(Duration::from_secs(30))
            .expect("the old host exits once drained");
        assert!(status.success(), "{status}");
        hosts[i] = slot.start();
        // Back in rotation: HAProxy sends the new process connections.
        hosts[i].expect_log("connection opened", Duration::from_secs(30));
        assert!(
            served.load(Ordering::Relaxed) > before,
            "churn went on during restart {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let failures = churn.join().expect("the churn thread panicked");
    let total = served.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} connections failed, first: {:?}",
        failures.len(),
        total + failures.len(),
        failures.first()
    );
    assert!(total > 30, "only {total} connections were made");
}
