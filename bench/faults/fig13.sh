#!/usr/bin/env bash
# Fault benchmarks (process backend), as root, after `cargo build --release`:
#  1. restart times: each fault injected N times into each domain; detection
#     to ready and launch to ready as the daemon measured them;
#  2. the Figure 13 timeline: a dd-like writer (storage domain) and a TCP
#     streaming server (network domain) run; the network domain is killed
#     at ~3 s; bytes/s of both per 100 ms -> fig13.json and
#     fault_timeline.svg/png (virtuos-bench timeline).
# Output: bench/faults/{restarts.json,fig13.json,fault_timeline.svg,.png};
# BACKEND=vm: the same for domain VMs (TCG here) in bench/faults/vm/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${VIRTUOS_BIN_DIR:-$repo/target/release}
rounds=${ROUNDS:-5}
backend=${BACKEND:-process}
case "$backend" in
  process) out=$here; hang_ms=1000 ;;
  # Heartbeats cross the VM boundary as bells: allow a loaded TCG guest.
  vm) out=$here/vm; hang_ms=5000 ;;
  *) echo "BACKEND must be process or vm" >&2; exit 2 ;;
esac
mkdir -p "$out"
work=$(mktemp -d /tmp/virtuos-faults-XXXXXX)
export VIRTUOS_RUNTIME_DIR=$work/run VIRTUOS_DATA_DIR=$work/data VIRTUOS_CONFIG=$work/none.toml
V="$bin/virtuos"
cleanup() { "$V" down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$V" up --backend "$backend" --hang-timeout-ms "$hang_ms" >/dev/null
py=$(command -v python3)
cp "$repo/crates/e2e/tests/fault_progs/workload.py" "$work/workload.py"

# 1. Restart times.
echo "[" > "$work/restarts.json"
first=1
for dom in storage network; do
  for how in kill panic hang corrupt; do
    for r in $(seq "$rounds"); do
      # A domain that fails again within 2 s of its restart counts as a
      # crash loop (restart back-off): let it settle first.
      sleep 2.2
      # corrupt is detected by a client: keep one busy.
      client=""
      if [ "$how" = corrupt ]; then
        rm -f "$work/victim.json.ready"
        "$V" run -- "$py" "$work/workload.py" "victim-$dom" "$work/victim.json" >/dev/null 2>&1 &
        client=$!
        while [ ! -e "$work/victim.json.ready" ]; do sleep 0.02; done
      fi
      start=$(date +%s.%N)
      "$V" domain crash "$dom" --how "$how" --wait >/dev/null
      end=$(date +%s.%N)
      [ -n "$client" ] && wait "$client" || true
      st=$("$V" status --json)
      line=$("$py" - "$dom" "$how" "$start" "$end" <<PY
import json, sys
st = json.loads('''$st''')
d = [x for x in st["domains"] if x["name"] == sys.argv[1]][0]
print(json.dumps({"domain": sys.argv[1], "fault": sys.argv[2],
  "inject_to_serving_ms": (float(sys.argv[4]) - float(sys.argv[3])) * 1000,
  "detection_to_ready_ms": d.get("last_recovery_ms"),
  "launch_to_ready_ms": d.get("last_launch_ms")}))
PY
)
      [ $first = 1 ] || echo "," >> "$work/restarts.json"
      first=0
      echo "$line" >> "$work/restarts.json"
    done
  done
done
echo "]" >> "$work/restarts.json"
cp "$work/restarts.json" "$out/restarts.json"

# 2. Figure 13.
stop=$work/stop
t0=$(date +%s.%N)
"$V" run -- "$py" "$work/workload.py" writer "$work/writer.json" "$stop" &
w=$!
"$V" run -- "$py" "$work/workload.py" server "$work/server.json" "$stop" &
s=$!
while [ ! -e "$work/writer.json.ready" ] || [ ! -e "$work/server.json.ready" ]; do sleep 0.02; done
sleep 3
crash_at=$(date +%s.%N)
"$V" domain crash network --how kill --wait >/dev/null
ready_at=$(date +%s.%N)
sleep 4
touch "$stop"
wait "$w" "$s"
"$py" - "$work" "$t0" "$crash_at" "$ready_at" > "$out/fig13.json" <<'PY'
import json, sys
w, t0, c, r = sys.argv[1], *map(float, sys.argv[2:])
print(json.dumps({"t0": t0, "crash_at": c, "ready_at": r,
  "writer": json.load(open(w + "/writer.json")),
  "server": json.load(open(w + "/server.json"))}, indent=1))
PY
"$bin/virtuos-bench" timeline --json "$out/fig13.json" --out "$out"
"$py" - "$out" <<'PY'
import json, statistics, sys
rows = json.load(open(sys.argv[1] + "/restarts.json"))
print("domain   fault    detection->ready ms (median)  launch->ready ms  inject->serving ms")
for dom in ("storage", "network"):
    for f in ("kill", "panic", "hang", "corrupt"):
        x = [r for r in rows if r["domain"] == dom and r["fault"] == f]
        if not x: continue
        med = lambda k: statistics.median(r[k] for r in x if r[k] is not None)
        print(f"{dom:8} {f:8} {med('detection_to_ready_ms'):>10.1f} {med('launch_to_ready_ms'):>24.1f} {med('inject_to_serving_ms'):>18.1f}")
PY
