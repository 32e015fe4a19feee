#!/usr/bin/env bash
# Installs the system tools the tests start: redis-server (Debian package) for the
# multi-node tests. Idempotent; needs root and the Debian mirrors once.
set -euo pipefail
if ! command -v redis-server >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
fi
