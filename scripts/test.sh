#!/usr/bin/env bash
# The project's test command (README, .ci/run). Installs what the tests need, then runs
# lints and every test of the workspace. Needs network access to PyPI once (for the OPA
# reference engine); afterwards it runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-opa.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
