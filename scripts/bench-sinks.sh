#!/usr/bin/env bash
# Shipping the audit log, measured beside the decisions it records: one shard under
# closed-loop cache hits (pdp-bench, 4 connections × depth 16) for 10 s, with no sink, with
# one sink (Splunk HEC and Datadog against scripts/siem_receiver.py, PostgreSQL — a local
# cluster from scripts/postgres.sh, durable — with COPY batches of 100, 1000 and 10000), and
# with all three sinks dead (nothing listening). Records shipped per second is the change
# of siem_events_sent_total over the same 10 s. Configurations interleave round by round;
# prints a Markdown table.
#
#   scripts/bench-sinks.sh [ROUNDS]        (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p shard -p bench-harness
ROUNDS=${1:-3}
LOAD_CPUS=${LOAD_CPUS:-$(($(nproc) - 1))}
work=$(mktemp -d /tmp/bench-sinks.XXXXXX)
chmod 755 "$work"
pg_port=55433; recv_port=55434
pg_url=$(scripts/postgres.sh start "$work/pg" "$pg_port")
python3 scripts/siem_receiver.py "$recv_port" & receiver=$!
cleanup() { kill "$receiver" 2>/dev/null || true; scripts/postgres.sh stop "$work/pg"; rm -rf "$work"; }
trap cleanup EXIT
sink_conf() {
  case "$1" in
    none) ;;
    splunk) printf '[sinks.splunk]\nurl = "http://127.0.0.1:%s"\ntoken = "t"\nbatch = 1000\nmax_wait_s = 1\n' "$recv_port" ;;
    datadog) printf '[sinks.datadog]\nurl = "http://127.0.0.1:%s"\napi_key = "k"\nbatch = 1000\nmax_wait_s = 1\n' "$recv_port" ;;
    pg*) printf '[sinks.postgres]\nurl = "%s"\nbatch = %s\nmax_wait_s = 1\n' "$pg_url" "${1#pg}" ;;
    dead) printf '[sinks.splunk]\nurl = "http://127.0.0.1:9"\ntoken = "t"\n[sinks.datadog]\nurl = "http://127.0.0.1:9"\napi_key = "k"\n[sinks.postgres]\nurl = "host=127.0.0.1 port=9 user=postgres"\n' ;;
  esac
}
sent() {
  python3 - "$1" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
print(sum(float(v) for v in re.findall(r'^siem_events_sent_total\{sink="[a-z]+"\} (\S+)$', text, re.M)))
PY
}
echo "| round | sink | decisions/s | records shipped/s | shipped / decided |"
echo "|---:|---|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
  for conf in none splunk datadog pg100 pg1000 pg10000 dead; do
    rm -rf "$work/audit"
    psql "$pg_url" -q -c "DROP TABLE IF EXISTS policy_decision_logs, sark_pdp_sink_cursors, sark_pdp_schema_migrations" 2>/dev/null
    sink_conf "$conf" > "$work/pdp.toml"
    target/release/sark-pdp serve --shards 1 --listen 127.0.0.1:7478 --http-listen 127.0.0.1:8188 \
      --audit-dir "$work/audit" --config "$work/pdp.toml" > "$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q listening "$work/server.log" && break; sleep 0.1; done
    before=$(sent 127.0.0.1:8188)
    taskset -c "$LOAD_CPUS" target/release/pdp-bench closed --addr 127.0.0.1:7478 --scenario hit --connections 4 --depth 16 \
      --duration 10 --warmup 0 --json "$work/closed.json" >/dev/null
    after=$(sent 127.0.0.1:8188)
    python3 - "$round" "$conf" "$before" "$after" "$work/closed.json" <<'PY'
import json, sys
r, conf, before, after, path = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
c = json.load(open(path))
shipped = (after - before) / c["seconds"] if "seconds" in c else (after - before) / 10
decided = c["per_s"]
ratio = f"{shipped / decided:.2f}" if conf not in ("none", "dead") else "—"
print(f"| {r} | {conf} | {decided:.0f} | {shipped:.0f} | {ratio} |")
PY
    kill "$server"; wait "$server" || true
  done
done
