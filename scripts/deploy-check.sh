#!/usr/bin/env bash
# Check the deployment artifacts in deploy/: the systemd unit (systemd-analyze verify and
# security, its seccomp side loaded with libseccomp, and the unit itself run by systemd as
# PID 1 in a systemd-nspawn container), the Kubernetes manifest (schemas, strict, and
# what the schema cannot say), the seccomp profile (its JSON, the calls it refuses, the
# server under it with io_uring and with the epoll fallback, the server in a runc container
# as the kubelet would run it, and a fresh strace derivation against it).
#
#   scripts/deploy-check.sh
#
# One line per check, `ok: …` or `FAILED: …` (with the evidence indented below), then
# `deploy: N passed, N failed`; exit 1 on any failure. Installs its tools first
# (scripts/deploy-tools.sh). The server: SARK_PDP_BIN and PDP_BENCH_BIN when set, else
# `cargo build` of the debug binaries (a no-op when they are up to date).
# DEPLOY_CHECK_FULL=1 also runs the full derivation (TLS, the clients, DNS, PostgreSQL).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=target/deploy-check
passed=0 failed=0

ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() {
  echo "FAILED: $1"
  [ -n "${2:-}" ] && printf '%s\n' "$2" | tail -n 25 | sed 's/^/    /'
  failed=$((failed + 1))
}
# check NAME COMMAND...: ok when the command exits 0.
check() {
  local name=$1 out t=$SECONDS
  shift
  if out=$("$@" 2>&1); then ok "$name ($((SECONDS - t)) s)"; else bad "$name ($((SECONDS - t)) s)" "$out"; fi
}
finish() {
  echo "deploy-check: ${SECONDS} s" >&2
  echo "deploy: $passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
}

if ! out=$(scripts/deploy-tools.sh 2>&1); then
  bad "deploy-tools.sh (the checks' tools)" "$out"
  finish
fi
echo "${out##*$'\n'}"
PY=python3
SYSPY=/usr/bin/python3
VPY=target/deploy-venv/bin/python
rm -rf "$W"
mkdir -p "$W"

# --- the binaries -------------------------------------------------------------------------
if [ -n "${SARK_PDP_BIN:-}" ]; then
  BIN=$SARK_PDP_BIN
  BENCH=${PDP_BENCH_BIN:-}
else
  if out=$(cargo build --locked -q -p shard --bin sark-pdp -p bench-harness --bin pdp-bench 2>&1); then
    ok "cargo build (sark-pdp, pdp-bench)"
  else
    bad "cargo build (sark-pdp, pdp-bench)" "$out"
  fi
  BIN=target/debug/sark-pdp BENCH=target/debug/pdp-bench
fi
have_bin=0
[ -x "$BIN" ] && have_bin=1
[ -n "$BENCH" ] && [ ! -x "$BENCH" ] && BENCH=
bench=() ext=()
[ -n "$BENCH" ] && bench=(--bench "$BENCH")
# Envoy's ext_authz listener, where the build has it: a gRPC Check too.
[ -x "$BIN" ] && "$BIN" serve --help 2>/dev/null | grep -q -- --ext-authz-listen && ext=(--ext-authz)
BIN_ABS=$(readlink -f "$BIN" 2>/dev/null || echo "$BIN")

# --- systemd ------------------------------------------------------------------------------
UNIT=deploy/systemd/sark-pdp.service
sysroot=$W/sysroot
mkdir -p "$sysroot/usr/local/bin" "$sysroot/etc/systemd/system" "$sysroot/usr/lib/systemd" "$sysroot/bin"
# The unit's ExecStart= and ExecReload= binaries where it names them, in a root of their own
# with the host's units (verify follows the unit's dependencies).
if [ $have_bin = 1 ]; then
  ln "$BIN_ABS" "$sysroot/usr/local/bin/sark-pdp" 2>/dev/null || cp "$BIN_ABS" "$sysroot/usr/local/bin/sark-pdp"
