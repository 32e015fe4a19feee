#!/usr/bin/env bash
# Fetches the real OPA engine (Go, v1.20.2) as libopabridge.so from the PyPI wheel
# opa-golib-python-bindings 0.4.4 into .opa/ (git-ignored; never committed).
# The policy-case runner and the engine benchmarks load it at run time (SARK_PDP_OPA_LIB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.opa"
lib="$dest/libopabridge.so"
if [ -s "$lib" ]; then
  echo "fetch-opa: $lib already present"
  exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --python-version 3.14 --only-binary=:all: \
  opa-golib-python-bindings==0.4.4 -d "$tmp"
whl=$(ls "$tmp"/opa_golib_python_bindings-0.4.4-*.whl)
python3 - "$whl" "$lib" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z, z.open("opa_bindings/libopabridge.so") as src, open(out + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
import os; os.replace(out + ".tmp", out)
PY
echo "fetch-opa: installed $lib ($(du -h "$lib" | cut -f1))"
