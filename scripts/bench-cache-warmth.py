#!/usr/bin/env python3
"""Cache warmth (issue 11), measured with the release build against fresh servers.

Every experiment drives the seed traffic mix (`pdp-bench closed --scenario seed-mix`:
zipf users x tools, unique users, critical tools, server operations) at the server
from another core (the server on --server-cpus, the load on --load-cpus), and reads
hit ratios from the harness (every answer's cache-hit flag) or the server's /metrics.

  A  hit ratio and decisions/s on 1 shard and on N shards, connections placed by the
     kernel (shared port) vs key-affine (each connection to its shard's own port);
  B  cold start (the server on --cold-server-cpus, so that its audit writer and pre-warm
     thread have a CPU of their own, as in service): hit ratio second by second over the
     first minute after a restart, with
     and without pre-warming from the audit log the first run left, under an open-loop
     load (--cold-rate, about half of what one shard answers) so that, as in service,
     the shard has time its callers leave idle;
  C  critical tools: their hit ratio with refresh ahead off (the default) and on;
  D  adaptive TTL: overall hit ratio and cache entries with it off and on.

Prints a Markdown table per experiment and writes everything to --json. Needs
`cargo build --release -p shard --bin sark-pdp -p bench-harness`.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PDP = ROOT / "target" / "release" / "sark-pdp"
BENCH = ROOT / "target" / "release" / "pdp-bench"


class Server:
    def __init__(self, a, shards, conf, audit, tag, cpus=None):
        self.conf = Path(a.scratch) / f"{tag}.toml"
        self.conf.write_text(conf)
        self.log = open(Path(a.scratch) / f"{tag}.log", "w")
        self.p = subprocess.Popen(
            ["taskset", "-c", cpus or a.server_cpus, str(PDP), "serve", "--shards", str(shards), "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--audit-dir", str(audit), "--config", str(self.conf)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        words = self.p.stdout.readline().split()
        addrs = [w for w in words if w.count(":") == 1 and w.split(":")[1].isdigit()]
        if len(addrs) < 2:
            sys.exit(f"the server did not start: {words}")
        self.addr, self.http = addrs[0], addrs[1]

    def metrics(self):
        text = urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=60)
        self.log.close()


def bench(a, server, tag, *args, mode="closed"):
    out = Path(a.scratch) / f"{tag}.json"
    cmd = ["taskset", "-c", a.load_cpus, str(BENCH), mode, "--scenario", "seed-mix", "--addr", server.addr,
           "--warmup", "0", "--json", str(out), *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def summed(m, name, **labels):
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for series, v in m.items():
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{val}"' in series for k, val in labels.items()):
            total += v
    return total


def fresh(a, tag):
    d = Path(a.scratch) / f"audit-{tag}"
    shutil.rmtree(d, ignore_errors=True)
    return d


def say(*words):
    print(*words, file=sys.stderr, flush=True)


def affinity(a):
    """A: shared vs affine on 1..N shards, a fixed number of questions each run."""
    results = []
    for shards in a.shards:
        for rnd in range(a.runs):
            for route in (["shared"] if shards == 1 else ["shared", "affine"]):
                tag = f"A-{shards}-{route}-{rnd}"
                s = Server(a, shards, "", fresh(a, tag), tag)
                conns = max(4, 2 * shards)
                r = bench(a, s, tag, "--route", route, "--connections", str(conns), "--depth", "16",
                          "--requests", str(a.requests), "--duration", "600")
                s.stop()
                results.append({"shards": shards, "route": route, "round": rnd, "connections": conns,
                                "hit_ratio": r["hit_ratio"], "per_s": r["per_s"], "wrong": r["wrong"]})
                say(f"A {shards} shards {route} round {rnd}: hits {r['hit_ratio']:.3f}, {r['per_s']:.0f}/s")
    print(f"\n### A. Hit ratio by placement ({a.requests:,} seed-mix questions per run from a cold cache; median of {a.runs})\n")
    print("| shards | placement | hit ratio | decisions/s | runs' hit ratios |")
    print("|---:|---|---:|---:|---|")
    for shards in a.shards:
        for route in (["shared"] if shards == 1 else ["shared", "affine"]):
            rs = [r for r in results if r["shards"] == shards and r["route"] == route]
            hits = [r["hit_ratio"] for r in rs]
            print(f"| {shards} | {route} | {statistics.median(hits):.1%} | {statistics.median(r['per_s'] for r in rs):,.0f} | "
                  + ", ".join(f"{h:.1%}" for h in hits) + " |")
    return results


def cold_start(a):
    """B: the first minute after a restart, with and without pre-warming."""
    warm_conf = f"[cache.prewarm]\ntop = {a.prewarm_top}\nminutes = 10\nparameters = true\n"
    first = fresh(a, "B-first")
    s = Server(a, a.cold_shards, warm_conf, first, "B-first", a.cold_server_cpus)
    bench(a, s, "B-first", "--connections", "4", "--depth", "16", "--duration", str(a.cold_fill))
    s.stop()
    out = {}
    modes = (("without", ""), ("while serving", warm_conf), ("before serving", warm_conf + "before_serving = true\n"))
    for mode, conf in modes:
        tag = "B-" + mode.replace(" ", "-")
        d = fresh(a, tag)
        shutil.copytree(first, d)
        t0 = time.monotonic()
        s = Server(a, a.cold_shards, conf, d, tag, a.cold_server_cpus)
        # Traffic once the node answers /metrics (before serving: once it is warm).
        s.metrics()
        ready_s = time.monotonic() - t0
        r = bench(a, s, tag, "--connections", "4", "--rate", str(a.cold_rate), "--duration", str(a.cold_minute), mode="open")
        m = s.metrics()
        s.stop()
        timeline = r["hit_timeline"]
        first10 = [h for t, h in timeline if t <= 10.0]
        out[mode] = {"timeline": timeline, "first_10s": statistics.mean(first10), "first_minute": r["hit_ratio"], "ready_s": ready_s,
                     "p99_us": r["p99_us"],
                     "prewarmed": summed(m, "sark_pdp_cache_prewarmed_entries"),
                     "prewarm_ms": max((v for k, v in m.items() if k.startswith("sark_pdp_cache_prewarm_milliseconds")), default=0)}
        say(f"B {mode}: first 10 s {out[mode]['first_10s']:.3f}, first minute {r['hit_ratio']:.3f}")
    print(f"\n### B. Cold start ({a.cold_shards} shard(s) at {a.cold_rate}/s open loop; the log of a {a.cold_fill} s seed-mix run; pre-warm top {a.prewarm_top})\n")
    print("| restart | ready after | hit ratio, 1st s | first 10 s | whole run | p99 µs | warm-up |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for mode, _ in modes:
        o = out[mode]
        warm = f"{o['prewarmed']:.0f} entries in {o['prewarm_ms']:.0f} ms" if mode != "without" else "—"
        label = "no pre-warming" if mode == "without" else f"pre-warming {mode}"
        print(f"| {label} | {o['ready_s']:.1f} s | {o['timeline'][0][1]:.1%} | {o['first_10s']:.1%} | {o['first_minute']:.1%} | {o['p99_us']:,.0f} | {warm} |")
    return out


def critical(a):
    """C: critical tools' hit ratio with refresh ahead off and on."""
    results = []
    for rnd in range(a.runs):
        for fraction in (0.0, a.refresh):
            tag = f"C-{fraction}-{rnd}"
            s = Server(a, 1, f"[cache.refresh]\ncritical = {fraction}\n", fresh(a, tag), tag)
            r = bench(a, s, tag, "--connections", "4", "--depth", "16", "--duration", str(a.critical_seconds))
            m = s.metrics()
            s.stop()
            h = summed(m, "sark_policy_cache_hits_total", sensitivity_level="critical")
            mi = summed(m, "sark_policy_cache_misses_total", sensitivity_level="critical")
            results.append({"refresh": fraction, "round": rnd, "critical_hit_ratio": h / max(h + mi, 1), "critical": h + mi,
                            "refreshes": summed(m, "sark_pdp_cache_refreshes_total", result="evaluated"),
                            "hit_ratio": r["hit_ratio"], "per_s": r["per_s"]})
            say(f"C refresh {fraction} round {rnd}: critical hits {h / max(h + mi, 1):.3f}")
    print(f"\n### C. Critical tools, refresh ahead ({a.critical_seconds} s of the seed mix, 30 s TTL; median of {a.runs})\n")
    print("| critical refresh | critical hit ratio | critical questions | refreshes evaluated | all hits | decisions/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for fraction in (0.0, a.refresh):
        rs = [r for r in results if r["refresh"] == fraction]
        med = lambda k: statistics.median(r[k] for r in rs)
        label = "off (default)" if fraction == 0 else f"last {fraction:.0%} of the TTL"
        print(f"| {label} | {med('critical_hit_ratio'):.1%} | {med('critical'):,.0f} | {med('refreshes'):,.0f} | {med('hit_ratio'):.1%} | {med('per_s'):,.0f} |")
    return results


def adaptive(a):
    """D: adaptive TTL off and on."""
    results = []
    for rnd in range(a.runs):
        for start in (None, 0.25):
            tag = f"D-{start}-{rnd}"
            conf = "" if start is None else f"[cache.adaptive]\nstart = {start}\n"
            s = Server(a, 1, conf, fresh(a, tag), tag)
            r = bench(a, s, tag, "--connections", "4", "--depth", "16", "--duration", str(a.critical_seconds))
            m = s.metrics()
            s.stop()
            results.append({"adaptive": start, "round": rnd, "hit_ratio": r["hit_ratio"], "per_s": r["per_s"],
                            "evaluations": summed(m, "sark_policy_cache_misses_total")})
            say(f"D adaptive {start} round {rnd}: hits {r['hit_ratio']:.3f}")
    print(f"\n### D. Adaptive TTL ({a.critical_seconds} s of the seed mix; median of {a.runs})\n")
    print("| TTL | hit ratio | evaluations | decisions/s |")
    print("|---|---:|---:|---:|")
    for start in (None, 0.25):
        rs = [r for r in results if r["adaptive"] == start]
        label = "fixed (default)" if start is None else f"adaptive, start {start}"
        print(f"| {label} | {statistics.median(r['hit_ratio'] for r in rs):.1%} | {statistics.median(r['evaluations'] for r in rs):,.0f} | {statistics.median(r['per_s'] for r in rs):,.0f} |")
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", default="ABCD")
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--cold-shards", type=int, default=1)
    p.add_argument("--cold-fill", type=int, default=60)
    p.add_argument("--cold-minute", type=int, default=60)
    p.add_argument("--cold-rate", type=int, default=2000)
    p.add_argument("--prewarm-top", type=int, default=20_000)
    p.add_argument("--refresh", type=float, default=0.25)
    p.add_argument("--critical-seconds", type=int, default=60)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--cold-server-cpus", default="0,1",
                   help="B's server: its shard on the first, its audit writer and pre-warm thread on the last (with the load)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    for binary in (PDP, BENCH):
        if not binary.exists():
            sys.exit(f"{binary} is not built: cargo build --release -p shard --bin sark-pdp -p bench-harness")
    a.scratch = tempfile.mkdtemp(prefix="bench-cache-warmth-")
    print(f"# Cache warmth: {os.cpu_count()} CPUs; server on CPU(s) {a.server_cpus}, load on {a.load_cpus}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    out = {}
    try:
        for e, f in (("A", affinity), ("B", cold_start), ("C", critical), ("D", adaptive)):
            if e in a.experiments:
                out[e] = f(a)
    finally:
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=1))
        shutil.rmtree(a.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