fi
cp /bin/kill "$sysroot/bin/kill"
cp -a /usr/lib/systemd/system "$sysroot/usr/lib/systemd/"
cp "$UNIT" "$sysroot/etc/systemd/system/sark-pdp.service"
# verify exits 0 with warnings (an unknown key, a value it cannot parse): any output fails.
out=$(systemd-analyze verify --root="$sysroot" --man=no sark-pdp.service 2>&1)
rc=$?
if [ $rc = 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify $UNIT: no warnings"; else bad "systemd-analyze verify $UNIT (exit $rc)" "$out"; fi
# …and it does warn: the same unit with a misspelt key and a bad value must not pass.
sed -e 's/^UMask=0077/UMask=0077\nProtectSytem=strict/' -e 's/^ProtectHome=yes/ProtectHome=maybe/' "$UNIT" > "$sysroot/etc/systemd/system/sark-pdp-broken.service"
out=$(systemd-analyze verify --root="$sysroot" --man=no sark-pdp-broken.service 2>&1)
if grep -q "ProtectSytem" <<<"$out" && grep -qiE "protect ?home" <<<"$out"; then
  ok "systemd-analyze verify catches a misspelt key and a bad value (negative control)"
else
  bad "systemd-analyze verify did not flag the broken copy of the unit" "$out"
fi
rm -f "$sysroot/etc/systemd/system/sark-pdp-broken.service"
# The exposure score, as recorded at the top of the unit.
out=$(systemd-analyze security --offline=yes --root="$sysroot" --no-pager sark-pdp.service 2>&1)
score=$(sed -n 's/.*Overall exposure level for sark-pdp.service: \([0-9.]*\).*/\1/p' <<<"$out")
recorded=$(grep -m1 -o 'security --offline=yes (systemd [0-9]*): exposure [0-9.]*' "$UNIT" | awk '{print $NF}')
if [ -n "$score" ] && [ "$score" = "$recorded" ]; then
  ok "systemd-analyze security --offline: exposure $score, as recorded in the unit"
else
  bad "systemd-analyze security --offline: exposure '$score', the unit records '$recorded'" "$(grep -E '✗|→' <<<"$out")"
fi
# io_uring and sched_setaffinity get through the unit's SystemCallFilter= lines.
out=$($SYSPY - "$UNIT" <<'EOF'
import sys
sys.path.insert(0, "deploy/seccomp")
import launch
u = launch.unit_settings(sys.argv[1])
groups = launch.systemd_groups()
names = launch.expand(["@default"], groups)
for v in u["filter"]:
    names = names - launch.expand(v[1:].split(), groups) if v.startswith("~") else names | launch.expand(v.split(), groups)
need = {"io_uring_setup", "io_uring_enter", "io_uring_register", "sched_setaffinity", "sched_getaffinity", "fdatasync", "clone3"}
missing = sorted(need - names)
print("missing: " + " ".join(missing) if missing else f"{len(names)} calls allowed, among them " + " ".join(sorted(need)))
sys.exit(1 if missing else 0)
EOF
)
if [ $? = 0 ]; then ok "the unit's SystemCallFilter= allows io_uring and sched_setaffinity ($out)"; else bad "the unit's SystemCallFilter=" "$out"; fi

if [ $have_bin = 1 ]; then
  # The example config.toml is accepted (unknown keys would be refused); the example env
  # file's placeholders are refused.
  cfgrun() { # CONFIG ENV-ASSIGNMENTS...: start with the config, stop at "listening on"
    local cfg=$1 log=$W/cfgrun.log
    shift
    env "$@" "$BIN" serve --config "$cfg" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
      --audit-dir "$W/cfgrun-audit" > "$log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$log" && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    kill -TERM $pid 2>/dev/null
    wait $pid
    local rc=$?
    grep -q "listening on" "$log" && [ $rc = 0 ] || { cat "$log"; return 1; }
  }
  check "deploy/systemd/config.toml is accepted by sark-pdp serve" \
    cfgrun deploy/systemd/config.toml SARK_PDP_CALLER_TOKEN=deploy-check-caller-0123 SARK_PDP_ADMIN_TOKEN=deploy-check-admin-01234
  out=$(set -a; . deploy/systemd/env.example; set +a; timeout 20 "$BIN" serve --config deploy/systemd/config.toml \
    --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --audit-dir "$W/env-audit" 2>&1)
  rc=$?
  if [ $rc = 2 ] && grep -q "at least 16 characters" <<<"$out"; then
    ok "deploy/systemd/env.example's placeholder tokens are refused (the server will not start until they are replaced)"
  else
    bad "deploy/systemd/env.example's placeholders were not refused (exit $rc)" "$out"
  fi
  # The unit's seccomp side for real: its SystemCallFilter=, RestrictAddressFamilies=,
  # MemoryDenyWriteExecute= and RestrictNamespaces=, as systemd 252 builds them, loaded with
  # libseccomp; the server must serve on io_uring with every shard pinned.
  check "sark-pdp under the unit's seccomp filters (SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute=, RestrictNamespaces=): io_uring, shards pinned, HTTP, admin, SIGHUP, SIGTERM" \
    $PY deploy/seccomp/exercise.py --light --expect-driver io_uring --expect-pinned "${ext[@]}" --bin "$BIN" --workdir "$W/unit" -- \
    $SYSPY deploy/seccomp/launch.py --unit "$UNIT" -- "$BIN" serve
fi
# The unit for real: systemd as PID 1 in a systemd-nspawn container (the host's PID 1 is
# $(ps -o comm= -p 1), not systemd, so there is no systemctl here otherwise).
if [ $have_bin = 1 ]; then
  t=$SECONDS
  out=$(deploy/systemd/nspawn-test.sh "$BIN" "$BENCH" 2>&1)
  rc=$?
  echo "deploy-check: nspawn-test.sh $((SECONDS - t)) s" >&2
  while IFS= read -r line; do
    case $line in
      ok:*) ok "${line#ok: }" ;;
      FAILED:*) bad "${line#FAILED: }" ;;
      "    "*) echo "$line" ;;
    esac
  done <<<"$out"
  case $rc in
    0) ;;
    3) echo "note: the unit was not started: systemd-nspawn could not boot a container here"; sed 's/^/    /' <<<"$out" | tail -5 ;;
    *) grep -q '^FAILED' <<<"$out" || bad "deploy/systemd/nspawn-test.sh (exit $rc)" "$out" ;;
  esac
