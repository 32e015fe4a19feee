#!/usr/bin/env bash
# The first page of BENCHMARKS.md, reproduced with pdp-bench in one run:
#   1. engines side by side (regorus RVM, interpreter, OPA; no server);
#   2. the wire path (`pdp-bench matrix`: PING, hits, misses by depth and batch; open loop
#      at half of each peak; OPA on the same inputs);
#   3. the HTTP front door (hits one at a time and pipelined, misses);
#   4. latency against offered load (`pdp-bench sweep`, hits and misses, plotted);
#   5. the seeds' traffic mix;
#   6. the audit log's durability modes, A B A B (`pdp-bench compare`).
# One `sark-pdp serve` shard (it pins itself to core 0, its audit writer to the last core);
# the load generator on LOAD_CPUS. Each table is also written as Markdown, and every run as
# JSON, with the plots as SVG, under OUT.
#
#   scripts/bench-report.sh
#
# OUT (default target/bench-report), RUNS (default 3: every figure is a median of RUNS),
# LOAD_CPUS (default: the last core).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-opa.sh >/dev/null
cargo build --release --locked -p shard -p bench-harness
OUT=${OUT:-target/bench-report}
RUNS=${RUNS:-3}
LOAD_CPUS=${LOAD_CPUS:-$(($(nproc) - 1))}
AUDIT_DIR=target/bench-report-audit
mkdir -p "$OUT"
bench() { taskset -c "$LOAD_CPUS" target/release/pdp-bench "$@"; }
# A table from several pdp-bench calls: the first call's header only.
table() { awk 'NR == 1 || !/^\| scenario|^\|---/'; }

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB; Linux $(uname -r)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ); commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "server: 1 shard on core 0, audit writer on core $(($(nproc) - 1)); load generator on core(s) $LOAD_CPUS; every figure the median of $RUNS runs"
} | tee "$OUT/machine.txt"

echo "== 1. engines" >&2
taskset -c 0 target/release/pdp-bench engines --rounds 5 --passes 10 --json "$OUT/engines.json" | tee "$OUT/engines.md"

rm -rf "$AUDIT_DIR"
target/release/sark-pdp serve --shards 1 --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --audit-dir "$AUDIT_DIR" \
  > target/bench-report.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$AUDIT_DIR"' EXIT
for _ in $(seq 300); do grep -q 'listening on' target/bench-report.log && break; sleep 0.1; done
read -r BIN HTTP < <(grep -m1 'listening on' target/bench-report.log | grep -oE '[0-9.]+:[0-9]+' | head -2 | xargs)
[ -n "$HTTP" ] || { cat target/bench-report.log; exit 1; }
cat target/bench-report.log

echo "== 2. the wire path" >&2
bench matrix --addr "$BIN" --server-pid "$server" --runs "$RUNS" --json "$OUT/wire.json" | tee "$OUT/wire.md"

echo "== 3. the HTTP front door" >&2
for shape in "hit 1" "hit 16" "miss 4"; do
  set -- $shape
  bench closed --transport http --addr "$HTTP" --scenario "$1" --depth "$2" --runs "$RUNS" --server-pid "$server" \
    --json "$OUT/http-$1-$2.json"
done | table | tee "$OUT/http.md"

echo "== 4. latency against offered load" >&2
for shape in "hit 16" "miss 4"; do
  set -- $shape
  bench sweep --addr "$BIN" --scenario "$1" --depth "$2" --runs "$RUNS" --duration 2 --warmup 0.5 --server-pid "$server" \
    --json "$OUT/sweep-$1.json" | tee "$OUT/sweep-$1.md"
done

echo "== 5. the seeds' traffic mix" >&2
bench closed --addr "$BIN" --scenario seed-mix --depth 4 --runs "$RUNS" --server-pid "$server" --json "$OUT/seed-mix.json" \
  | tee "$OUT/seed-mix.md"

kill "$server"; wait "$server" || true
trap - EXIT
rm -rf "$AUDIT_DIR"

echo "== 6. audit durability, A B A B" >&2
serve="target/release/sark-pdp serve --shards 1"
for mode in batch sync; do
  bench compare --a "$serve --audit-durability none" --b "$serve --audit-durability $mode" --pairs "$RUNS" \
    --scenario hit --depth 128 --json "$OUT/audit-$mode.json" | tee "$OUT/audit-$mode.md"
done
echo "pdp-bench: the report is in $OUT" >&2
