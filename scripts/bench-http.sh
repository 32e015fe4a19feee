#!/usr/bin/env bash
# The HTTP front door under wrk (keep-alive; cache hits, hits pipelined 16 deep, misses),
# beside the binary protocol's hit rate from pdp-bench in the same run, against one
# `sark-pdp serve` shard. Prints a Markdown table with the shard thread's CPU share.
#
#   scripts/bench-http.sh
#
# DURATION (s, default 5), CONNS (default 8), LOAD_CPUS (default: the last core),
# AUDIT_DURABILITY (default batch). The audit log goes to target/bench-http-audit/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
cargo build --release --locked -p shard -p bench-harness
DURATION=${DURATION:-5}
CONNS=${CONNS:-8}
LOAD_CPUS=${LOAD_CPUS:-$(($(nproc) - 1))}
AUDIT_DIR=target/bench-http-audit
AUDIT_DURABILITY=${AUDIT_DURABILITY:-batch}
rm -rf "$AUDIT_DIR"
target/release/sark-pdp serve --shards 1 --listen 127.0.0.1:7476 --http-listen 127.0.0.1:8182 \
  --audit-dir "$AUDIT_DIR" --audit-durability "$AUDIT_DURABILITY" > target/bench-http.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$AUDIT_DIR"' EXIT
for _ in $(seq 100); do grep -q listening target/bench-http.log && break; sleep 0.1; done
shard_tid=$(for t in /proc/$server/task/*; do [ "$(cat "$t/comm")" = shard-0 ] && basename "$t"; done)
ticks() { awk '{print $14 + $15}' "/proc/$server/task/$shard_tid/stat"; }

echo "machine: $(nproc) cores; shard on core 0, load (wrk -t1 / pdp-bench) on core(s) $LOAD_CPUS; audit durability $AUDIT_DURABILITY; $CONNS connections, ${DURATION}s each"
echo
echo "| front door | load | requests/s | p50 | p99 | shard CPU | per shard-core second |"
echo "|---|---|---:|---:|---:|---:|---:|"
run_wrk() { # label script pipeline
  local label=$1 script=$2 depth=$3
  PIPELINE=$depth taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d1s -s "scripts/wrk/$script" http://127.0.0.1:8182 >/dev/null
  local t0; t0=$(ticks)
  local out; out=$(PIPELINE=$depth taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "scripts/wrk/$script" http://127.0.0.1:8182)
  local t1; t1=$(ticks)
  local rps p50 p99 cpu
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  # wrk counts responses (a pipelined write of 16 is 16 of them).
  rps=$(awk -v r="$rps" 'BEGIN {printf "%.0f", r}')
  cpu=$(awk -v a="$t0" -v b="$t1" -v d="$DURATION" 'BEGIN {printf "%.0f", (b - a) / d}')
  echo "| HTTP | $label | $rps | $p50 | $p99 | $cpu% | $(awk -v r="$rps" -v c="$cpu" 'BEGIN {printf "%.0f", r / (c > 0 ? c / 100 : 1)}') |"
}
run_wrk "wrk, cache hits, keep-alive" hit.lua 1
run_wrk "wrk, cache hits, pipelined 16" hit.lua 16
run_wrk "wrk, cache misses, keep-alive" miss.lua 1
t0=$(ticks)
taskset -c "$LOAD_CPUS" target/release/pdp-bench closed --addr 127.0.0.1:7476 --scenario hit --connections "$CONNS" --depth 16 \
  --duration "$DURATION" --warmup 1 --json target/bench-http-binary.json >/dev/null
t1=$(ticks)
python3 - "$t0" "$t1" "$DURATION" <<'PY'
import json, sys
r = json.load(open("target/bench-http-binary.json"))
t0, t1, d = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
cpu = (t1 - t0) / (d + 1)  # pdp-bench ran warm-up + duration
print(f"| binary | pdp-bench, cache hits, depth 16 | {r['per_s']:.0f} | {r['p50_us']:.0f}us | {r['p99_us']:.0f}us | {cpu:.0f}% | {r['per_s'] / max(cpu / 100, 0.01):.0f} |")
PY
