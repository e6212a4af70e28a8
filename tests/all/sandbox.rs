//! The sandbox, on threads and on an event loop (which links the async
//! flavour of WASI): a component sees no files, environment, network or
//! directories unless granted, and a grant shows exactly what it names —
//! the `connect` grant proven against real listening sockets, the `dirs`
//! grants against real files (read-only, read-write, `..` and symlinks).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::thread;

use crate::support::{Host, Mode, SOON, config_file, run_host, temp_dir, test_plugin, utf8};

in_every_mode! {
    /// sandbox.wasm probes the file system, the environment, the network
    /// and preopened directories: every probe is denied.
    fn the_sandbox_grants_nothing_by_default(mode: Mode) {
        let host = Host::serving(test_plugin("sandbox.wasm"), mode);
        let mut report = String::new();
        let _ = host.connect().read_to_string(&mut report);
        assert!(!report.contains("root:"), "read /etc/passwd:\n{report}");
        for probe in [
            "fs: error",
            "env: error",
            "vars: ok 0",
            "net: error",
            "dir: error",
        ] {
            assert!(report.contains(probe), "expected `{probe}` in:\n{report}");
        }
    }

    /// `grants.env = ["HOME"]`: `check` and the log name the grant; the
    /// plugin sees HOME and no other variable, and still no files or
    /// network.
    fn granted_environment_variables_and_nothing_else_are_visible(mode: Mode) {
        let config = config_file(
            "grants",
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n\
                 [listener.grants]\nenv = [\"HOME\"]\n",
                test_plugin("sandbox.wasm").display()
            ),
        );
        let check = run_host(&["check", "--config", utf8(&config)]);
        let report = String::from_utf8_lossy(&check.stdout);
        assert!(report.contains("grant:    env HOME"), "{report}");
        let host = Host::builder().config(&config).mode(mode).start();
        assert!(host.stderr_contains("grant: env HOME"), "{}", host.logs());
        let mut report = String::new();
        let _ = host.connect().read_to_string(&mut report);
        assert!(report.contains("env: ok"), "{report}");
        assert!(report.contains("vars: ok 1"), "{report}");
        assert!(
            report.contains("fs: error") && report.contains("net: error"),
            "{report}"
        );
    }
}

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
/// `connect` to `granted`, in `mode`.
fn probe_host(granted: &[SocketAddr], mode: Mode) -> Host {
    let list: Vec<String> = granted.iter().map(|a| format!("\"{a}\"")).collect();
    let config = config_file(
        "connect-grant",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n\
             [listener.grants]\nconnect = [{}]\n",
            test_plugin("net_probe.wasm").display(),
            list.join(", ")
        ),
    );
    Host::builder().config(&config).mode(mode).start()
}

/// Sends one probe request and returns the plugin's one-line answer.
fn ask(probe: &mut BufReader<TcpStream>, request: &str) -> String {
    writeln!(probe.get_mut(), "{request}").expect("send a probe request");
    let mut answer = String::new();
    probe.read_line(&mut answer).expect("the probe answers");
    answer.trim_end().to_string()
}

in_every_mode! {
    /// net_probe.wasm under `connect = [A]`, with A and B both listening:
    /// A is reached, B is denied (the error says so), and binding or
    /// listening is refused, even on A's address.
    fn a_connect_grant_reaches_only_granted_listening_addresses(mode: Mode) {
        let granted = greeting_server();
        let other = greeting_server();
        let host = probe_host(&[granted], mode);
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
        host.expect_log("connection closed", SOON);
        host.assert_no_host_panic("probing the network");
    }

    /// With no grant, a listening address is unreachable.
    fn without_a_grant_no_listening_address_is_reachable(mode: Mode) {
        let listening = greeting_server();
        let host = probe_host(&[], mode);
        let mut probe = BufReader::new(host.connect());
        let answer = ask(&mut probe, &format!("connect {listening}"));
        assert!(
            answer.starts_with("error"),
            "no grant, no connection: {answer}"
        );
    }
}

in_every_mode! {
    /// fs_probe.wasm with `/data` granted read-only and `/out` read-write,
    /// against files the test wrote: `/data` reads and lists, and refuses
    /// every change (write, append, create, mkdir, rename, remove); `..`
    /// and symlinks out of either directory do not escape; `/out` writes,
    /// renames and removes, and the test sees it on disk.
    fn directory_grants_give_exactly_what_they_name(mode: Mode) {
        let dir = temp_dir("dir-grants");
        let (ro, rw, outside) = (dir.join("ro"), dir.join("rw"), dir.join("outside"));
        for path in [&ro, &rw, &outside] {
            fs::create_dir_all(path).expect("create a test directory");
        }
        fs::write(ro.join("note.txt"), "written by the test").expect("write note.txt");
        fs::write(outside.join("secret.txt"), "outside").expect("write secret.txt");
        symlink(outside.join("secret.txt"), ro.join("escape")).expect("symlink");
        symlink(&outside, rw.join("out-link")).expect("symlink");
        let config = config_file(
            "dir-grants",
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nplugin = \"{}\"\n\
                 [[listener.grants.dirs]]\nhost = \"{}\"\nguest = \"/data\"\n\
                 [[listener.grants.dirs]]\nhost = \"{}\"\nguest = \"/out\"\nwritable = true\n",
                test_plugin("fs_probe.wasm").display(),
                ro.display(),
                rw.display(),
            ),
        );
        let host = Host::builder().config(&config).mode(mode).start();
        assert!(host.stderr_contains("(read-only)"), "{}", host.logs());
        let mut probe = BufReader::new(host.connect());

        assert_eq!(ask(&mut probe, "read /data/note.txt"), "ok written by the test");
        assert_eq!(ask(&mut probe, "list /data"), "ok escape,note.txt");
        for refused in [
            "write /data/note.txt changed",
            "append /data/note.txt more",
            "write /data/new.txt created",
            "mkdir /data/sub",
            "rename /data/note.txt /data/moved.txt",
            "remove /data/note.txt",
            "read /data/../outside/secret.txt",
            "read /data/escape",
            "read /out/out-link/secret.txt",
            "write /out/out-link/secret.txt changed",
            "write /out/../outside/new.txt created",
            "read /etc/passwd",
        ] {
            let answer = ask(&mut probe, refused);
            assert!(answer.starts_with("error"), "`{refused}` must fail: {answer}");
        }
        assert_eq!(ask(&mut probe, "write /out/made.txt from the plugin"), "ok");
        assert_eq!(fs::read_to_string(rw.join("made.txt")).unwrap(), "from the plugin");
        assert_eq!(ask(&mut probe, "rename /out/made.txt /out/moved.txt"), "ok");
        assert!(rw.join("moved.txt").is_file() && !rw.join("made.txt").exists());
        assert_eq!(ask(&mut probe, "remove /out/moved.txt"), "ok");
        assert!(!rw.join("moved.txt").exists());

        // Nothing outside the writable grant changed.
        assert_eq!(fs::read_to_string(ro.join("note.txt")).unwrap(), "written by the test");
        assert_eq!(fs::read_to_string(outside.join("secret.txt")).unwrap(), "outside");
        let outside_names: Vec<_> = fs::read_dir(&outside).unwrap().flatten().collect();
        assert_eq!(outside_names.len(), 1, "a file appeared outside the grants");
        host.assert_no_host_panic("probing the file system");
    }
}
