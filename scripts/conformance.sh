#!/usr/bin/env bash
# The POSIX file-system conformance suite (pjdfstest) natively and under
# virtuos, in the same run; writes bench/conformance/<backend>.md.
#
#   bash scripts/conformance.sh [process|vm] [DIR...]   # DIRs: chmod open ...
#   bash scripts/conformance.sh build                   # only build; prints the tests dir
#
# Native runs in a fresh directory on tmpfs (/dev/shm), virtuos in a fresh
# directory under /storage of a throw-away daemon. Needs root (the suite
# switches users), autoconf, automake, gcc, make and perl's prove
# (scripts/setup-debian.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tarball=crates/e2e/conformance/pjdfstest-85a8aea.tar.gz
build_dir=${CARGO_TARGET_DIR:-$root/target}/conformance/pjdfstest-85a8aea

build() {
    if [ -x "$build_dir/pjdfstest" ]; then return; fi
    rm -rf "$build_dir" && mkdir -p "$build_dir"
    tar xzf "$tarball" -C "$build_dir" --strip-components=1
    log="$build_dir.build.log"
    if ! (cd "$build_dir" && autoreconf -ifs && ./configure && make pjdfstest) >"$log" 2>&1; then
        cat "$log" >&2
        echo "conformance.sh: building pjdfstest failed (see above)" >&2
        exit 1
    fi
}

if [ "${1:-}" = build ]; then
    build
    echo "$build_dir/tests"
    exit 0
fi

backend=${1:-process}
shift || true
case "$backend" in process|vm) ;; *) echo "usage: $0 [process|vm] [DIR...] | build" >&2; exit 2;; esac
[ "$(id -u)" -eq 0 ] || { echo "conformance.sh: run as root (the suite switches users)" >&2; exit 2; }
bash scripts/setup-debian.sh
build
cargo build --release -q -p virtuos -p virtuos-domain -p virtuos-preload

tests=()
if [ $# -eq 0 ]; then tests=("$build_dir/tests"); else for d in "$@"; do tests+=("$build_dir/tests/$d"); done; fi

work=$(mktemp -d /tmp/virtuos-conformance-XXXXXX)
chmod 755 "$work"
trap 'target/release/virtuos --runtime-dir "$work/run" down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

summary() { grep -E '^(Files=|Result:)' "$1" | tr '\n' ' '; }
failed() { grep -E 'Failed [0-9]+/[0-9]+ subtests' "$1" | awk '{split($2,a,"/"); f+=a[1]} END {print f+0}'; }
total() { sed -nE 's/^Files=[0-9]+, Tests=([0-9]+).*/\1/p' "$1"; }

echo "== native (tmpfs)"
native_dir=$(mktemp -d /dev/shm/virtuos-conformance-XXXXXX)
chmod 755 "$native_dir"   # the suite's other users must reach it (mktemp: 0700)
t0=$(date +%s)
(cd "$native_dir" && prove -r "${tests[@]}") >"$work/native.log" 2>&1 || true
t1=$(date +%s)
rm -rf "$native_dir"
echo "   $(summary "$work/native.log")"

echo "== virtuos ($backend backend)"
mkdir -p "$work/run" "$work/data"
chmod 755 "$work/run"
export VIRTUOS_RUNTIME_DIR="$work/run" VIRTUOS_DATA_DIR="$work/data"
up=(target/release/virtuos up)
[ "$backend" = vm ] && up+=(--backend vm)
"${up[@]}" >/dev/null
t2=$(date +%s)
target/release/virtuos run -- sh -c "mkdir -p /storage/pjd && cd /storage/pjd && prove -r ${tests[*]}" \
    >"$work/virtuos.log" 2>&1 || true
t3=$(date +%s)
echo "   $(summary "$work/virtuos.log")"

out=bench/conformance/$backend.md
mkdir -p bench/conformance
{
    echo "# pjdfstest under virtuos ($backend backend)"
    echo
    echo "Command: \`bash scripts/conformance.sh $backend${*:+ $*}\` on $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| run | subtests | failed | wall time |"
    echo "|---|---|---|---|"
    echo "| native (tmpfs) | $(total "$work/native.log") | $(failed "$work/native.log") | $((t1 - t0)) s |"
    echo "| virtuos, /storage | $(total "$work/virtuos.log") | $(failed "$work/virtuos.log") | $((t3 - t2)) s |"
    echo
    echo "Failing files under virtuos:"
    echo
    echo '```'
    grep -E '^/.*\.t +\(Wstat|^  Failed tests?:' "$work/virtuos.log" | sed "s|$build_dir/||" || echo "(none)"
    echo '```'
} >"$out"
cat "$out"
grep -q '^Result: PASS' "$work/virtuos.log"
