#!/usr/bin/python3
"""Load a seccomp filter with libseccomp (Debian's python3-seccomp), then exec a program under
it: a stand-in for what runc does with a Kubernetes Localhost profile, and for systemd's
SystemCallFilter=, where neither can be run.

    launch.py --profile deploy/seccomp/sark-pdp.json [--deny NAME]... -- PROGRAM ARGS...
    launch.py --systemd @system-service [--mdwe] [--families AF_INET,AF_INET6,AF_UNIX] -- ...
    launch.py --unit deploy/systemd/sark-pdp.service -- ...   (the unit's own settings)
    launch.py ... --probe          (no exec: try calls the filter must refuse, report, exit)

--profile: an OCI / Docker / Kubernetes seccomp profile (defaultAction, defaultErrnoRet,
  architectures, syscalls[] with names, action, errnoRet, args); --deny takes names out of
  it (e.g. the io_uring calls, to see the epoll fallback under a profile that blocks it).
--systemd: the allow-list systemd builds from SystemCallFilter= groups (expanded with
  `systemd-analyze syscall-filter`), refused with EPERM as with SystemCallErrorNumber=EPERM,
  non-native architectures refused (SystemCallArchitectures=native); --families adds
  RestrictAddressFamilies= (socket() of another family: EAFNOSUPPORT), --mdwe adds
  MemoryDenyWriteExecute= as systemd 252 builds it (mmap writable and executable, mprotect
  or pkey_mprotect to executable, shmat with SHM_EXEC: EPERM). Each is its own filter,
  stacked as systemd stacks them; --restrict-namespaces adds RestrictNamespaces=yes.

Runs with /usr/bin/python3 (where Debian puts the seccomp module), never a venv's.
"""
import argparse
import ctypes
import errno
import json
import os
import re
import socket
import subprocess
import sys

import seccomp

OPS = {
    "SCMP_CMP_NE": seccomp.NE, "SCMP_CMP_LT": seccomp.LT, "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_GE": seccomp.GE, "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}
ARCHES = {
    "SCMP_ARCH_X86_64": seccomp.Arch.X86_64, "SCMP_ARCH_X86": seccomp.Arch.X86,
    "SCMP_ARCH_X32": seccomp.Arch.X32, "SCMP_ARCH_AARCH64": seccomp.Arch.AARCH64,
    "SCMP_ARCH_ARM": seccomp.Arch.ARM,
}


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno.EPERM if errno_ret is None else errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return seccomp.TRAP
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    raise SystemExit(f"launch: action {name} not supported here")


def add_arches(f, names):
    for arch in names:
        if arch not in ARCHES:
            raise SystemExit(f"launch: architecture {arch} unknown here")
        try:
            f.add_arch(ARCHES[arch])
        except Exception:  # the native one is there already
            pass


def profile_filter(path, deny):
    with open(path) as fh:
        prof = json.load(fh)
    f = seccomp.SyscallFilter(defaction=action(prof["defaultAction"], prof.get("defaultErrnoRet")))
    add_arches(f, prof.get("architectures", []))
    n = 0
    for rule in prof["syscalls"]:
        act = action(rule["action"], rule.get("errnoRet"))
        args = [seccomp.Arg(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0)) for a in rule.get("args", [])]
        for name in rule["names"]:
            if name in deny:
                continue
            try:
                f.add_rule(act, name, *args)
                n += 1
            except RuntimeError as e:
                # As runc does: a name this libseccomp or architecture does not know is
                # skipped.
                print(f"launch: skipping {name}: {e}", file=sys.stderr)
    return f, n


def systemd_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], check=True, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if re.match(r"^@\S+", line):
            cur = line.split()[0]
            groups[cur] = []
        elif cur and line.strip() and not line.strip().startswith("#"):
            groups[cur].append(line.strip())
    return groups


