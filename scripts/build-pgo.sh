#!/usr/bin/env bash
# Builds the host with profile-guided optimisation (PGO) into
# target/pgo/host: an instrumented build serves the loopback bench's echo
# workloads (ping-pong, bulk, churn; on threads, on an event loop, with
# and without the CPU deadline) and records where its time goes, then
# LLVM lays out and inlines the real build by that profile.
#
# The profile covers the host's own work (accepting, instantiating, the
# read/write host calls, wasmtime's runtime), not the guests' code, which
# wasmtime compiles at load time; so it serves every plugin. It takes two
# more release builds of the host and the training (~21 min on 2 cores),
# which is why the default build does not do it. host/benches/RESULTS.md has what
# it gains. The bench adds rows for target/pgo/host when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rustup component add llvm-tools >/dev/null
triple=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$triple/bin/llvm-profdata"
profiles=$root/target/pgo-gen/profiles
merged=$root/target/pgo-gen/host.profdata

# --target keeps the flags off build scripts and proc macros: only the
# host binary and its libraries are instrumented (and optimised).
build() { # target-dir rustflags
    RUSTFLAGS=$2 cargo build --release -p host --bin host \
        --target "$triple" --target-dir "$1"
}

echo "build-pgo: 1/3 instrumented build (target/pgo-gen)"
# (Training sets LLVM_PROFILE_FILE; this directory only gets the profiles
# of other runs of the instrumented binary.)
build target/pgo-gen "-Cprofile-generate=$root/target/pgo-gen/other-runs"

echo "build-pgo: 2/3 recording a profile under the bench's echo workloads"
rm -rf "$profiles"
BENCH_HOST=$root/target/pgo-gen/$triple/release/host BENCH_PGO=0 \
    BENCH_ONLY=pingpong,bulk,churn BENCH_ROUNDS=3 BENCH_SECS=1 \
    LLVM_PROFILE_FILE="$profiles/host-%p-%m.profraw" \
    cargo bench -p host --bench loopback >/dev/null
if ! compgen -G "$profiles/host-*.profraw" >/dev/null; then
    echo "build-pgo: the instrumented host wrote no profile" >&2
    exit 1
fi
"$profdata" merge -o "$merged" "$profiles"/host-*.profraw

echo "build-pgo: 3/3 optimised build (target/pgo)"
build target/pgo "-Cprofile-use=$merged"
cp "target/pgo/$triple/release/host" target/pgo/host
echo "build-pgo: done: target/pgo/host (e.g. target/pgo/host run --plugin echo --port 8000)"
