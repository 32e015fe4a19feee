#!/usr/bin/env bash
# Envoy's ext_authz door against the binary protocol on one server: `sark-pdp serve --shards 1`
# confined to core 0 (its shard, audit writer and ext_authz thread), the load on core 1 —
# `examples/ext_authz_load` (64 Checks in flight over one HTTP/2 connection, the envoy-types
# client) and `pdp-bench closed` (one connection, depth 64) — hit and miss, three rounds,
# A B A B. Prints each run's rate and the server's CPU (from /proc; 100% = its one core).
# Needs the release build: cargo build --release -p shard --bin sark-pdp --example ext_authz_load -p bench-harness
set -euo pipefail
cd "$(dirname "$0")/.."
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
taskset -c 0 target/release/sark-pdp serve --shards 1 --listen 127.0.0.1:7575 --http-listen off --ext-authz-listen 127.0.0.1:9191 --audit-dir $d/a > $d/log 2>&1 & spid=$!
sleep 1.5
tck=$(getconf CLK_TCK)
for r in 1 2 3; do
  for sc in hit miss; do
    s0=$(cpu $spid); t0=$(date +%s.%N)
    out=$(taskset -c 1 target/release/examples/ext_authz_load 127.0.0.1:9191 $sc 64 5 & lp=$!; sleep 0.2; l0=$(cpu $lp); wait $lp)
    t1=$(date +%s.%N); s1=$(cpu $spid)
    echo "ext_authz $sc run $r: $out server_cpu=$(echo "($s1-$s0)/$tck/($t1-$t0)*100" | bc -l | cut -c1-4)%"
    s0=$(cpu $spid); t0=$(date +%s.%N)
    out=$(taskset -c 1 target/release/pdp-bench closed --addr 127.0.0.1:7575 --scenario $sc --connections 1 --depth 64 --duration 5 --warmup 1 2>/dev/null | grep "^| [HM]" | cut -d"|" -f8,15)
    t1=$(date +%s.%N); s1=$(cpu $spid)
    echo "binary    $sc run $r: $out server_cpu=$(echo "($s1-$s0)/$tck/($t1-$t0)*100" | bc -l | cut -c1-4)%"
  done
done
kill $spid; wait $spid 2>/dev/null || true
