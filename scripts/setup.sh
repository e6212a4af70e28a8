#!/usr/bin/env bash
# Installs what building and testing the project needs on a fresh machine
# (beyond the Rust toolchain itself). Safe to run repeatedly.
set -euo pipefail

rustup target add wasm32-wasip2 >/dev/null