fi

# --- Kubernetes ---------------------------------------------------------------------------
MANIFESTS=(deploy/kubernetes/*.yaml)
for v in 1.30.0 1.37.0; do
  check "kubernetes-validate --strict -k $v ${MANIFESTS[*]}" target/deploy-venv/bin/kubernetes-validate --strict --quiet -k "$v" "${MANIFESTS[@]}"
done
# --strict refuses an unknown field (negative control).
sed 's/allowPrivilegeEscalation: false/allowPrivilegeEscalation: false\n            runAsNonRoots: true/' deploy/kubernetes/sark-pdp.yaml > "$W/unknown-field.yaml"
out=$(target/deploy-venv/bin/kubernetes-validate --strict --quiet -k 1.37.0 "$W/unknown-field.yaml" 2>&1)
if [ $? != 0 ] && grep -q runAsNonRoots <<<"$out"; then ok "kubernetes-validate --strict refuses an unknown field (negative control)"; else bad "kubernetes-validate --strict let an unknown field through" "$out"; fi
check "deploy/kubernetes/check.py: Guaranteed QoS with whole CPUs, --shards = CPUs - 1, probes, securityContext, Localhost seccomp, ports, PDB, anti-affinity, audit claim" \
  $VPY deploy/kubernetes/check.py deploy/kubernetes/sark-pdp.yaml --config-out "$W/k8s-config.toml"
if [ $have_bin = 1 ] && [ -s "$W/k8s-config.toml" ]; then
  check "the ConfigMap's config.toml is accepted by sark-pdp serve" \
    cfgrun "$W/k8s-config.toml" SARK_PDP_CALLER_TOKEN=deploy-check-caller-0123 SARK_PDP_ADMIN_TOKEN=deploy-check-admin-01234
fi

# --- seccomp ------------------------------------------------------------------------------
PROFILE=deploy/seccomp/sark-pdp.json
out=$($SYSPY - "$PROFILE" <<'EOF'
import json, sys
import seccomp
p = json.load(open(sys.argv[1]))
errs = []
if p.get("defaultAction") != "SCMP_ACT_ERRNO":
    errs.append(f"defaultAction {p.get('defaultAction')}, not SCMP_ACT_ERRNO")
if p.get("architectures") != ["SCMP_ARCH_X86_64"]:
    errs.append(f"architectures {p.get('architectures')}")
allowed, seen = set(), {}
for r in p["syscalls"]:
    for n in r["names"]:
        try:
            seccomp.resolve_syscall(seccomp.Arch.X86_64, n)
        except Exception:
            errs.append(f"{n}: not a system call libseccomp knows on x86_64")
        if not r.get("args"):
            if n in seen:
                errs.append(f"{n} listed twice")
            seen[n] = r["action"]
        if r["action"] == "SCMP_ACT_ALLOW":
            allowed.add(n)
for n in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
    if n not in allowed:
        errs.append(f"{n} not allowed")
for n in ("ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "init_module", "kexec_load", "perf_event_open", "process_vm_readv"):
    if n in allowed:
        errs.append(f"{n} allowed")
print("\n".join(errs) if errs else f"{len(allowed)} calls allowed")
sys.exit(1 if errs else 0)
EOF
)
if [ $? = 0 ]; then ok "$PROFILE: OCI/Docker/Kubernetes JSON, default SCMP_ACT_ERRNO, x86_64, every name known to libseccomp, io_uring allowed ($out)"; else bad "$PROFILE" "$out"; fi
# Loaded: calls outside the list fail with EPERM, io_uring_setup gets through, threads start.
out=$($SYSPY deploy/seccomp/launch.py --profile "$PROFILE" --probe 2>&1)
want="ptrace:refused unshare(CLONE_NEWUSER):refused mount:refused bpf:refused keyctl:refused io_uring_setup:allowed thread:allowed"
got=$(sed -n 's/^probe \([^ ]*\): \([a-z]*\).*/\1:\2/p' <<<"$out" | tr '\n' ' ')
miss=""
for w in $want; do grep -qF " $w " <<<" $got " || miss="$miss $w"; done
if [ -z "$miss" ]; then ok "under $PROFILE: ptrace, unshare(CLONE_NEWUSER), mount, bpf, keyctl fail with EPERM; io_uring_setup and threads work"; else bad "under $PROFILE, expected$miss" "$out"; fi

if [ $have_bin = 1 ]; then
  check "sark-pdp under $PROFILE (libseccomp): io_uring, shards pinned, binary protocol, HTTP, admin, SIGHUP, SIGTERM" \
    $PY deploy/seccomp/exercise.py --light --expect-driver io_uring --expect-pinned "${bench[@]}" "${ext[@]}" --bin "$BIN" --requests 300 --workdir "$W/profile" -- \
    $SYSPY deploy/seccomp/launch.py --profile "$PROFILE" -- "$BIN" serve
  check "sark-pdp under $PROFILE without the io_uring calls (as under containerd's or Docker's default profile): the epoll fallback serves" \
    $PY deploy/seccomp/exercise.py --light --expect-driver epoll "${ext[@]}" --bin "$BIN" --workdir "$W/profile-epoll" -- \
    $SYSPY deploy/seccomp/launch.py --profile "$PROFILE" --deny io_uring_setup --deny io_uring_enter --deny io_uring_register -- "$BIN" serve
  # The runtime's way: runc loads the profile itself, after no_new_privs and dropping every
  # capability, as uid 65532 on a read-only root, then execs the server.
  mkdir -p "$W/runc"
  check "sark-pdp in a runc container under $PROFILE (uid 65532, no_new_privs, no capabilities, read-only root): io_uring, traffic, SIGHUP, SIGTERM" \
    env RUNC_SHARE="$ROOT/$W/runc" $PY deploy/seccomp/exercise.py --expect-driver io_uring --expect-confined --expect-uid 65532 \
    "${bench[@]}" "${ext[@]}" --bin "$BIN" --requests 300 --workdir "$ROOT/$W/runc" -- deploy/seccomp/runc.sh "$BIN" serve
  $PY -c 'import json,sys; p=json.load(open(sys.argv[1])); [r.update(names=[n for n in r["names"] if not n.startswith("io_uring")]) for r in p["syscalls"]]; p["syscalls"]=[r for r in p["syscalls"] if r["names"]]; json.dump(p, open(sys.argv[2], "w"))' \
    "$PROFILE" "$W/no-io-uring.json"
  mkdir -p "$W/runc-epoll"
  check "sark-pdp in a runc container under $PROFILE less io_uring: the epoll fallback" \
    env RUNC_SHARE="$ROOT/$W/runc-epoll" RUNC_PROFILE="$ROOT/$W/no-io-uring.json" $PY deploy/seccomp/exercise.py --light --expect-driver epoll --expect-confined \
    --bin "$BIN" --workdir "$ROOT/$W/runc-epoll" -- deploy/seccomp/runc.sh "$BIN" serve
  # The derivation again, on this build: nothing it calls is outside the profile.
  derive=(--quick)
  [ "${DEPLOY_CHECK_FULL:-0}" = 1 ] && derive=()
  check "deploy/seccomp/derive.sh ${derive[*]} --check: every call this build makes under strace (io_uring and epoll runs) is in $PROFILE" \
    env SARK_PDP_BIN="$BIN" PDP_BENCH_BIN="$BENCH" deploy/seccomp/derive.sh "${derive[@]}" --check
else
  bad "no sark-pdp binary at $BIN: the live checks did not run"
fi

finish
