#!/usr/bin/env bash
# The project's test command (README, .ci/run). Installs what the tests need, then runs
# lints and every test of the workspace, and closes with the summed count.
# Needs PyPI once (the OPA reference engine); afterwards it runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-opa.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# Sum libtest's "test result:" lines and the policy-case runner's "N passed, N failed".
awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
  END { printf "total: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }
' "$log"
