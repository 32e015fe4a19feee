#!/usr/bin/env python3
"""What the schema cannot say about deploy/kubernetes/sark-pdp.yaml, checked: the pod is
Guaranteed QoS with whole CPUs (so that the static CPU manager pins it), `--shards` is
those CPUs - 1, the probes are on /health, the securityContext is the restricted one with
the Localhost profile deploy/seccomp/sark-pdp.json, the Service has 7474/8181/9191 and a port per shard, the
PDB and anti-affinity select the pods, the audit log is on a claim per pod.

    check.py MANIFEST [--config-out FILE]

--config-out writes the ConfigMap's config.toml there (for the server to load). Prints one
line per finding; exit 1 on any. Needs PyYAML (target/deploy-venv has it).
"""
import argparse
import re
import sys
from fractions import Fraction

import yaml

problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def cpu(q):
    q = str(q)
    return Fraction(q[:-1]) / 1000 if q.endswith("m") else Fraction(q)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--config-out")
    a = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(open(a.manifest)) if d]
    by = {}
    for d in docs:
        by.setdefault(d["kind"], []).append(d)
    sts = (by.get("StatefulSet") or [None])[0]
    if not need(sts, "no StatefulSet"):
        return
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    need(sts["spec"]["selector"]["matchLabels"].items() <= labels.items(), "the StatefulSet's selector does not match its pods")
    containers = spec["containers"] + spec.get("initContainers", [])
    for c in containers:
        r = c.get("resources", {})
        req, lim = r.get("requests", {}), r.get("limits", {})
        for res in ("cpu", "memory"):
            need(res in lim and str(req.get(res, lim.get(res))) == str(lim[res]),
                 f"{c['name']}: {res} requests must equal limits (Guaranteed QoS)")
    main_c = spec["containers"][0]
    lim_cpu = cpu(main_c["resources"]["limits"]["cpu"])
    need(lim_cpu.denominator == 1 and lim_cpu >= 2, f"the CPU limit must be a whole number of CPUs, at least 2 (is {lim_cpu})")
    args = main_c.get("args", [])
    shards = None
    for i, x in enumerate(args):
        m = re.fullmatch(r"--shards(?:=(\d+))?", x)
        if m:
            shards = int(m.group(1) or args[i + 1])
    if need(shards is not None, "no --shards in the container's args"):
        need(shards == lim_cpu - 1, f"--shards {shards} must be the CPUs ({lim_cpu}) - 1: one CPU is the audit writer's")
    need(any(x.startswith("--audit-dir") for x in args), "no --audit-dir")
    audit_dir = next((x.split("=", 1)[1] if "=" in x else args[i + 1] for i, x in enumerate(args) if x.startswith("--audit-dir")), "")
    mounts = {m["mountPath"]: m for m in main_c.get("volumeMounts", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    need(any(audit_dir.startswith(p.rstrip("/") + "/") or audit_dir == p for p, m in mounts.items() if m["name"] in claims),
         f"the audit dir {audit_dir} is not on a volumeClaimTemplate")
    # Probes.
    for probe in ("readinessProbe", "livenessProbe"):
        p = main_c.get(probe, {}).get("httpGet", {})
        need(p.get("path", "").startswith("/health"), f"{probe} is not an HTTP GET of /health…")
    # Security.
    psc, csc = spec.get("securityContext", {}), main_c.get("securityContext", {})
    need(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "runAsNonRoot is not set")
    need(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    need(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    need(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not drop: [ALL]")
    need(not csc.get("capabilities", {}).get("add"), "capabilities are added")
    sp = csc.get("seccompProfile") or psc.get("seccompProfile") or {}
    need(sp.get("type") == "Localhost" and sp.get("localhostProfile", "").endswith("sark-pdp.json"),
         "the seccomp profile is not Localhost …/sark-pdp.json")
    need(spec.get("automountServiceAccountToken") is False, "the service account token is mounted")
    # Placement.
    anti = spec.get("affinity", {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
    need(any(t.get("topologyKey") == "kubernetes.io/hostname" and t["labelSelector"]["matchLabels"].items() <= labels.items() for t in anti),
         "no required anti-affinity on kubernetes.io/hostname for these pods")
    # Ports and Services.
    ports = {p["name"]: p["containerPort"] for p in main_c.get("ports", [])}
    need({7474, 8181, 9191} <= set(ports.values()), f"container ports {sorted(ports.values())} lack one of 7474, 8181, 9191")
    svc_ports = set()
    for s in by.get("Service", []):
        sel = s["spec"].get("selector", {})
        need(sel.items() <= labels.items(), f"Service {s['metadata']['name']} selects other pods")
        for p in s["spec"]["ports"]:
            svc_ports.add(p["port"])
            tp = p.get("targetPort")
            need(tp in ports or tp in ports.values(), f"Service {s['metadata']['name']}: targetPort {tp} is no container port")
    need({7474, 8181, 9191} <= svc_ports, f"the Services' ports {sorted(svc_ports)} lack one of 7474, 8181, 9191")
    # Key-affine clients need every shard's own port (--shard-ports auto: 7475 + shard).
    shards = next((int(a.split("=", 1)[1]) for a in main_c.get("args", []) if a.startswith("--shards=")), None)
    need(shards is not None, "the container's args do not say --shards=N")
    if shards is not None:
        own = set(range(7475, 7475 + shards))
        need(own <= set(ports.values()) and own <= svc_ports, f"--shards={shards}: the container and the Services lack shard ports {sorted(own)}")
    need(any(s["metadata"]["name"] == sts["spec"]["serviceName"] and s["spec"].get("clusterIP") == "None" for s in by.get("Service", [])),
         "the StatefulSet's serviceName is not a headless Service here")
    pdbs = by.get("PodDisruptionBudget", [])
    need(pdbs and all(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs), "no PodDisruptionBudget for these pods")
    # Secrets by reference only; the ConfigMap the pod mounts is here.
    need(not by.get("Secret"), "a Secret with values is in the manifest: create it out of band")
    env = {e["name"]: e for e in main_c.get("env", [])}
    for var in ("SARK_PDP_CALLER_TOKEN", "SARK_PDP_ADMIN_TOKEN"):
        need(var in env and "secretKeyRef" in env[var].get("valueFrom", {}), f"{var} does not come from a Secret")
    cms = {c["metadata"]["name"]: c for c in by.get("ConfigMap", [])}
    cfg = None
    for v in spec.get("volumes", []):
        if "configMap" in v:
            need(v["configMap"]["name"] in cms, f"ConfigMap {v['configMap']['name']} is not in the manifest")
            cfg = cms.get(v["configMap"]["name"], {}).get("data", {}).get("config.toml")
    need(cfg and any(x.startswith("--config") for x in args), "no config.toml mounted and passed with --config")
    if a.config_out and cfg:
        with open(a.config_out, "w") as f:
            f.write(cfg)
    ns = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    need(len(ns) == 1, f"objects in several namespaces: {ns}")
    for p in problems:
        print(f"check.py: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
