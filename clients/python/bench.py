"""Decisions per second from one Python process against a running ``sark-pdp serve``.

Every mode runs ``--runs`` times on hit traffic (four inputs in turn: cache hits after
the first of each) and on miss traffic (a user id never seen before in every request:
every one evaluated); the table gives the median rate of each, and the median CPU use
of this process and, with ``--server-pid``, of the server (from /proc, all its threads),
so the bottleneck shows.

    taskset -c 0 target/release/sark-pdp serve --shards 1 --listen 127.0.0.1:7474 \\
        --http-listen off --audit-dir /tmp/bench-audit &
    taskset -c 1 target/python-client-venv/bin/python clients/python/bench.py \\
        --port 7474 --server-pid $!
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import threading
import time
from collections.abc import Callable

from sark_pdp import AsyncClient, AsyncPool, Client, Input, Pool, Tool


#: Requests per run of miss traffic, at most.
MISSES = 5_000


def inputs(n: int, traffic: str, run: str) -> list[Input]:
    """``n`` inputs: four distinct ones in turn (hit), or a user id never seen before
    each (miss; ``run`` names the run, so no two runs share one)."""
    base = Input(
        user_id="bench",
        roles=["developer"],
        teams=["payments"],
        mfa_verified=True,
        mfa_age_s=120,
        action="tool:invoke",
        tool=Tool(name="update_ticket", sensitivity_level="medium", teams=["payments"]),
        client_ip="10.20.30.40",
        parameters={"ticket_id": "T-42", "api_token": "x"},
        context={"audit_enabled": True, "vpn": True, "geo_country": "US"},
    )
    if traffic == "hit":
        distinct = [dataclasses.replace(base, user_id=f"hit-{k}") for k in range(4)]
        return [distinct[i % 4] for i in range(n)]
    return [dataclasses.replace(base, user_id=f"miss-{run}-{i}") for i in range(n)]


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of this process (``None``) or of ``pid`` (0: unknown)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    if pid == 0:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_at_a_time(c: Client, xs: list[Input]) -> None:
    for x in xs:
        c.evaluate(x)


def threads(pool: Pool, xs: list[Input], n: int) -> None:
    """``n`` threads sharing the pool, each deciding its share one at a time."""
    ts = [threading.Thread(target=lambda k=k: [pool.evaluate(x) for x in xs[k::n]]) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


class Modes:
    """Every mode as (name, requests per run, run); the connections are made once."""

    def __init__(self, host: str, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        kw: dict[str, object] = {"raise_errors": True, "timeout": 60}
        self.c = Client.connect(host, port, **kw)
        self.b64 = Client.connect(host, port, max_batch=64, **kw)
        self.b256 = Client.connect(host, port, max_batch=256, **kw)
        self.pool = Pool.connect(host, port, size=4, **kw)
        self.a = self.loop.run_until_complete(AsyncClient.connect(host, port, max_in_flight=256, **kw))
        self.ap = self.loop.run_until_complete(AsyncPool.connect(host, port, size=4, max_in_flight=256, **kw))

    def all(self) -> list[tuple[str, int, Callable[[list[Input]], object]]]:
        run = self.loop.run_until_complete
        return [
            ("blocking, one at a time", 5_000, lambda xs: one_at_a_time(self.c, xs)),
            ("blocking, pipelined depth 64", 20_000, lambda xs: self.c.evaluate_many(xs, depth=64)),
            ("blocking, pipelined depth 256", 20_000, lambda xs: self.c.evaluate_many(xs, depth=256)),
            ("blocking, evaluate_batch of 64", 40_000, self.b64.evaluate_batch),
            ("blocking, evaluate_batch of 256", 40_000, self.b256.evaluate_batch),
            ("asyncio, 256 in flight", 20_000, lambda xs: run(self.a.evaluate_many(xs))),
            ("asyncio, evaluate_batch of 1024", 40_000, lambda xs: run(self.a.evaluate_batch(xs))),
            ("Pool of 4, 4 threads one at a time", 5_000, lambda xs: threads(self.pool, xs, 4)),
            ("AsyncPool of 4 (256 in flight each)", 20_000, lambda xs: run(self.ap.evaluate_many(xs))),
        ]

    def close(self) -> None:
        for c in (self.c, self.b64, self.b256, self.pool):
            c.close()
        self.loop.run_until_complete(self.a.close())
        self.loop.run_until_complete(self.ap.close())
        self.loop.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7474)
    ap.add_argument("--server-pid", type=int, default=0, help="the server's pid, for its CPU use")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the requests per run")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.runs} runs a row\n")
    print("| mode | traffic | decisions/s (median) | min–max | client CPU | server CPU |")
    print("|---|---|---:|---:|---:|---:|")
    modes = Modes(args.host, args.port)
    for name, hits, run in modes.all():
        for traffic in ("hit", "miss"):
            # Misses are the server's work (some thousands a second on one core).
            n = max(1, int((hits if traffic == "hit" else min(hits, MISSES)) * args.scale))
            rates, client, server = [], [], []
            for r in range(args.runs):
                xs = inputs(n, traffic, f"{name}-{r}")
                c0, s0, t0 = cpu_s(None), cpu_s(args.server_pid), time.perf_counter()
                decisions = run(xs)
                wall = time.perf_counter() - t0
                assert decisions is None or len(decisions) == n  # one_at_a_time, threads: None
                rates.append(n / wall)
                client.append((cpu_s(None) - c0) / wall)
                server.append((cpu_s(args.server_pid) - s0) / wall)
            srv = f"{statistics.median(server):.0%}" if args.server_pid else "-"
            print(
                f"| {name} | {traffic} | {statistics.median(rates):,.0f} | {min(rates):,.0f}–{max(rates):,.0f} "
                f"| {statistics.median(client):.0%} | {srv} |",
                flush=True,
            )
    modes.close()
    print(f"\nload average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
