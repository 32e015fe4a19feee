#!/usr/bin/env bash
# Derive the seccomp allow-list from what the server really calls: run `sark-pdp serve`
# under `strace -f -c` in each configuration (io_uring; the epoll fallback, io_uring_setup
# failing with EPERM as it does under a profile that blocks it; TLS; the server as a client
# - bundle directory with --watch, bundle server, Splunk sink, Redis, names resolved
# through DNS), drive traffic at it with exercise.py, SIGHUP it, SIGTERM it, and collect
# the names of the system calls made.
#
#   deploy/seccomp/derive.sh [--check] [--quick]
#
# Writes target/deploy-trace/<run>.txt (strace's tables) and observed.txt (the union);
# --quick writes under target/deploy-trace/quick/.
# --check: compare with deploy/seccomp/sark-pdp.json and exit 1 when a call was observed
# that the profile does not allow. --quick: only the io_uring and epoll runs, fewer
# requests (what scripts/deploy-check.sh runs).
# SARK_PDP_BIN, PDP_BENCH_BIN: the binaries (default: the newer of target/release/… and
# target/debug/…).
set -euo pipefail
cd "$(dirname "$0")/../.."
check=0 quick=0
for arg in "$@"; do
  case $arg in
    --check) check=1 ;;
    --quick) quick=1 ;;
    *) echo "usage: $0 [--check] [--quick]" >&2; exit 2 ;;
  esac
done
# The newer of the release and debug builds.
pick() { local f best=; for f in "$@"; do [ -x "$f" ] && { [ -z "$best" ] || [ "$f" -nt "$best" ]; } && best=$f; done; echo "$best"; }
BIN=${SARK_PDP_BIN:-$(pick target/release/sark-pdp target/debug/sark-pdp)}
BENCH=${PDP_BENCH_BIN:-$(pick target/release/pdp-bench target/debug/pdp-bench)}
[ -n "$BIN" ] || { echo "derive: no sark-pdp binary (cargo build --release -p shard)" >&2; exit 2; }
command -v strace >/dev/null || { echo "derive: strace is not installed" >&2; exit 2; }
PY=${PYTHON:-python3}
OUT=target/deploy-trace
[ $quick = 1 ] && OUT=target/deploy-trace/quick
rm -rf "$OUT"
mkdir -p "$OUT"
bench=()
[ -n "$BENCH" ] && bench=(--bench "$BENCH")
# Envoy's ext_authz gRPC listener, on builds that have it: a Check by hand (HTTP/2).
if "$BIN" serve --help 2>/dev/null | grep -q -- --ext-authz-listen; then
  bench+=(--ext-authz)
else
  echo "derive: this build has no --ext-authz-listen: ext_authz not traced" >&2
fi
requests=3000
[ $quick = 1 ] && requests=300

trace() { # name exercise-args... -- strace-args...
  local name=$1
  shift
  local ex=()
  while [ "$1" != "--" ]; do ex+=("$1"); shift; done
  shift
  echo "derive: $name" >&2
  "$PY" deploy/seccomp/exercise.py "${ex[@]}" "${bench[@]}" --bin "$BIN" --requests "$requests" --workdir "$OUT/work-$name" -- \
    strace -f -qq -c -o "$OUT/$name.txt" "$@" "$BIN" serve > "$OUT/$name.log" 2>&1 \
    || { cat "$OUT/$name.log" >&2; echo "derive: $name: the exercise failed" >&2; exit 1; }
}

trace uring --expect-driver io_uring --
trace epoll --expect-driver epoll -- -e inject=io_uring_setup:error=EPERM
if [ $quick = 0 ]; then
  # A PostgreSQL sink too, where PostgreSQL is installed (scripts/test-deps.sh).
  pg=()
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    pgport=$((20000 + RANDOM % 20000))
    scripts/postgres.sh start "$PWD/$OUT/pg" "$pgport" fast >/dev/null
    trap 'scripts/postgres.sh stop "$PWD/$OUT/pg"' EXIT
    pg=(--postgres-port "$pgport")
  else
    echo "derive: PostgreSQL is not installed: the PostgreSQL sink is not traced" >&2
  fi
  trace tls --mode tls --
  trace tls-epoll --mode tls --expect-driver epoll -- -e inject=io_uring_setup:error=EPERM
  # The clients: host names go through glibc's resolver to a stub on 127.0.0.1:53, in a
  # mount namespace whose /etc/resolv.conf points there (the host's is untouched).
  if command -v unshare >/dev/null && ! ss -lun 2>/dev/null | grep -q '127.0.0.1:53 '; then
    printf 'nameserver 127.0.0.1\noptions attempts:3 timeout:3\n' > "$OUT/resolv.conf"
    # shellcheck disable=SC2016
    dns=(unshare -m -- sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$PWD/$OUT/resolv.conf")
    echo "derive: clients (DNS through a stub resolver)" >&2
    "$PY" deploy/seccomp/exercise.py --mode clients --dns-port 53 "${pg[@]}" "${bench[@]}" --bin "$BIN" --requests "$requests" --workdir "$OUT/work-clients" -- \
      "${dns[@]}" strace -f -qq -c -o "$OUT/clients.txt" "$BIN" serve > "$OUT/clients.log" 2>&1 \
      || { cat "$OUT/clients.log" >&2; echo "derive: clients: the exercise failed" >&2; exit 1; }
  else
    trace clients --mode clients "${pg[@]}" --
  fi
  trace clients-epoll --mode clients "${pg[@]}" --expect-driver epoll -- -e inject=io_uring_setup:error=EPERM
  if [ ${#pg[@]} -gt 0 ]; then
    rows=$(runuser -u postgres -- psql -h 127.0.0.1 -p "$pgport" -U postgres -Atc 'select count(*) from policy_decision_logs' 2>/dev/null || echo 0)
    echo "derive: PostgreSQL sink: $rows rows shipped" >&2
    [ "$rows" -gt 0 ] || { echo "derive: the PostgreSQL sink shipped nothing" >&2; exit 1; }
  fi
fi

# strace -c's table: the last column of each row between the dashed lines, less "total".
for f in "$OUT"/*.txt; do
  [ "$(basename "$f")" = observed.txt ] || [ "$(basename "$f")" = resolv.conf ] && continue
  awk '/^-+ /{n++; next} n==1 && NF>=5 {print $NF}' "$f"
done | sort -u > "$OUT/observed.txt"
echo "derive: $(wc -l < "$OUT/observed.txt") system calls observed ($OUT/observed.txt):" >&2
tr '\n' ' ' < "$OUT/observed.txt" >&2
echo >&2
if [ $check = 1 ]; then
  "$PY" - "$OUT/observed.txt" deploy/seccomp/sark-pdp.json <<'EOF'
import json, sys
observed = set(open(sys.argv[1]).read().split())
profile = json.load(open(sys.argv[2]))
allowed = set()
for rule in profile["syscalls"]:
    if rule["action"] == "SCMP_ACT_ALLOW":
        allowed.update(rule["names"])
# clone3 answers ENOSYS on purpose (glibc then uses clone, whose flags the profile checks).
missing = sorted(observed - allowed - {"clone3"})
if missing:
    print("derive: observed but not allowed by the profile: " + " ".join(missing))
    sys.exit(1)
print(f"derive: every observed call is allowed ({len(observed)} observed, {len(allowed)} allowed)")
EOF
fi
