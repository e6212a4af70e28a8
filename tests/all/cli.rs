//! The command line's checks of plugins: `host check` describes a good
//! plugin, and `run` and `check` refuse every kind of bad plugin file with
//! one clear line (no host is left serving).

use std::fs;

use crate::support::{
    START_TIMEOUT, checked, example_plugin, refused, temp_dir, test_plugin, utf8,
};

#[test]
fn check_describes_a_good_plugin() {
    let stdout = checked(&example_plugin("http-hello.wasm"), START_TIMEOUT);
    assert!(
        stdout.contains("implements plughost:handler/handler@0.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("exports:  setup, handle, finish"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imports:") && stdout.contains("plughost:handler/connections"),
        "{stdout}"
    );
    assert!(stdout.contains("grants:   none"), "{stdout}");
    assert!(
        stdout.contains("instance:") && stdout.contains("to create per connection"),
        "{stdout}"
    );
}

#[test]
fn bad_plugins_are_refused_by_run_and_check_with_one_clear_line() {
    let dir = temp_dir("bad-input");
    let text = dir.join("notes.wasm");
    fs::write(&text, "just some text\n").expect("write a text file");
    let core = dir.join("core.wasm");
    fs::write(&core, b"\0asm\x01\0\0\0").expect("write a core module");
    let missing = dir.join("missing.wasm");
    let wrong = test_plugin("wrong_world.wasm");
    let cases: [(&std::path::Path, &[&str]); 4] = [
        (&missing, &["not found", "missing.wasm"]),
        (&text, &["not a WebAssembly file"]),
        (&core, &["core WebAssembly module", "not a component"]),
        (
            &wrong,
            &[
                "plughost:handler/handler@0.1",
                "missing exports `setup`, `handle`, `finish`",
            ],
        ),
    ];
    for (file, needles) in cases {
        let file = utf8(file);
        for line in [
            refused(&["run", "--plugin", file, "--port", "0"]),
            refused(&["check", file]),
        ] {
            for needle in needles {
                assert!(line.contains(needle), "`{needle}` missing from: {line}");
            }
        }
    }
    let line = refused(&["run", "--plugin", "nosuch", "--port", "0"]);
    assert!(
        line.contains("nosuch") && line.contains("not found"),
        "{line}"
    );
}
