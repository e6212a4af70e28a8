//! Builds the example plugins (`plugins/`) for `wasm32-unknown-unknown`
//! (lean components, see [`LEAN_TARGET`]) and the test-only plugins
//! (`tests/plugins/`) for `wasm32-wasip2`, embeds the examples in the binary
//! and leaves them as `target/plugins/<name>.wasm` for users. The examples
//! (and the native test plugins) are also built as native shared libraries
//! from the same sources: `target/plugins/lib<name>.so`.
//!
//! The inner `cargo` runs use their own target directories (`target/wasm`,
//! `target/native`), so they never wait on the lock of the build that runs
//! this script.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

/// (crate output stem, name users see)
const EXAMPLES: &[(&str, &str)] = &[
    ("echo", "echo"),
    ("bot10086", "bot10086"),
    ("http_hello", "http-hello"),
    ("udp_echo", "udp-echo"),
    ("chat", "chat"),
    ("counter", "counter"),
    ("handler_chat", "handler-chat"),
    ("proto_echo", "proto-echo"),
    ("proto_http_hello", "proto-http-hello"),
];

/// Examples of the datagram and protocol worlds, and those that need the
/// shared store, which have no native form.
const WASM_ONLY_EXAMPLES: &[&str] = &[
    "udp_echo",
    "chat",
    "counter",
    "handler_chat",
    "proto_echo",
    "proto_http_hello",
];

/// The target of the example plugins: std without WASI, linked into a
/// component by wasm-component-ld (`.cargo/config.toml`). Their instances
/// import only the contract and WASI's stderr, so they are cheaper to
/// create than `wasm32-wasip2` builds, which import std's WASI support.
const LEAN_TARGET: &str = "wasm32-unknown-unknown";

/// The target of the test-only plugins: full WASI, which the sandbox tests
/// probe.
const WASI_TARGET: &str = "wasm32-wasip2";

/// Test-only plugins also built for [`LEAN_TARGET`].
const LEAN_TEST_PLUGINS: &[&str] = &["trap", "heap-probe"];

/// Test-only plugins also built as native libraries.
const NATIVE_TEST_PLUGINS: &[&str] = &["trap", "shout", "native-abi-v99", "finish-drains"];

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
    let native_dir = root.join("target").join("native");

    // Only what these builds read: the other languages' guests under
    // plugins/ are built by scripts/build-guests.sh, and editing them must
    // not rebuild the host.
    for watched in [
        "wit",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugins/rust",
        "tests/plugins",
        ".cargo",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let wasm = ["--target", WASI_TARGET];
    let lean = ["--target", LEAN_TARGET];
    build_workspace(root, &root.join("plugins/Cargo.toml"), &target_dir, &lean);
    build_workspace(root, &root.join("plugins/Cargo.toml"), &native_dir, &[]);
    let test_plugins = root.join("tests/plugins/Cargo.toml");
    if test_plugins.exists() {
        build_workspace(root, &test_plugins, &target_dir, &wasm);
        let lean_tests: Vec<&str> = lean
            .into_iter()
            .chain(LEAN_TEST_PLUGINS.iter().flat_map(|p| ["-p", p]))
            .collect();
        build_workspace(root, &test_plugins, &target_dir, &lean_tests);
        let packages: Vec<&str> = NATIVE_TEST_PLUGINS.iter().flat_map(|p| ["-p", p]).collect();
        build_workspace(root, &test_plugins, &native_dir, &packages);
    }

    let built = target_dir.join(LEAN_TARGET).join("release");
    let shipped = root.join("target").join("plugins");
    fs::create_dir_all(&shipped)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", shipped.display())));
    for (stem, name) in EXAMPLES {
        let from = built.join(format!("{stem}.wasm"));
        copy(&from, &out_dir.join(format!("{name}.wasm")));
        copy(&from, &shipped.join(format!("{name}.wasm")));
        // The handler-world examples also build as native plugins.
        if !WASM_ONLY_EXAMPLES.contains(stem) {
            let library = format!("lib{stem}.so");
            copy(
                &native_dir.join("release").join(&library),
                &shipped.join(&library),
            );
        }
    }
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap_or_else(|e| {
        fail(&format!(
            "cannot copy {} to {}: {e}",
            from.display(),
            to.display()
        ))
    });
}

/// Runs `cargo build --release` for the workspace at `manifest`, from the
/// repository `root` so that its `.cargo/config.toml` applies.
fn build_workspace(root: &Path, manifest: &Path, target_dir: &Path, extra: &[&str]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(extra);
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
            "building {} {} failed (for wasm: is the target installed? \
             `rustup target add {WASI_TARGET} {LEAN_TARGET}`)",
            manifest.display(),
            extra.join(" ")
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
