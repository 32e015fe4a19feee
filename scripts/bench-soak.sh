#!/usr/bin/env bash
# The soak (issue 9): one `sark-pdp serve` shard (audit log on disk, durability batch),
# `pdp-bench soak` holding the open loop at 80% of the seed mix's closed-loop peak for
# MINUTES (default 10), sampling the server's RSS, open fds, audit ring depth and drops
# every second. Exits non-zero when the soak's goals are missed.
#
#   scripts/bench-soak.sh [extra pdp-bench soak flags]
#
# The peak: a closed loop of PEAK_SECONDS (default 30) after PEAK_WARMUP (default 60) s,
# long enough for the seed mix's unique users to fill the cache (its steady state: a
# peak taken with a cache still warming overstates what can be held for minutes).
# MINUTES (default 10), OUT (default target/bench-soak.json; plots beside it),
# LOAD_CPUS (default: the last core), AUDIT_DIR (default target/bench-soak-audit; a tmpfs
# such as /dev/shm/x takes the disk out of the run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p shard -p bench-harness
MINUTES=${MINUTES:-10}
OUT=${OUT:-target/bench-soak.json}
LOAD_CPUS=${LOAD_CPUS:-$(($(nproc) - 1))}
AUDIT_DIR=${AUDIT_DIR:-target/bench-soak-audit}
rm -rf "$AUDIT_DIR"
target/release/sark-pdp serve --shards 1 --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --audit-dir "$AUDIT_DIR" \
  > target/bench-soak.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$AUDIT_DIR"' EXIT
for _ in $(seq 300); do grep -q 'listening on' target/bench-soak.log && break; sleep 0.1; done
read -r BIN HTTP < <(grep -m1 'listening on' target/bench-soak.log | grep -oE '[0-9.]+:[0-9]+' | head -2 | xargs)
[ -n "$HTTP" ] || { cat target/bench-soak.log; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD)"
cat target/bench-soak.log
taskset -c "$LOAD_CPUS" target/release/pdp-bench soak --addr "$BIN" --metrics "$HTTP" --server-pid "$server" \
  --minutes "$MINUTES" --duration "${PEAK_SECONDS:-30}" --warmup "${PEAK_WARMUP:-60}" --json "$OUT" "$@"
