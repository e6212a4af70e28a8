#!/usr/bin/env bash
# Runs every test: unit tests, the integration suite (real `host` binary on
# loopback ports, plugins built from plugins/ and tests/plugins/), the guest
# plugins' own unit tests, and the lints. One profile (release) for all.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all --check
cargo fmt --all --check --manifest-path plugins/Cargo.toml
cargo clippy --release --all-targets -- -D warnings
cargo test --release
cargo test --release --manifest-path plugins/Cargo.toml --target-dir target/wasm
