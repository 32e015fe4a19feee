#!/usr/bin/env bash
# Run a command in a runc container the way the kubelet would run the StatefulSet's: the
# seccomp profile deploy/seccomp/sark-pdp.json (as a Localhost profile is handed to runc),
# no_new_privs (allowPrivilegeEscalation: false), every capability dropped, uid/gid 65532
# (runAsNonRoot), a read-only root file system. The host's network namespace is kept, so
# the server's loopback listeners are reachable; the host's /usr is the image (read-only).
#
#   RUNC_SHARE=DIR [RUNC_PROFILE=FILE] deploy/seccomp/runc.sh PROGRAM ARGS...
#
# PROGRAM and DIR are bind-mounted at their own paths (PROGRAM read-only, DIR read-write
# and handed to uid 65532), so the arguments need no rewriting. Exit status: the
# container's. Needs root and runc (Debian's package).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
share=${RUNC_SHARE:?RUNC_SHARE: the folder to share read-write}
profile=${RUNC_PROFILE:-$here/sark-pdp.json}
prog=$(readlink -f "$1")
shift
id=sark-pdp-check-$$
bundle=$root/target/deploy-runc/$id
rm -rf "$bundle"
mkdir -p "$bundle/rootfs"/{usr,etc,proc,dev,tmp}
ln -s usr/lib "$bundle/rootfs/lib"
ln -s usr/lib64 "$bundle/rootfs/lib64"
ln -s usr/bin "$bundle/rootfs/bin"
echo "sark-pdp-check" > "$bundle/hostname"
chown -R 65532:65532 "$share"
python3 - "$bundle" "$profile" "$prog" "$share" "$@" <<'EOF'
import json, os, sys
bundle, profile, prog, share, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
seccomp = json.load(open(profile))
import resource
nofile = min(1048576, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
def bind(src, dst=None, ro=True):
    return {"destination": dst or src, "type": "bind", "source": src,
            "options": ["rbind", "nosuid", "nodev"] + (["ro"] if ro else ["rw"])}
spec = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 65532, "gid": 65532},
        "args": [prog] + args,
        "env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + [f"{k}={v}" for k, v in os.environ.items()
                if k.startswith(("SARK_PDP_", "MONOIO_", "RUST_"))],
        "cwd": "/",
        "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "sark-pdp-check",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=16m"]},
        bind("/usr"),
        bind("/etc/hosts"), bind("/etc/resolv.conf"), bind("/etc/nsswitch.conf"),
        bind(os.path.join(bundle, "hostname"), "/etc/hostname"),
        bind(prog),
        bind(share, ro=False),
    ],
    "linux": {
        # The host's network namespace: no "network" entry.
        "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
        "seccomp": seccomp,
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                        "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
json.dump(spec, open(os.path.join(bundle, "config.json"), "w"), indent=1)
EOF
rc=0
runc run --bundle "$bundle" "$id" < /dev/null || rc=$?
runc delete --force "$id" >/dev/null 2>&1 || true
rm -rf "$bundle"
exit $rc
