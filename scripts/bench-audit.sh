#!/usr/bin/env bash
# The audit log's cost end to end: one shard, cache hits over the binary protocol
# (pdp-bench, 4 connections), with the audit log in each durability mode — closed loop at
# depth 128 (throughput), then open loop at half of that rate (latency at 50% load),
# modes interleaved round by round. Prints a Markdown table.
#
#   scripts/bench-audit.sh [ROUNDS]        (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p shard -p bench-harness
ROUNDS=${1:-3}
LOAD_CPUS=${LOAD_CPUS:-$(($(nproc) - 1))}
dir=target/bench-audit-modes
echo "| round | durability | closed-loop hits/s (depth 128) | open loop: rate | p50 µs | p99 µs | p99.9 µs |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
  for mode in none batch sync; do
    rm -rf "$dir"
    target/release/sark-pdp serve --shards 1 --listen 127.0.0.1:7477 --http-listen off \
      --audit-dir "$dir" --audit-durability "$mode" > target/bench-audit.log 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q listening target/bench-audit.log && break; sleep 0.1; done
    taskset -c "$LOAD_CPUS" target/release/pdp-bench closed --addr 127.0.0.1:7477 --scenario hit --depth 128 \
      --duration 3 --warmup 1 --json target/bench-audit-closed.json >/dev/null
    closed=$(python3 -c "import json; print(round(json.load(open('target/bench-audit-closed.json'))['per_s']))")
    rate=$((closed / 2))
    taskset -c "$LOAD_CPUS" target/release/pdp-bench open --addr 127.0.0.1:7477 --scenario hit --rate "$rate" \
      --duration 3 --warmup 1 --json target/bench-audit-open.json >/dev/null
    python3 - "$round" "$mode" "$closed" <<'PY'
import json, sys
o = json.load(open("target/bench-audit-open.json"))
print(f"| {sys.argv[1]} | {sys.argv[2]} | {sys.argv[3]} | {o['offered']:.0f}/s | {o['p50_us']:.0f} | {o['p99_us']:.0f} | {o['p999_us']:.0f} |")
PY
    kill "$server"; wait "$server" || true
  done
done
rm -rf "$dir"
