#!/usr/bin/env bash
# The project's unsafe code under AddressSanitizer (issue 9): pdp/src/audit_io.rs (io_uring
# submissions pointing at the caller's buffers) through the audit log's own tests, which
# write, fsync, rotate and recover through it, and pdp/src/opa.rs (the OPA engine's C ABI:
# strings handed over and freed) through the policy-case runner, which evaluates every
# case on the OPA engine. Miri cannot run either (FFI, io_uring syscalls), and no nightly
# toolchain can be had here: -Zsanitizer runs on the stable compiler with RUSTC_BOOTSTRAP,
# in this script only, into its own target directory.
#
#   scripts/sanitize.sh        prints the tests' results; exits non-zero on a finding
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-opa.sh >/dev/null
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export CARGO_TARGET_DIR="$PWD/target/asan"
# Leaks are checked in the audit tests; the Go runtime in the OPA bridge keeps memory at
# exit that LeakSanitizer would report, so not there.
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" cargo test --locked -p pdp --target "$triple" --lib audit_log
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" cargo test --locked -p pdp --target "$triple" --test policy_cases
