#!/usr/bin/env bash
# A fork-heavy shell workload for process-lifecycle races (issue 9): every
# process it makes is a fork of a client with state in the storage domain
# (cwd and an open descriptor there), so every fork prepares a shadow, and
# most children exec at once. Subshells, pipelines ending in `tail`,
# command substitutions, background jobs (their SIGCHLDs land while the
# shell forks the next child), dash (which forks simple commands with
# vfork) and a shell that exits while its background child still runs.
#
# Usage: ROOT=/storage/dir ROUNDS=N bash lifecycle-workload.sh
# Output is deterministic (compared with a native run by the e2e test and
# by scripts/lifecycle-stress.sh). Used by crates/e2e/tests/fork_exec.rs.
set -u
ROOT=${ROOT:-/storage/lifecycle}
ROUNDS=${ROUNDS:-20}
mkdir -p "$ROOT"
cd "$ROOT"
echo hello > f
: > log
exec 3>>log
for i in $(seq "$ROUNDS"); do
    (echo x | tail -1 > /dev/null)
    v=$(cat f 2>&1 | tail -1)
    [ "$v" = hello ] || echo "round $i: bad read: $v"
    echo "$i" > "bg.$i" &
    n=$(sh -c 'cat f | wc -c')
    [ "$n" = 6 ] || echo "round $i: bad count: $n"
    (cd "$ROOT" && ls > /dev/null) &
    echo "line $i" >&3
    { sleep 0.01; echo "late $i" >&3; } &
    x=$(echo "$i" | sh -c 'read a; echo $((a * 2))' | tail -1)
    [ "$x" = $((i * 2)) ] || echo "round $i: bad double: $x"
    sh -c 'cat f > /dev/null; cat f | tail -1 > /dev/null; head -c 1 f > /dev/null'
    y=$(bash -c '(cat f &) ; wait' | tail -1)
    [ "$y" = hello ] || echo "round $i: bad orphan read: $y"
done
wait
exec 3>&-
echo "rounds: $ROUNDS"
echo "log lines: $(wc -l < log)"
echo "late lines: $(grep -c late log)"
echo "background files: $(ls bg.* | wc -l)"
rm -f bg.* log f
