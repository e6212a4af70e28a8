#!/usr/bin/env bash
# Installs what building and testing the project needs on a fresh machine
# (beyond the Rust toolchain itself). Safe to run repeatedly.
set -euo pipefail

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null

# A full build and test run writes about 6 GB (target/, the guest
# toolchains, scaffolded plugins in the temporary directory). A disk that
# fills up mid-run fails unrelated tests, so say so up front.
for dir in . "${TMPDIR:-/tmp}"; do
    free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    if ((free_kb < 8 * 1024 * 1024)); then
        echo "warning: only $((free_kb / 1024)) MB free on the disk of $dir;" \
            "building and testing needs about 6 GB" >&2
    fi
done

# Guests in other languages (C, Go, Python, JavaScript): installs their
# pinned toolchains and builds target/guests/*.wasm, which the integration
# tests run (tests/all/languages.rs). Builds the host binary first. The
# tests' own clients and peers come from Debian too: curl and wrk
# (tests/all/protocol.rs), haproxy (tests/all/scale_out.rs).
EXTRA_APT_PACKAGES="curl wrk haproxy redis-server" "$(dirname "$0")/build-guests.sh"
