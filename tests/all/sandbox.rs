//! The sandbox, on threads and on an event loop (which links the async
//! flavour of WASI): a component sees no files, environment, network or
//! directories unless granted, and a grant shows exactly what it names.

use std::io::Read;

use crate::support::{Host, config_file, run_host, test_plugin, utf8};

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
