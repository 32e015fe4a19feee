#!/usr/bin/env bash
# Issue 3's server measurements: start `sark-pdp serve`, drive it with `pdp-bench matrix`
# (PING, cache hits, cache misses at depth 1/16/128 and batch 1/64, open loop at half of
# each peak, and the OPA engine on the same miss inputs), stop it.
#
#   scripts/bench-server.sh [extra pdp-bench matrix flags]
#
# RUNS (default 3, interleaved), SHARDS (default 1), HARNESS_CPUS (default: the last core, which the audit writer also
# uses), AUDIT_DURABILITY (none | batch | sync; default batch), OUT (default
# target/bench-server.json). The audit log goes to target/bench-audit/, removed after.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-opa.sh >/dev/null
cargo build --release --locked -p shard -p bench-harness
cores=$(nproc)
SHARDS=${SHARDS:-1}
HARNESS_CPUS=${HARNESS_CPUS:-$((cores - 1))}
AUDIT_DIR=target/bench-audit
AUDIT_DURABILITY=${AUDIT_DURABILITY:-batch}
OUT=${OUT:-target/bench-server.json}
PORT=${PORT:-7475}
rm -rf "$AUDIT_DIR"
target/release/sark-pdp serve --shards "$SHARDS" --listen "127.0.0.1:$PORT" --http-listen off \
  --audit-dir "$AUDIT_DIR" --audit-durability "$AUDIT_DURABILITY" \
  > target/bench-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$AUDIT_DIR"' EXIT
for _ in $(seq 100); do grep -q listening target/bench-server.log && break; sleep 0.1; done
grep -q listening target/bench-server.log || { cat target/bench-server.log; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(uname -r)"
echo "server: $SHARDS shard(s), audit durability $AUDIT_DURABILITY; load generator on core(s) $HARNESS_CPUS"
cat target/bench-server.log
taskset -c "$HARNESS_CPUS" target/release/pdp-bench matrix --addr "127.0.0.1:$PORT" --server-pid "$server" \
  --runs "${RUNS:-3}" --json "$OUT" "$@"
