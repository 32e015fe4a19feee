#!/usr/bin/env bash
# The Python client (clients/python, package sark-pdp-client, import sark_pdp) against the
# real server: pip-installs it into target/python-client-venv (git-ignored) and runs its
# pytest suite, which starts `sark-pdp serve` on free ports itself (SARK_PDP_BIN, default
# target/debug/sark-pdp) and compares decisions with `sark-pdp eval`.
# Needs PyPI once (the pinned pytest, PyYAML and setuptools); afterwards it runs offline
# (the package is built without build isolation, by the pinned setuptools).
# Builds only if target/debug/sark-pdp is missing. The last line is pytest's summary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

venv="$root/target/python-client-venv"
pins=(pytest==9.2.0 PyYAML==6.0.4 setuptools==80.9.0)
. "$root/scripts/pinned-venv.sh"
pinned_venv "$venv" "${pins[@]}"
# A real install of the working tree's package (not PYTHONPATH): the tests import it
# from site-packages.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
  --no-deps --force-reinstall "$root/clients/python"

if [ -z "${SARK_PDP_BIN:-}" ] && [ ! -x "$root/target/debug/sark-pdp" ]; then
  cargo build -p shard --locked
fi

cd "$root/clients/python"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
