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

#[test]
fn a_compile_cache_directory_others_may_write_or_own_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("cache-perms");
    let open = dir.join("open");
    fs::create_dir(&open).expect("create the cache dir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod 777");
    for command in ["check", "run"] {
        let mut args = vec![command, "echo", "--cache-dir", utf8(&open)];
        if command == "run" {
            args = vec![
                "run",
                "--plugin",
                "echo",
                "--port",
                "0",
                "--cache-dir",
                utf8(&open),
            ];
        }
        let error = refused(&args);
        assert!(
            error.contains("refusing the compile cache directory")
                && error.contains("its group or others may write to it (mode 777)"),
            "{error}"
        );
    }
    // A directory the host creates itself is owner-only.
    let fresh = dir.join("fresh/cache");
    let stdout = checked_with_cache(&fresh);
    assert!(stdout.contains("ok: "), "{stdout}");
    let mode = fs::metadata(&fresh).expect("created").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // As root, a directory that belongs to someone else is refused too.
    if crate::support::is_root() {
        let theirs = dir.join("theirs");
        fs::create_dir(&theirs).expect("create");
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown to nobody");
        let error = refused(&["check", "echo", "--cache-dir", utf8(&theirs)]);
        assert!(error.contains("it belongs to user 65534"), "{error}");
    }
}

/// `host check echo` with its compile cache in `dir`; its stdout.
fn checked_with_cache(dir: &std::path::Path) -> String {
    let out = crate::support::run_host(&["check", "echo", "--cache-dir", utf8(dir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
