#!/bin/sh
# Builds {{name}}.wasm: the Go sources in src/ (package export_wit_world)
# plus generated bindings -> a core module (Go, GOOS=wasip1) -> a
# component. The host binary generates the bindings and their runtime
# package (`host bindgen go`) and embeds the WIT and wraps the module
# (`host component new --embed {{world}}`); set HOST to use another host
# binary, GO for another Go (>= 1.27).
set -eu
cd "$(dirname "$0")"
HOST=${HOST:-{{host}}}
GO=${GO:-{{go}}}
rm -rf build
"$HOST" bindgen go --world {{world}} --out-dir build
mkdir -p build/export_wit_world
cp src/*.go build/export_wit_world/
(
    cd build
    GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm \
        "$GO" build -buildmode=c-shared -ldflags="-s -w -checklinkname=0" -o core.wasm .
)
"$HOST" component new build/core.wasm --embed {{world}} --adapter reactor -o {{name}}.wasm
