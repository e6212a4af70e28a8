#!/bin/sh
# Builds one Python plugin (plugins/python/<plugin>/app.py, class WitWorld)
# into a component with componentize-py (CPython inside, ~18 MB):
#
#   [WORLD=protocol] plugins/python/build.sh <plugin> [OUT.wasm]
#
# default OUT: target/guests/python-<plugin>.wasm. WORLD is the WIT world
# the plugin implements (default `handler`); a `protocol` plugin gets the
# shared module common/plughost_protocol.py bundled. Needs componentize-py
# 0.25.1 ($COMPONENTIZE_PY, target/guest-tools/venv from
# scripts/build-guests.sh, or on PATH). Skips the build when OUT is newer
# than the sources, the WIT and the tool (FORCE=1 rebuilds).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
plugin=${1:?usage: plugins/python/build.sh <plugin> [OUT.wasm]}
src=$here/$plugin
out=${2:-$root/target/guests/python-$plugin.wasm}
wit=${WIT:-$root/wit}
world=${WORLD:-handler}
case $world in
handler) shared= ;;
protocol) shared=$here/common ;;
*) echo "error: WORLD=$world: the Python plugins implement \`handler\` or \`protocol\`" >&2; exit 1 ;;
esac
[ -d "$src" ] || { echo "error: no Python plugin $src" >&2; exit 1; }

tool=${COMPONENTIZE_PY:-$root/target/guest-tools/venv/bin/componentize-py}
[ -x "$tool" ] || tool=$(command -v componentize-py || true)
[ -n "$tool" ] || { echo "error: componentize-py not found: pip install componentize-py==0.25.1 (or scripts/build-guests.sh)" >&2; exit 1; }

if [ -z "${FORCE:-}" ] && [ -f "$out" ] &&
    [ -z "$(find "$src" ${shared:+"$shared"} "$wit" "$tool" -newer "$out" -print -quit)" ]; then
    echo "up to date: $out"
    exit 0
fi

# Build from a copy, so no __pycache__ lands in the source tree.
work=$root/target/guests/build/python-$(basename "$out" .wasm)
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
cp "$src"/*.py ${shared:+"$shared"/*.py} "$work/"
"$tool" -d "$wit" -w "$world" componentize -p "$work" app -o "$work/out.wasm" >/dev/null
mv "$work/out.wasm" "$out"
echo "built $out"
