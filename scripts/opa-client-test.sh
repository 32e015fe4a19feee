#!/usr/bin/env bash
# Interop check of the HTTP front door against a real OPA client written by someone else:
# opa-python-client (PyPI, github.com/Turall/OPA-python-client), which speaks OPA's REST
# data API over plain HTTP (POST /v1/data/<path> with {"input": ...}). It queries
# data.mcp.allow and data.mcp.result on a `sark-pdp serve --http-listen` for every sample
# input and every data.sark.decision case of policies/cases/, and compares each answer
# with `sark-pdp eval` (scripts/opa_client_test.py).
# Needs PyPI once (into target/opa-client-venv, git-ignored); afterwards it runs offline.
# Builds only if target/debug/sark-pdp is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

venv="$root/target/opa-client-venv"
pins=(opa-python-client==3.0.0 PyYAML==6.0.3)
. "$root/scripts/pinned-venv.sh"
pinned_venv "$venv" "${pins[@]}"

bin="$root/target/debug/sark-pdp"
if [ ! -x "$bin" ]; then
  cargo build -p shard --locked
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" serve --shards 1 --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --audit-dir "$tmp/audit" >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!

# The server prints one line naming both addresses; the HTTP one is followed by "(HTTP)".
addr=""
for _ in $(seq 1 200); do
  addr=$(sed -n 's/.* \([0-9.]*:[0-9]*\) (HTTP).*/\1/p' "$tmp/stdout" | head -n 1)
  [ -n "$addr" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "opa-client: sark-pdp serve exited early" >&2
    cat "$tmp/stderr" >&2
    exit 1
  fi
  sleep 0.05
done
if [ -z "$addr" ]; then
  echo "opa-client: sark-pdp serve printed no HTTP address within 10 s" >&2
  cat "$tmp/stdout" "$tmp/stderr" >&2
  exit 1
fi

rc=0
"$venv/bin/python" "$root/scripts/opa_client_test.py" --addr "$addr" --bin "$bin" --root "$root" || rc=$?

# The server must have lived through the run and must stop cleanly on SIGTERM.
if ! kill -0 "$pid" 2>/dev/null; then
  status=0
  wait "$pid" || status=$?
  echo "opa-client: sark-pdp serve died during the run (exit status $status); its stderr:" >&2
  tail -n 20 "$tmp/stderr" >&2
  rc=1
else
  kill -TERM "$pid"
  status=0
  wait "$pid" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "opa-client: sark-pdp serve exited with status $status on SIGTERM" >&2
    rc=1
  fi
fi
pid=""
exit "$rc"
