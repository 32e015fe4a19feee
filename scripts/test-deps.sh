#!/usr/bin/env bash
# Installs the system tools the tests start: redis-server (Debian package) for the
# multi-node tests, PostgreSQL (Debian package; scripts/postgres.sh runs throwaway
# clusters of it) for the audit sink tests. Idempotent; needs root and the Debian mirrors
# once.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
