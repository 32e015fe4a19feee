#!/usr/bin/env bash
# Run deploy/systemd/sark-pdp.service for real: boot systemd as PID 1 in a systemd-nspawn
# container (the host's /usr read-only, a copy of its /etc, a private network namespace),
# with the unit, config.toml and an env file installed where the unit expects them, and
# check what systemd made of it: active, the dynamic user, the seccomp filter, no_new_privs,
# no capabilities, shards pinned, /health and /metrics (io_uring), traffic, `systemctl
# reload` (SIGHUP), `systemctl stop` (exit 0), the audit log kept in the StateDirectory
# across a restart.
#
#   deploy/systemd/nspawn-test.sh SARK_PDP [PDP_BENCH]
#
# One line per check (ok: / FAILED:); exit 0 when all passed, 1 when one failed, 3 when the
# container could not be booted here at all (no systemd-nspawn, not root, no cgroups): then
# nothing was learnt about the unit. Needs root, systemd-container, curl.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$(readlink -f "${1:?the sark-pdp binary}")
bench=${2:-}
W=$root/target/deploy-check/nspawn
CALLER=nspawn-check-caller-token-0123
ADMIN=nspawn-check-admin-token-01234
failed=0
ok() { echo "ok: systemd (nspawn): $1"; }
bad() { echo "FAILED: systemd (nspawn): $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | tail -n 20 | sed 's/^/    /'; failed=1; }

command -v systemd-nspawn >/dev/null || { echo "nspawn-test: systemd-nspawn is not installed (systemd-container)"; exit 3; }
[ "$(id -u)" = 0 ] || { echo "nspawn-test: not root"; exit 3; }

rm -rf "$W"
R=$W/root
mkdir -p "$R"/{usr/lib,dev,proc,sys,run,tmp,var,root,srv} "$W/usr-upper/local/bin"
cp -a /etc "$R/etc"
cp /usr/lib/os-release "$R/usr/lib/os-release"   # nspawn looks for it before /usr is mounted
for l in bin lib lib64 sbin; do [ -L "/$l" ] && ln -s "$(readlink "/$l")" "$R/$l"; done
# Only this unit starts with the system (not the host's own services).
rm -rf "$R/etc/systemd/system/multi-user.target.wants"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants" "$R/etc/sark-pdp"
cp "$here/sark-pdp.service" "$R/etc/systemd/system/sark-pdp.service"
ln -s /etc/systemd/system/sark-pdp.service "$R/etc/systemd/system/multi-user.target.wants/sark-pdp.service"
cp "$here/config.toml" "$R/etc/sark-pdp/config.toml"   # as shipped: its own network namespace, no clash
printf 'SARK_PDP_ADMIN_TOKEN=%s\nSARK_PDP_CALLER_TOKEN=%s\n' "$ADMIN" "$CALLER" > "$R/etc/sark-pdp/env"
chmod 0600 "$R/etc/sark-pdp/env"
tr -d '-' < /proc/sys/kernel/random/uuid > "$R/etc/machine-id"
# The binary at the unit's path, in a writable layer over the host's read-only /usr.
ln "$bin" "$W/usr-upper/local/bin/sark-pdp" 2>/dev/null || cp "$bin" "$W/usr-upper/local/bin/sark-pdp"

timeout 300 systemd-nspawn -D "$R" -b --register=no --keep-unit --link-journal=no --private-network \
  --machine=sark-pdp-check --overlay-ro=/usr:"$W/usr-upper":/usr > "$W/boot.log" 2>&1 < /dev/null &
nspawn=$!
trap 'kill $nspawn 2>/dev/null; wait $nspawn 2>/dev/null' EXIT
# The container's PID 1: a systemd below this nspawn.
leader=
for _ in $(seq 100); do
  for p in $(pgrep -x systemd); do
    q=$p
    while [ "$q" -gt 1 ]; do
      q=$(awk '{print $4}' /proc/$q/stat 2>/dev/null || echo 1)
      [ "$q" = "$nspawn" ] && { leader=$p; break 2; }
    done
  done
  [ -n "$leader" ] && break
  kill -0 $nspawn 2>/dev/null || break
  sleep 0.1
done
if [ -z "$leader" ]; then
  echo "nspawn-test: the container did not boot:"
  tail -5 "$W/boot.log" | sed 's/^/    /'
  exit 3
fi
inside() { nsenter -t "$leader" -a "$@"; }
innet() { nsenter -t "$leader" -n "$@"; }
state=
for _ in $(seq 300); do
  state=$(inside systemctl is-active sark-pdp 2>/dev/null)
  [ "$state" = active ] || [ "$state" = failed ] && innet curl -s -o /dev/null http://127.0.0.1:8181/health 2>/dev/null && break
  [ "$state" = failed ] && break
  sleep 0.1
done
if [ "$(inside systemctl is-system-running 2>/dev/null)" = offline ] || [ -z "$state" ]; then
  echo "nspawn-test: systemd did not come up in the container:"
  tail -5 "$W/boot.log" | sed 's/^/    /'
  exit 3
fi
journal() { inside journalctl -u sark-pdp --no-pager -o cat 2>&1; }
if [ "$state" = active ]; then ok "sark-pdp.service is active under systemd $(inside systemctl --version | head -1 | awk '{print $2}') as PID 1"; else bad "sark-pdp.service is $state" "$(journal)"; fi

pid=$(inside systemctl show -p MainPID --value sark-pdp)
hostpid=
for p in $(pgrep -x sark-pdp); do
  [ "$(readlink /proc/$p/ns/pid)" = "$(readlink /proc/$leader/ns/pid)" ] && hostpid=$p
done
if [ -n "$hostpid" ]; then
  st=$(grep -E '^(Uid|Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/$hostpid/status | tr -s '\t' ' ' | tr '\n' ';')
  uid=$(awk '/^Uid:/ {print $2}' /proc/$hostpid/status)
  if [[ $st == *"Seccomp: 2;"* && $st == *"NoNewPrivs: 1;"* && $st == *"CapEff: 0000000000000000;"* && $st == *"CapBnd: 0000000000000000;"* ]] && [ "$uid" != 0 ]; then
    ok "main process confined: dynamic uid $uid, a seccomp filter, no_new_privs, no capabilities ($st)"
  else
    bad "main process not confined as the unit says" "$st"
  fi
  pins=""
  for t in /proc/$hostpid/task/*; do
    c=$(cat "$t/comm")
    a=$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status")
    [[ $c == shard-* ]] && [ "$a" != "${c#shard-}" ] && pins="$pins $c:$a"
  done
  if [ -z "$pins" ]; then ok "every shard pinned to its CPU (sched_setaffinity passes the unit's SystemCallFilter=)"; else bad "shards not pinned:$pins"; fi
else
  bad "cannot find the service's process (MainPID $pid in the container)"
fi
code=$(innet curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8181/health)
[ "$code" = 200 ] && ok "GET /health: 200" || bad "GET /health: $code"
metrics=$(innet curl -s -H "authorization: Bearer $CALLER" http://127.0.0.1:8181/metrics)
if grep -q 'sark_pdp_shard_info{.*driver="io_uring"' <<<"$metrics" && ! grep -q 'driver="epoll"' <<<"$metrics" \
  && grep -q 'sark_pdp_audit_info{.*io="io_uring' <<<"$metrics"; then
  ok "/metrics: every shard and the audit writer on io_uring (RestrictAddressFamilies=, SystemCallFilter=, MemoryDenyWriteExecute= let it through)"
else
  bad "/metrics: not io_uring everywhere" "$(grep -E 'shard_info|audit_info' <<<"$metrics")"
fi
code=$(innet curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $CALLER" -H 'content-type: application/json' \
  --data-binary "{\"input\": $(cat "$root/shard/samples/invoke-medium.json")}" http://127.0.0.1:8181/v1/data/sark/decision)
[ "$code" = 200 ] && ok "POST /v1/data/sark/decision: 200" || bad "POST /v1/data/sark/decision: $code"
if [ -n "$bench" ] && [ -x "$bench" ]; then
  out=$(innet "$bench" closed --addr 127.0.0.1:7474 --token "$CALLER" --connections 2 --depth 8 --warmup 0 --duration 10 --requests 1000 --scenario seed-mix 2>&1)
  [ $? = 0 ] && ok "pdp-bench seed-mix over the binary protocol on 0.0.0.0:7474 (config.toml as shipped)" || bad "pdp-bench seed-mix" "$out"
fi
inside systemctl reload sark-pdp
for _ in $(seq 100); do journal | grep -q "SIGHUP: bundle" && break; sleep 0.1; done
journal | grep -q "SIGHUP: bundle .* serving on every shard" && ok "systemctl reload: SIGHUP, the bundle reloaded on every shard" || bad "systemctl reload" "$(journal)"
inside systemctl stop sark-pdp
res=$(inside systemctl show -p Result -p ExecMainStatus --value sark-pdp | tr '\n' ' ')
if [ "$res" = "success 0 " ] && journal | grep -q "stopped; [0-9]* audit records written to /var/lib/sark-pdp/audit"; then
  ok "systemctl stop: SIGTERM, drained, exit 0, '$(journal | grep -o 'stopped; [0-9]* audit records' | tail -1)'"
else
  bad "systemctl stop: Result/ExecMainStatus $res" "$(journal)"
fi
inside systemctl start sark-pdp
for _ in $(seq 100); do journal | grep -c "listening on" | grep -q 2 && break; sleep 0.1; done
seq_line=$(journal | grep "audit log /var/lib/sark-pdp/audit" | tail -1)
if [[ $seq_line =~ next\ seq\ ([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 1 ]; then
  ok "restart: the audit log survived in the StateDirectory (next seq ${BASH_REMATCH[1]})"
else
  bad "restart: the audit log did not survive" "$seq_line"
fi
inside systemctl poweroff 2>/dev/null
for _ in $(seq 100); do kill -0 $nspawn 2>/dev/null || break; sleep 0.1; done
exit $failed
