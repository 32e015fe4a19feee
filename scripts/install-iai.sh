#!/usr/bin/env bash
# Installs what the iai-callgrind benches need (perf/check, `cargo bench -p perf --bench iai_…`):
# valgrind (Debian package) and iai-callgrind-runner 0.16.1, matching the iai-callgrind
# library version in Cargo.lock.
set -euo pipefail
command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
# (`--version` exits 1 outside a bench, naming its own version in the message.)
if [[ "$(iai-callgrind-runner --version 2>&1 || true)" != *"(0.16.1)"* ]]; then
  cargo install --locked iai-callgrind-runner --version 0.16.1
fi
