#!/usr/bin/env bash
# Shipping the audit log, measured beside the decisions it records: one shard under
# closed-loop cache hits (pdp-bench, 4 connections × depth 16) for 10 s, with no sink, with
# one sink (Splunk HEC and Datadog against scripts/siem_receiver.py, PostgreSQL — a local
# cluster from scripts/postgres.sh, durable — with COPY batches of 100, 1000 and 10000), and
# with all three sinks dead (nothing listening). Records shipped per second is the change
# of siem_events_sent_total over the same 10 s; then, the load stopped, over 5 s more
# (catching up on the backlog with no decisions to make: the sink's own rate, "≥" when it
# ran out of backlog), with the CPU the sink's thread and its peer (the receiver, or every
# PostgreSQL process) used meanwhile: the one near 100% of a core is the bottleneck.
# Configurations interleave round by round; prints a Markdown table.
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
# Records shipped so far and records not yet shipped, over every sink.
sent() {
  python3 - "$1" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
total = lambda name: sum(float(v) for v in re.findall(r'^' + name + r'\{sink="[a-z]+"\} (\S+)$', text, re.M))
print(total("siem_events_sent_total"), total("sark_pdp_sink_lag_records"))
PY
}
# CPU ticks used so far by the sink threads of server $1, and by the sink's peer.
ticks() {
  python3 - "$1" "$receiver" "$work/pg" <<'PY'
import glob, os, sys
server, receiver, pgdir = sys.argv[1:]
def t(stat):
    try:
        f = open(stat).read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except OSError:
        return 0
sink = sum(t(s) for s in glob.glob(f"/proc/{server}/task/*/stat") if open(s).read().split("(", 1)[1].startswith("sink-"))
pg = sum(t(f"/proc/{p}/stat") for p in os.listdir("/proc") if p.isdigit() and os.path.exists(f"/proc/{p}/cmdline")
         and (open(f"/proc/{p}/cmdline", "rb").read().startswith(b"postgres:") or pgdir.encode() in open(f"/proc/{p}/cmdline", "rb").read()))
print(sink, t(f"/proc/{receiver}/stat"), pg)
PY
}
echo "| round | sink | decisions/s | records shipped/s, same 10 s | shipped / decided | catching up, no load: records/s | sink thread CPU | peer CPU |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
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
    cpu0=$(ticks "$server")
    sleep 5
    later=$(sent 127.0.0.1:8188)
    cpu1=$(ticks "$server")
    python3 - "$round" "$conf" "$work/closed.json" "$cpu0" "$cpu1" $before $after $later <<'PY'
import json, os, sys
r, conf, path, cpu0, cpu1 = sys.argv[1:6]
(before, _), (after, _), (later, lag) = [(float(a), float(b)) for a, b in zip(sys.argv[6::2], sys.argv[7::2])]
hz = os.sysconf("SC_CLK_TCK")
sink_cpu, recv_cpu, pg_cpu = [(int(b) - int(a)) / hz / 5 * 100 for a, b in zip(cpu0.split(), cpu1.split())]
peer = pg_cpu if conf.startswith("pg") else recv_cpu
c = json.load(open(path))
shipped = (after - before) / c["seconds"]
decided = c["per_s"]
sink = conf not in ("none", "dead")
ratio = f"{shipped / decided:.2f}" if sink else "—"
catch = f"{'≥ ' if lag == 0 else ''}{(later - after) / 5:.0f}" if sink else "—"
cpu = f"{sink_cpu:.0f}% | {peer:.0f}%" if sink else "— | —"
print(f"| {r} | {conf} | {decided:.0f} | {shipped:.0f} | {ratio} | {catch} | {cpu} |")
PY
    kill "$server"; wait "$server" || true
  done
done
