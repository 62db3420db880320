#!/bin/sh
# The long fuzz run (not part of CI's time budget): every target of
# crates/fuzz for CASES cases (default 10^6) from a fixed seed; the table
# goes to bench/fuzz/last-run.md (copy it into RESULTS.md when committing
# a new run). A crash makes the exit status 1 and is listed with the
# command that replays it alone.
set -eu
cd "$(dirname "$0")/../.."
CASES="${CASES:-1000000}"
SEED="${SEED:-0x76697274756f73}"
cargo build --release -p virtuos-fuzz
./target/release/virtuos-fuzz --target "${TARGETS:-all}" --cases "$CASES" --seed "$SEED" \
    | tee bench/fuzz/last-run.md
