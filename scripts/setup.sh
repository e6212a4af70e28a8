#!/usr/bin/env bash
# Installs what building and testing the project needs on a fresh machine
# (beyond the Rust toolchain itself). Safe to run repeatedly.
set -euo pipefail

rustup target add wasm32-wasip2 >/dev/null

# Guests in other languages (C, Go, Python, JavaScript): installs their
# pinned toolchains and builds target/guests/*.wasm, which the integration
# tests run (tests/all/languages.rs). Builds the host binary first.
"$(dirname "$0")/build-guests.sh"
