#!/usr/bin/env bash
# Invalidate-to-acknowledgement latency and reload time on one node: a release
# `sark-pdp serve` (SHARDS, default: cores - 1), idle and under cache-hit load
# (pdp-bench, 4 connections, depth 16); 200 invalidations and 10 reloads of the shipped
# bundle through the admin API, timed by the caller (Python's http.client).
#
#   scripts/bench-lifecycle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p shard -p bench-harness
SHARDS=${SHARDS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
export SARK_PDP_ADMIN_TOKEN=bench-admin-token-0123456789
rm -rf target/bench-lifecycle-audit
target/release/sark-pdp serve --shards "$SHARDS" --listen 127.0.0.1:7478 --http-listen off \
  --admin-listen 127.0.0.1:8283 --audit-dir target/bench-lifecycle-audit > target/bench-lifecycle.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf target/bench-lifecycle-audit' EXIT
for _ in $(seq 100); do grep -q listening target/bench-lifecycle.log && break; sleep 0.1; done
measure() {
python3 - "$1" <<'PY'
import http.client, os, statistics, sys, time
token = os.environ["SARK_PDP_ADMIN_TOKEN"]
def call(path, body):
    c = http.client.HTTPConnection("127.0.0.1", 8283, timeout=60)
    t = time.perf_counter()
    c.request("POST", path, body=body, headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
    return (time.perf_counter() - t) * 1e3
inv = sorted(call("/v1/admin/invalidate", '{"all": true}') for _ in range(200))
rel = sorted(call("/v1/admin/reload", "") for _ in range(10))
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
print(f"| {sys.argv[1]} | {q(inv, .5):.2f} ms | {q(inv, .99):.2f} ms | {statistics.median(rel):.0f} ms [{rel[0]:.0f}–{rel[-1]:.0f}] |")
PY
}
echo "| load | invalidate→ack p50 | p99 | reload (validate + swap + ack), median [min–max] |"
echo "|---|---:|---:|---:|"
measure "idle, $SHARDS shard(s)"
target/release/pdp-bench closed --addr 127.0.0.1:7478 --scenario hit --depth 16 --duration 30 --warmup 0 >/dev/null 2>&1 &
load=$!
sleep 1
measure "cache hits (pdp-bench, 4 x depth 16)"
kill $load 2>/dev/null || true; wait $load 2>/dev/null || true

# Hit throughput with a reload every second vs none, alternating, same server.
echo
echo "| round | reloads | hits/s (pdp-bench, 4 x depth 16, 6 s) |"
echo "|---:|---|---:|"
for round in 1 2; do
  for mode in none every-second; do
    reloader=""
    if [ "$mode" = every-second ]; then
      ( while true; do target/release/sark-pdp reload --admin 127.0.0.1:8283 >/dev/null 2>&1; sleep 1; done ) &
      reloader=$!
    fi
    target/release/pdp-bench closed --addr 127.0.0.1:7478 --scenario hit --depth 16 --duration 6 --warmup 1 \
      --json target/bench-lifecycle-hits.json >/dev/null
    [ -z "$reloader" ] || { kill "$reloader"; wait "$reloader" 2>/dev/null || true; }
    echo "| $round | $mode | $(python3 -c "import json; print(round(json.load(open('target/bench-lifecycle-hits.json'))['per_s']))") |"
  done
done

# Across two nodes through Redis: an invalidation on this node that waits for the other.
command -v redis-server >/dev/null || ./scripts/test-deps.sh
redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis=$!
sleep 0.5
kill $server; wait $server 2>/dev/null || true
rm -rf target/bench-lifecycle-audit target/bench-lifecycle-audit-b
target/release/sark-pdp serve --shards "$SHARDS" --listen 127.0.0.1:7478 --http-listen off --admin-listen 127.0.0.1:8283 \
  --audit-dir target/bench-lifecycle-audit --cluster-redis redis://127.0.0.1:6390 --node-id a > target/bench-lifecycle.log 2>&1 &
server=$!
target/release/sark-pdp serve --shards "$SHARDS" --listen 127.0.0.1:7479 --http-listen off --admin-listen 127.0.0.1:8284 \
  --audit-dir target/bench-lifecycle-audit-b --cluster-redis redis://127.0.0.1:6390 --node-id b > target/bench-lifecycle-b.log 2>&1 &
node_b=$!
trap 'kill $server $node_b $redis 2>/dev/null || true; wait 2>/dev/null || true; rm -rf target/bench-lifecycle-audit target/bench-lifecycle-audit-b' EXIT
for _ in $(seq 100); do grep -q listening target/bench-lifecycle.log && grep -q listening target/bench-lifecycle-b.log && break; sleep 0.1; done
echo
python3 <<'PY'
import http.client, os, time
token = os.environ["SARK_PDP_ADMIN_TOKEN"]
def call():
    c = http.client.HTTPConnection("127.0.0.1", 8283, timeout=60)
    t = time.perf_counter()
    c.request("POST", "/v1/admin/invalidate?wait_nodes=1", body='{"all": true}', headers={"authorization": f"Bearer {token}"})
    r = c.getresponse(); body = r.read()
    assert r.status == 200, (r.status, body)
    return (time.perf_counter() - t) * 1e3
v = sorted(call() for _ in range(200))
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
print("| two nodes via Redis, idle | invalidate → ack on both, p50 | p99 |")
print("|---|---:|---:|")
print(f"| wait_nodes=1 | {q(.5):.2f} ms | {q(.99):.2f} ms |")
PY
