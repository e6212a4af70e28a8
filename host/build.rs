//! Builds the example plugins (`plugins/`) and the test-only plugins
//! (`tests/plugins/`) for `wasm32-wasip2`, embeds the examples in the binary
//! and leaves them as `target/plugins/<name>.wasm` for users.
//!
//! The inner `cargo` uses its own target directory (`target/wasm`), so it
//! never waits on the lock of the build that runs this script.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

/// (crate output stem, name users see)
const EXAMPLES: &[(&str, &str)] = &[
    ("echo", "echo"),
    ("bot10086", "bot10086"),
    ("http_hello", "http-hello"),
];

/// Variables of the outer build that must not leak into the wasm build.
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MAKEFLAGS",
    "CARGO_INCREMENTAL",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let target_dir = root.join("target").join("wasm");

    for watched in ["wit", "plugins", "tests/plugins"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    build_workspace(&root.join("plugins/Cargo.toml"), &target_dir);
    let test_plugins = root.join("tests/plugins/Cargo.toml");
    if test_plugins.exists() {
        build_workspace(&test_plugins, &target_dir);
    }

    let built = target_dir.join("wasm32-wasip2").join("release");
    let shipped = root.join("target").join("plugins");
    fs::create_dir_all(&shipped)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", shipped.display())));
    for (stem, name) in EXAMPLES {
        let from = built.join(format!("{stem}.wasm"));
        for to in [
            out_dir.join(format!("{name}.wasm")),
            shipped.join(format!("{name}.wasm")),
        ] {
            fs::copy(&from, &to).unwrap_or_else(|e| {
                fail(&format!(
                    "cannot copy {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            });
        }
    }
}

fn build_workspace(manifest: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    for (name, _) in env::vars() {
        if name.starts_with("CARGO_PROFILE_") {
            command.env_remove(name);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run cargo to build the plugins: {e}")));
    if !status.success() {
        fail(&format!(
            "building {} for wasm32-wasip2 failed (is the target installed? \
             `rustup target add wasm32-wasip2`)",
            manifest.display()
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