def expand(names, groups, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for n in names:
        if n.startswith("@"):
            if n in seen:
                continue
            seen.add(n)
            out |= expand(groups.get(n, []), groups, seen)
        else:
            out.add(n)
    return out


def unit_settings(path):
    """The seccomp-related settings of a unit's [Service] section, in order."""
    out = {"filter": [], "families": None, "mdwe": False, "namespaces": False}
    section = None
    for line in open(path):
        line = line.strip()
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = (x.strip() for x in line.split("=", 1))
        if key == "SystemCallFilter":
            out["filter"].append(value)
        elif key == "RestrictAddressFamilies":
            out["families"] = value
        elif key == "MemoryDenyWriteExecute":
            out["mdwe"] = value in ("yes", "true", "1", "on")
        elif key == "RestrictNamespaces":
            out["namespaces"] = value in ("yes", "true", "1", "on")
    return out


def systemd_filters(lines, families, mdwe, restrict_namespaces=False):
    """SystemCallFilter= lines as systemd reads them: the first decides allow-list or
    deny-list; each later one adds to (or, with ~, takes from) it. An allow-list always
    has @default (systemd adds it: what execve and the runtime linker need)."""
    groups = systemd_groups()
    if not lines or lines[0].startswith("~"):
        raise SystemExit("launch: only allow-list filters (the first SystemCallFilter= without ~)")
    names = expand(["@default"], groups)
    for value in lines:
        if value.startswith("~"):
            names -= expand(value[1:].split(), groups)
        else:
            names |= expand(value.split(), groups)
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    n = 0
    for name in sorted(names):
        try:
            f.add_rule(seccomp.ALLOW, name)
            n += 1
        except RuntimeError:
            pass
    filters = [f]
    if families:
        fam = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        allowed = sorted(getattr(socket, x) for x in families.replace(",", " ").split())
        # socket(domain): refused unless domain is one of these (AF_* stop below 64).
        for d in range(64):
            if d not in allowed:
                fam.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, d))
        fam.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GE, 64))
        filters.append(fam)
    if mdwe:
        PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
        m = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        m.add_rule(seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
        m.add_rule(seccomp.ERRNO(errno.EPERM), "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
        m.add_rule(seccomp.ERRNO(errno.EPERM), "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
        m.add_rule(seccomp.ERRNO(errno.EPERM), "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
        filters.append(m)
    if restrict_namespaces:
        # RestrictNamespaces=yes: no new namespace by unshare or clone, no setns; clone3
        # (whose flags a filter cannot read) answers ENOSYS so that glibc falls back to clone.
        r = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080):
            r.add_rule(seccomp.ERRNO(errno.EPERM), "unshare", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
            r.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        r.add_rule(seccomp.ERRNO(errno.EPERM), "setns")
        r.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        filters.append(r)
    return filters, n


def probe():
    """Calls the server never makes, which the filter must refuse; and io_uring_setup,
    which it must allow unless denied. One line each, `refused` or `allowed`."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = {"ptrace": 101, "mount": 165, "unshare": 272, "bpf": 321, "io_uring_setup": 425, "keyctl": 250,
          "personality": 135, "setns": 308}
    results = {}

    def call(name, *args):
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr[name]), *[ctypes.c_long(a) for a in args])
        return r, ctypes.get_errno()

    # ptrace(PTRACE_TRACEME): allowed to any process normally.
    results["ptrace"] = call("ptrace", 0, 0, 0, 0)
    results["unshare(CLONE_NEWUSER)"] = call("unshare", 0x10000000)
    results["mount"] = call("mount", 0, 0, 0, 0, 0)
    results["bpf"] = call("bpf", 0, 0, 0)
    results["keyctl"] = call("keyctl", 0, 0, 0, 0, 0)
    results["personality(0xffffffff)"] = call("personality", 0xFFFFFFFF)
    # io_uring_setup(1, NULL): EFAULT when allowed (a bad pointer), EPERM when refused.
    results["io_uring_setup"] = call("io_uring_setup", 1, 0)
    # A thread, so clone (or clone3's ENOSYS, then clone) is shown to work.
    import threading
    t = threading.Thread(target=lambda: None)
    try:
        t.start()
        t.join()
        results["thread"] = (0, 0)
    except RuntimeError as e:
        results["thread"] = (-1, getattr(e, "errno", 0) or 1)
    for name, (r, e) in results.items():
        state = "refused" if r == -1 and e == errno.EPERM else "allowed"
        print(f"probe {name}: {state} (ret {r}, {errno.errorcode.get(e, e) if e else 'ok'})", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile")
    ap.add_argument("--deny", action="append", default=[])
    ap.add_argument("--systemd", action="append", default=[], help="a SystemCallFilter= value (repeat, in order)")
    ap.add_argument("--unit", help="take SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute= and RestrictNamespaces= from this unit")
    ap.add_argument("--families")
    ap.add_argument("--mdwe", action="store_true")
    ap.add_argument("--restrict-namespaces", action="store_true")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if a.unit:
        u = unit_settings(a.unit)
        a.systemd, a.families, a.mdwe, a.restrict_namespaces = u["filter"], u["families"], u["mdwe"], u["namespaces"]
        print(f"launch: {a.unit}: SystemCallFilter={u['filter']} RestrictAddressFamilies={u['families']} "
              f"MemoryDenyWriteExecute={u['mdwe']} RestrictNamespaces={u['namespaces']}", file=sys.stderr)
    if bool(a.profile) == bool(a.systemd):
        ap.error("one of --profile, --systemd or --unit")
    if a.profile:
        filters, n = profile_filter(a.profile, set(a.deny))
        filters = [filters]
    else:
        filters, n = systemd_filters(a.systemd, a.families, a.mdwe, a.restrict_namespaces)
    print(f"launch: {n} rules, {len(filters)} filter(s)", file=sys.stderr, flush=True)
    # As runc with noNewPrivileges: no_new_privs, then the filter, then execve.
    # The allow-list last: the others need seccomp(2) to be loaded, which it may refuse.
    for f in reversed(filters):
        f.set_attr(seccomp.Attr.CTL_NNP, 1)
        f.load()
    if a.probe:
        probe()
        return
    if not cmd:
        ap.error("nothing to exec")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
