#!/usr/bin/env bash
# The tools scripts/deploy-check.sh needs, installed only where missing (idempotent; as root
# on Debian):
#   - Debian: systemd (systemd-analyze verify / security / syscall-filter), systemd-container
#     (systemd-nspawn: the unit run by systemd as PID 1 in a container), curl, strace (the
#     seccomp profile's derivation), runc (the profile tested the way the kubelet's runtime
#     loads it), python3-seccomp (libseccomp's bindings: the profile and the unit's
#     SystemCallFilter= loaded by deploy/seccomp/launch.py), python3-venv, openssl;
#   - PyPI, into target/deploy-venv: kubernetes-validate (the Kubernetes schemas 1.25-1.37
#     bundled; --strict refuses unknown fields), pinned.
#
#   scripts/deploy-tools.sh          install what is missing, print one line per tool
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
VENV=target/deploy-venv

debs=(systemd systemd-container strace runc python3-seccomp python3-venv openssl curl util-linux iproute2 procps)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deploy-tools: not root: cannot install ${missing[*]}" >&2
    exit 1
  fi
  echo "deploy-tools: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv's Python: the one on PATH (any 3.9+); Debian's python3-seccomp is used by
# /usr/bin/python3 separately (launch.py), never through the venv.
if [ ! -x "$VENV/bin/kubernetes-validate" ] \
  || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  echo "deploy-tools: kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

echo "deploy-tools: systemd $(systemd-analyze --version | head -1 | awk '{print $2}'), strace $(strace -V | head -1 | awk '{print $NF}'), runc $(runc --version | head -1 | awk '{print $3}'), libseccomp $(dpkg-query -W -f='${Version}' libseccomp2), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)" >&2
