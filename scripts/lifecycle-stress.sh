#!/usr/bin/env bash
# The long lifecycle job (issue 9): run scripts/lifecycle-workload.sh RUNS
# times in a row (default 100) under virtuos, each run a fresh `virtuos
# run` of the workload against one daemon, and count what must never
# happen: "not registered" / "not a child" refusals and lost sessions
# (client stderr and the daemon log), stuck shadows, hangs (a run that
# needs more than 120 s), and output that differs from a native run.
#
#   scripts/lifecycle-stress.sh [RUNS] [ROUNDS]      # process backend
#   VIRTUOS_BACKEND=vm scripts/lifecycle-stress.sh 10 # vm backend (TCG: slow)
#
# Uses its own runtime and data directories (removed at the end) and
# target/release binaries (`cargo build --release` first). Exit status 0
# only when every run was clean. The last result is recorded in
# bench/lifecycle/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-100}
ROUNDS=${2:-20}
BIN=${VIRTUOS_BIN_DIR:-$PWD/target/release}
WORKLOAD=$PWD/scripts/lifecycle-workload.sh
base=$(mktemp -d /tmp/virtuos-lifecycle-XXXXXX)
export VIRTUOS_RUNTIME_DIR=$base/run VIRTUOS_DATA_DIR=$base/data
mkdir -p "$VIRTUOS_RUNTIME_DIR" "$VIRTUOS_DATA_DIR"
up_args=(--no-network)
[ "${VIRTUOS_BACKEND:-process}" = vm ] && up_args+=(--backend vm)
cleanup() { "$BIN/virtuos" down > /dev/null 2>&1; rm -rf "$base"; }
trap cleanup EXIT
if ! "$BIN/virtuos" up "${up_args[@]}" > "$base/up.log" 2>&1; then
    cat "$base/up.log" >&2
    exit 1
fi
expected=$(ROOT=$base/native ROUNDS=$ROUNDS bash "$WORKLOAD" 2>&1)
refused=0 hangs=0 wrong=0 lost=0
start=$SECONDS
for run in $(seq "$RUNS"); do
    out=$(ROOT=/storage/lifecycle ROUNDS=$ROUNDS timeout 120 \
        "$BIN/virtuos" run -- bash "$WORKLOAD" 2> "$base/err")
    rc=$?
    [ "$rc" -eq 124 ] && hangs=$((hangs + 1))
    n=$(grep -cE 'not registered|not a child' "$base/err")
    refused=$((refused + n))
    n=$(grep -c 'lost its .* domain session' "$base/err")
    lost=$((lost + n))
    if [ "$rc" -ne 0 ] || [ "$out" != "$expected" ] || [ -s "$base/err" ]; then
        wrong=$((wrong + 1))
        echo "run $run: exit $rc" >&2
        diff <(echo "$expected") <(echo "$out") | head -5 >&2
        head -5 "$base/err" >&2
    fi
done
log=$VIRTUOS_RUNTIME_DIR/virtuosd.log
log_refused=$(grep -cE 'not registered|not a child' "$log")
stuck=$(grep -c 'shadow is gone or stuck' "$log")
echo "lifecycle-stress: backend ${VIRTUOS_BACKEND:-process}, $RUNS runs x $ROUNDS rounds in $((SECONDS - start)) s:" \
    "refusals $refused (daemon log $log_refused), lost sessions $lost, stuck shadows $stuck," \
    "hangs $hangs, runs with wrong output or stderr $wrong"
[ $((refused + log_refused + lost + stuck + hangs + wrong)) -eq 0 ]
