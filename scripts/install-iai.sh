#!/usr/bin/env bash
# Installs what the iai-callgrind benches need (`cargo bench -p perf --bench iai_audit`):
# valgrind (Debian package) and iai-callgrind-runner 0.16.1, matching the iai-callgrind
# library version in Cargo.lock.
set -euo pipefail
command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
if ! iai-callgrind-runner --version 2>/dev/null | grep -q 0.16.1; then
  cargo install --locked iai-callgrind-runner --version 0.16.1
fi
