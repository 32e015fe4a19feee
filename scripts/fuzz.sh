#!/usr/bin/env bash
# Fuzzing (issue 9): builds the libFuzzer harness in fuzz/libfuzzer with the
# sanitizer-coverage instrumentation cargo-fuzz uses (stable -C flags; no nightly, no
# cargo-fuzz) and runs each target for RUNS executions, growing a working corpus in
# target/fuzz/corpus/<target> from the committed seeds in fuzz/corpus/<target>.
#
#   scripts/fuzz.sh [target ...]      default: every target in fuzz/libfuzzer/fuzz_targets
#
# RUNS (default 100000) executions per target; JOBS (default 1) processes per target
# (libFuzzer's -fork); MAX_LEN (default 65536) bytes per input; TIMEOUT (default 10) s
# per input; ASAN=1 builds with AddressSanitizer (needs RUSTC_BOOTSTRAP for -Zsanitizer
# on a stable toolchain: used only here). Prints one line per target (executions run,
# crashes) and writes target/fuzz/summary.tsv (or SUMMARY); exits non-zero if any target crashed.
# A crash's input is saved under target/fuzz/artifacts/<target>/: copy it into
# fuzz/regressions/<target>/ (the test suite replays that folder) and fix the cause.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100000}
JOBS=${JOBS:-1}
MAX_LEN=${MAX_LEN:-65536}
TIMEOUT=${TIMEOUT:-10}
OUT=target/fuzz
export CARGO_TARGET_DIR="$PWD/$OUT/build"
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [ "${ASAN:-0}" = 1 ]; then
  export RUSTC_BOOTSTRAP=1
  flags="$flags -Zsanitizer=address"
fi
export RUSTFLAGS="$(echo $flags)"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=($(ls fuzz/libfuzzer/fuzz_targets | sed 's/\.rs$//'))
fi
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --manifest-path fuzz/libfuzzer/Cargo.toml --target "$triple" $(printf -- '--bin %s ' "${targets[@]}")
mkdir -p "$OUT"
summary=${SUMMARY:-$OUT/summary.tsv}
printf 'target\texecutions\tcrashes\tcorpus\tseconds\n' > "$summary"
failed=0
for t in "${targets[@]}"; do
  corpus="$OUT/corpus/$t"
  artifacts="$OUT/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="$OUT/$t.log"
  start=$(date +%s)
  set +e
  "$CARGO_TARGET_DIR/$triple/release/$t" "$corpus" "fuzz/corpus/$t" -runs="$RUNS" -max_len="$MAX_LEN" -timeout="$TIMEOUT" \
    -rss_limit_mb=4096 -artifact_prefix="$artifacts/" -print_final_stats=1 $( [ "$JOBS" -gt 1 ] && echo "-fork=$JOBS -ignore_crashes=1" ) > "$log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | awk '{s+=$1} END {print s+0}')
  crashes=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  size=$(find "$corpus" -type f | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$execs" "$crashes" "$size" "$secs" >> "$summary"
  echo "fuzz $t: $execs executions in ${secs}s, $crashes crashes, corpus $size inputs (exit $rc; log $log)"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    grep -m5 -E 'panicked|ERROR: |SUMMARY' "$log" || tail -20 "$log"
  fi
done
column -t "$summary" 2>/dev/null || cat "$summary"
exit $failed
