#!/bin/sh
# Builds one JavaScript plugin (plugins/js/<plugin>/<plugin>.js, an ES
# module exporting its world's functions: setup/handle/finish, or
# init/connectionMade/dataReceived/... for the protocol world) into a
# component with componentize-js (SpiderMonkey inside, ~12 MB):
#
#   [WORLD=protocol] plugins/js/build.sh <plugin> [OUT.wasm]
#
# default OUT: target/guests/js-<plugin>.wasm; WORLD is the WIT world the
# plugin implements (default `handler`). Needs componentize-js 0.23.0
# ($COMPONENTIZE_JS, target/guest-tools/js/node_modules from
# scripts/build-guests.sh, plugins/js/node_modules after `npm install` there, or
# on PATH). `-d http fetch-event` leaves out wasi:http, which the host does
# not provide. Skips the build when OUT is newer than the sources, the WIT
# and the tool (FORCE=1 rebuilds).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
plugin=${1:?usage: plugins/js/build.sh <plugin> [OUT.wasm]}
src=$here/$plugin
out=${2:-$root/target/guests/js-$plugin.wasm}
wit=${WIT:-$root/wit}
world=${WORLD:-handler}
[ -f "$src/$plugin.js" ] || { echo "error: no JavaScript plugin $src/$plugin.js" >&2; exit 1; }

tool=${COMPONENTIZE_JS:-}
for candidate in "$root/target/guest-tools/js/node_modules/.bin/componentize-js" \
    "$here/node_modules/.bin/componentize-js" "$(command -v componentize-js || true)"; do
    [ -z "$tool" ] && [ -n "$candidate" ] && [ -x "$candidate" ] && tool=$candidate
done
[ -n "$tool" ] || { echo "error: componentize-js not found: npm install in plugins/js (or scripts/build-guests.sh)" >&2; exit 1; }

if [ -z "${FORCE:-}" ] && [ -f "$out" ] &&
    [ -z "$(find "$src" "$wit" "$tool" -newer "$out" -print -quit)" ]; then
    echo "up to date: $out"
    exit 0
fi

work=$root/target/guests/build/js-$(basename "$out" .wasm)
mkdir -p "$work" "$(dirname "$out")"
"$tool" "$src/$plugin.js" --wit "$wit" -n "$world" -d http fetch-event -o "$work/out.wasm" >/dev/null
mv "$work/out.wasm" "$out"
echo "built $out"
