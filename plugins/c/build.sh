#!/bin/sh
# Builds one C plugin (plugins/c/<plugin>/*.c) into a component:
#
#   [WORLD=protocol] plugins/c/build.sh <plugin> [OUT.wasm]
#
# default OUT: target/guests/c-<plugin>.wasm; WORLD is the WIT world the
# plugin implements (default `handler`; the bindings are <world>.h). Needs clang-19, wasm-ld (lld-19),
# wasi-libc and libclang-rt-19-dev-wasm32 (Debian), and the `host` binary
# (target/release/host, or $HOST), which generates the bindings
# (`host bindgen c`) and wraps the core module (`host component new`).
# WIT=DIR builds against another WIT package than the host's own.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
plugin=${1:?usage: plugins/c/build.sh <plugin> [OUT.wasm]}
src=$here/$plugin
out=${2:-$root/target/guests/c-$plugin.wasm}
world=${WORLD:-handler}
[ -d "$src" ] || { echo "error: no C plugin $src" >&2; exit 1; }

host=${HOST:-$root/target/release/host}
[ -x "$host" ] || { echo "error: $host is missing: cargo build --release (or set HOST to the host binary)" >&2; exit 1; }
cc=${CC_WASM:-clang-19}
command -v "$cc" >/dev/null || { echo "error: $cc not found: apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32" >&2; exit 1; }

work=$root/target/guests/build/c-$(basename "$out" .wasm)
rm -rf "$work"
mkdir -p "$work/gen" "$(dirname "$out")"
"$host" bindgen c ${WIT:+--wit "$WIT"} --world "$world" --out-dir "$work/gen"
# --target=wasm32-wasi (not wasm32-wasip1, which picks up host headers);
# a reactor: no _start, the host calls the exports.
"$cc" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -Wl,--strip-debug -I "$work/gen" -I "$here/common" \
    "$src"/*.c "$work/gen/$world.c" "$work/gen/${world}_component_type.o" \
    -o "$work/core.wasm"
"$host" component new "$work/core.wasm" --adapter reactor -o "$out"
echo "built $out"
