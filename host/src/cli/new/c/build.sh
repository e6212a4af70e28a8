#!/bin/sh
# Builds {{name}}.wasm: the C sources in src/ -> a core module (clang-19,
# wasi-libc) -> a component. The host binary generates the bindings
# (`host bindgen c`) and wraps the module with the WASI preview1 reactor
# adapter (`host component new`); set HOST to use another host binary.
set -eu
cd "$(dirname "$0")"
HOST=${HOST:-{{host}}}
CC=${CC:-clang-19}
rm -rf build
mkdir -p build
"$HOST" bindgen c --world {{world}} --out-dir build/gen
# --target=wasm32-wasi, not wasm32-wasip1 (which picks up the build
# machine's headers); a reactor has no _start: the host calls the exports.
"$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Wl,--strip-debug \
    -I build/gen -I src src/*.c build/gen/{{world}}.c build/gen/{{world}}_component_type.o \
    -o build/core.wasm
"$HOST" component new build/core.wasm --adapter reactor -o {{name}}.wasm
