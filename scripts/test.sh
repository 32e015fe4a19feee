#!/usr/bin/env bash
# The project's test command (README, .ci/run). Installs what the tests need, then runs
# lints and every test of the workspace, then the OPA-client interop check of the HTTP front
# door (scripts/opa-client-test.sh, counted as one test), then the perf gate (perf/check:
# each hot path's instruction count against perf/baseline/, one test per bench), and closes
# with the summed count.
# Needs PyPI once (the OPA reference engine, the OPA client's venv) and the Debian mirrors
# once (redis-server, scripts/test-deps.sh); afterwards it runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh clone's build is a one-off: incremental state would only take disk (gigabytes).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# A first build and test run writes about 3.5 GiB under target/ (a fresh clone's whole
# .ci/run, 2026-12-02); say so plainly rather than die in the linker with "No space left
# on device".
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((6 * 1024 * 1024)) ] && [ ! -d target/debug ]; then
  echo "warning: $((free_kib / 1024)) MiB free here; a first build and test run needs about 4 GiB" >&2
fi
./scripts/fetch-opa.sh
./scripts/test-deps.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
opa_rc=0
./scripts/opa-client-test.sh 2>&1 | tee -a "$log" || opa_rc=$?
# The Python client's pytest suite against the real binary (its summary line is counted),
# and the deployment artifacts' checks (closing with "deploy: N passed, N failed").
py_rc=0
./scripts/python-client-test.sh 2>&1 | tee -a "$log" || py_rc=$?
deploy_rc=0
# On the binaries cargo test just built (a `cargo build` of its own would rebuild them
# with other features).
SARK_PDP_BIN=target/debug/sark-pdp PDP_BENCH_BIN=target/debug/pdp-bench ./scripts/deploy-check.sh 2>&1 | tee -a "$log" || deploy_rc=$?
# perf/check closes with "perf: N passed, N failed" (counted below); one that stops before
# it counts as a failure.
perf_rc=0
perf/check 2>&1 | tee -a "$log" || perf_rc=$?
# Sum libtest's "test result:" lines, the policy-case runner's "N passed, N failed",
# pytest's summary ("N failed, N passed, N xfailed in 3.2s"), deploy-check's and
# perf/check's; the OPA-client check adds one pass or one failure, and a step that stops
# before its summary counts as one failure.
awk -v opa_rc="$opa_rc" -v perf_rc="$perf_rc" -v py_rc="$py_rc" -v deploy_rc="$deploy_rc" '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
  /^[0-9]+ (passed|failed|error).* in [0-9.]+s( \(.*\))?$/ { counted_py = 1
        for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^(failed|error)/) f += $i } }
  /^deploy: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; counted_deploy = 1 }
  /^perf: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; counted_perf = 1 }
  END { if (opa_rc == 0) p += 1; else f += 1
        if (py_rc != 0 && !counted_py) f += 1
        if (deploy_rc != 0 && !counted_deploy) f += 1
        if (perf_rc != 0 && !counted_perf) f += 1
        printf "total: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }
' "$log"
