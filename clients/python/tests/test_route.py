"""Key-affine routing: the routing function against the pinned values, HELLO_OK's route
and shard ports, and Router / AsyncRouter against the real server with three shards
(each question decided by its owner, which the top 16 bits of a decision id name),
with ``--shard-ports off``, and against fakes (a shard port answering as another shard,
a batch split over the shards in flight at once)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sark_pdp import (
    CONNECT_FAILED,
    PROTOCOL_ERROR,
    AsyncRouter,
    Decision,
    PdpConnectionError,
    PdpProtocolError,
    Router,
    owner,
    route_hash,
)
from sark_pdp import _wire
from support import closed_port, decision, frame, hello_ok, hello_ok_body, present, read_frame, running, sample

KINDS = ["blocking", "asyncio"]


# ------------------------------------------------------------ the function


def test_route_hash_matches_the_pinned_values() -> None:
    # wire/src/route.rs pins the same three.
    assert route_hash("", "") == 0xB9034AD37056F5FB
    assert route_hash("alice", "update_ticket") == 0xC8616733B0820448
    assert route_hash("user-42", "payments-\u00e9") == 0x115875C3B25F015E
    assert owner("user-42", "payments-\u00e9", 8) == 6
    assert owner("anyone", "any tool", 1) == 0 and owner("anyone", "any tool", 0) == 0
    # The 0 byte keeps user and tool apart.
    assert route_hash("ab", "c") != route_hash("a", "bc") and route_hash("a", "") != route_hash("", "a")


def test_owners_spread_over_the_shards() -> None:
    counts = [0] * 3
    for u in range(3000):
        counts[owner(f"user-{u}", "tool-1", 3)] += 1
    assert all(abs(c - 1000) < 200 for c in counts), counts


# ------------------------------------------------------------ HELLO_OK


def test_hello_ok_decodes_the_route_and_the_shard_ports() -> None:
    h = _wire.decode_hello_ok(hello_ok_body(shards=3, shard=1, route=1, ports=(7475, 7476, 65535)))
    assert (h.shards, h.shard, h.bundle_revision, h.driver) == (3, 1, "fake-1", "epoll")
    assert (h.route, h.shard_ports) == (1, (7475, 7476, 65535))
    off = _wire.decode_hello_ok(hello_ok_body(route=0))
    assert (off.route, off.shard_ports) == (0, ())


def test_a_hello_ok_with_trailing_bytes_or_a_short_port_list_is_refused() -> None:
    body = hello_ok_body(shards=2, route=1, ports=(7475, 7476))
    with pytest.raises(PdpProtocolError, match="trailing"):
        _wire.decode_hello_ok(body + b"\x00")
    for cut in range(len(body)):
        with pytest.raises(PdpProtocolError):
            _wire.decode_hello_ok(body[:cut])
    with pytest.raises(PdpProtocolError, match="3 shard ports with 4 bytes left"):
        _wire.decode_hello_ok(body[:-6] + struct.pack("<H", 3) + body[-4:])
    # The layout before route and ports (a server from before them) is refused too.
    with pytest.raises(PdpProtocolError, match="truncated"):
        _wire.decode_hello_ok(body[:-7])


# ------------------------------------------------------------ against the real server


@pytest.fixture(scope="module")
def sharded() -> Iterator[Any]:
    """A server with three shards, each on its own port too."""
    with running(shards=3) as s:
        assert len(s.shard_ports) == 3
        yield s


@pytest.fixture(scope="module")
def unported() -> Iterator[Any]:
    """Three shards, ``--shard-ports off``."""
    with running("--shard-ports", "off", shards=3) as s:
        assert s.shard_ports == ()
        yield s


class _Sync:
    """An AsyncRouter driven from blocking code, so one test body serves both kinds."""

    def __init__(self, router: AsyncRouter, loop: asyncio.AbstractEventLoop) -> None:
        self._router = router
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        v = getattr(self._router, name)
        if not callable(v):
            return v
        return lambda *a, **k: self._loop.run_until_complete(v(*a, **k))


@contextlib.contextmanager
def router(kind: str, port: int, **kwargs: Any) -> Iterator[Any]:
    """``Router.connect`` or ``AsyncRouter.connect`` (wrapped in :class:`_Sync`), closed after."""
    if kind == "blocking":
        with Router.connect("127.0.0.1", port, **kwargs) as r:
            yield r
        return
    loop = asyncio.new_event_loop()
    try:
        r = loop.run_until_complete(AsyncRouter.connect("127.0.0.1", port, **kwargs))
        try:
            yield _Sync(r, loop)
        finally:
            loop.run_until_complete(r.close())
    finally:
        loop.close()


def shard_of(d: Decision) -> int:
    """The shard that decided: the top 16 bits of the decision id."""
    return d.decision_id >> 112


def docs(n: int, tag: str) -> tuple[list[dict[str, Any]], list[bool], list[int]]:
    """``n`` questions about the present, one user each, every third denied; whether
    each is allowed, and which of three shards owns it."""
    out, allow, owners = [], [], []
    for i in range(n):
        doc = present(sample("invoke-critical-viewer" if i % 3 == 0 else "invoke-medium"), f"{tag}-{i}")
        out.append(doc)
        allow.append(i % 3 != 0)
        owners.append(owner(doc["user"]["id"], doc["tool"]["name"], 3))
    return out, allow, owners


@pytest.mark.parametrize("kind", KINDS)
def test_the_router_opens_one_connection_per_shard(sharded, kind: str) -> None:
    with router(kind, sharded.port, raise_errors=True) as r:
        assert r.routing and r.hello.route == 1 and r.hello.shard_ports == sharded.shard_ports
        assert [(c.port, c.hello.shard, c.hello.shards) for c in r.clients] == [(p, i, 3) for i, p in enumerate(sharded.shard_ports)]
        assert r.ping()


@pytest.mark.parametrize("kind", KINDS)
def test_each_question_is_decided_by_its_owner_and_a_repeat_is_a_hit(sharded, kind: str) -> None:
    questions, allow, owners = docs(9, f"one-{kind}")
    assert set(owners) == {0, 1, 2}
    with router(kind, sharded.port, raise_errors=True) as r:
        for doc, want, o in zip(questions, allow, owners):
            first, second = r.evaluate(doc), r.evaluate(doc)
            assert (first.allow, first.cache_hit, shard_of(first)) == (want, False, o)
            assert (second.allow, second.cache_hit, shard_of(second)) == (want, True, o)


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_is_split_by_owner_and_comes_back_in_order(sharded, kind: str) -> None:
    questions, allow, owners = docs(40, f"batch-{kind}")
    assert set(owners) == {0, 1, 2}
    questions[7] = {"user": {"id": "u"}}  # no action: cannot be sent, denied in its place
    with router(kind, sharded.port, timeout=60) as r:
        ds = r.evaluate_batch(questions)
        again = r.evaluate_batch(questions)
        many = r.evaluate_many(questions)
    assert (ds[7].allow, ds[7].failed, ds[7].error_code) == (False, True, 4005)
    for run, hit in ((ds, False), (again, True), (many, True)):
        rest = [d for i, d in enumerate(run) if i != 7]
        assert [d.allow for d in rest] == [a for i, a in enumerate(allow) if i != 7]
        assert [shard_of(d) for d in rest] == [o for i, o in enumerate(owners) if i != 7]
        assert all(d.cache_hit == hit and not d.failed for d in rest)
    assert len({d.decision_id for d in ds + again + many if not d.failed}) == 3 * 39


@pytest.mark.parametrize("kind", KINDS)
def test_without_shard_ports_everything_goes_over_one_connection(unported, kind: str) -> None:
    questions, allow, _ = docs(12, f"unported-{kind}")
    with router(kind, unported.port, raise_errors=True) as r:
        assert not r.routing and len(r.clients) == 1 and r.hello.shards == 3 and r.hello.shard_ports == ()
        assert [d.allow for d in r.evaluate_batch(questions)] == allow
        assert r.evaluate(questions[1]).allow and r.ping()
        # One connection, one shard: everything is decided by the shard it reached.
        assert {shard_of(d) for d in r.evaluate_many(questions)} == {r.clients[0].hello.shard}


@pytest.mark.parametrize("kind", KINDS)
def test_one_shard_is_not_routed(server, kind: str) -> None:
    with router(kind, server.port, raise_errors=True) as r:
        assert r.hello.route == 1 and len(r.hello.shard_ports) == 1
        assert not r.routing and r.evaluate(sample()).allow


# ------------------------------------------------------------ failing closed, fakes


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_connect_denies_or_raises(kind: str) -> None:
    port = closed_port()
    with router(kind, port) as r:
        d = r.evaluate(sample())
        assert (d.allow, d.failed, d.error_code) == (False, True, CONNECT_FAILED)
        assert [d.error_code for d in r.evaluate_batch([sample()] * 3)] == [CONNECT_FAILED] * 3
        assert not r.ping()
    with pytest.raises(PdpConnectionError), router(kind, port, raise_errors=True):
        pass


def shard_fake(shard: int, shards: int, barrier: threading.Barrier | None = None) -> Callable[[socket.socket], None]:
    """A shard: HELLO_OK as shard ``shard`` of ``shards``, and allows with ids naming it.
    With ``barrier``, a batch is answered only once every shard has one."""

    def handler(conn: socket.socket) -> None:
        first = read_frame(conn)
        assert first is not None and first[0] == 0x01
        conn.sendall(hello_ok(first[1], shards=shards, shard=shard))
        while (f := read_frame(conn)) is not None:
            op, rid, payload = f
            if op == 0x02:
                conn.sendall(frame(0x82, rid, decision(True, decision_id=shard << 112)))
            elif op == 0x04:
                if barrier is not None:
                    barrier.wait(10)
                (n,) = struct.unpack_from("<I", payload)
                conn.sendall(frame(0x84, rid, struct.pack("<I", n) + decision(True, decision_id=shard << 112) * n))
            else:
                conn.sendall(frame(0x85, rid, payload))

    return handler


def shared_fake(ports: tuple[int, ...], route: int = 1) -> Callable[[socket.socket], None]:
    """The shared port: announces ``ports``, and answers as shard 0 of them."""

    def handler(conn: socket.socket) -> None:
        first = read_frame(conn)
        assert first is not None
        conn.sendall(hello_ok(first[1], shards=len(ports), route=route, ports=ports))
        while (f := read_frame(conn)) is not None:
            (n,) = struct.unpack_from("<I", f[2]) if f[0] == 0x04 else (1,)
            body = decision(False, decision_id=7, reasons=("shared",))
            conn.sendall(frame(0x82, f[1], body) if f[0] == 0x02 else frame(0x84, f[1], struct.pack("<I", n) + body * n))

    return handler


def users_by_owner(shards: int, each: int) -> list[str]:
    """``each`` user ids owned by every one of ``shards`` shards (tool: none), interleaved."""
    by: list[list[str]] = [[] for _ in range(shards)]
    u = 0
    while min(len(b) for b in by) < each:
        by[owner(f"u{u}", "", shards)].append(f"u{u}")
        u += 1
    return [b[k] for k in range(each) for b in by]


@pytest.mark.parametrize("kind", KINDS)
def test_a_shard_port_answering_as_another_shard_fails_clearly(fake, kind: str) -> None:
    good, wrong = fake(shard_fake(0, 2)), fake(shard_fake(0, 2))  # the second says shard 0 too
    shared = fake(shared_fake((good.port, wrong.port)))
    with pytest.raises(PdpProtocolError, match=f"127.0.0.1:{wrong.port}, announced as shard 1 of 2's own port, answered as shard 0 of 2"):
        with router(kind, shared.port, raise_errors=True):
            pass
    users = users_by_owner(2, 2)
    with router(kind, shared.port) as r:
        assert r.routing
        for ds in (r.evaluate_batch([{"user": {"id": u}, "action": "a"} for u in users]), [r.evaluate({"user": {"id": u}, "action": "a"}) for u in users]):
            for u, d in zip(users, ds):
                if owner(u, "", 2) == 0:
                    assert d.allow and shard_of(d) == 0
                else:
                    assert (d.allow, d.failed, d.error_code) == (False, True, PROTOCOL_ERROR) and "answered as shard 0 of 2" in d.reasons[0].text


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_goes_to_every_shard_before_any_reply_is_awaited(fake, kind: str) -> None:
    # Each shard answers its batch only once both have theirs: a router that waited on
    # shard 0's reply before sending shard 1's would time out (and the fakes would fail).
    barrier = threading.Barrier(2)
    shards = [fake(shard_fake(i, 2, barrier)) for i in range(2)]
    shared = fake(shared_fake(tuple(s.port for s in shards)))
    users = users_by_owner(2, 3)
    with router(kind, shared.port, raise_errors=True, timeout=5) as r:
        ds = r.evaluate_batch([{"user": {"id": u}, "action": "a"} for u in users])
    assert [shard_of(d) for d in ds] == [owner(u, "", 2) for u in users] and all(d.allow for d in ds)
    assert shared.connections == 1 and all(s.connections == 1 for s in shards)


@pytest.mark.parametrize("route", [0, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_no_known_routing_function_means_one_connection(fake, kind: str, route: int) -> None:
    shards = [fake(shard_fake(i, 2)) for i in range(2)]
    shared = fake(shared_fake(tuple(s.port for s in shards), route=route))
    with router(kind, shared.port, raise_errors=True) as r:
        assert not r.routing
        ds = r.evaluate_batch([{"user": {"id": u}, "action": "a"} for u in users_by_owner(2, 2)])
        assert [d.reasons[0].text for d in ds] == ["shared"] * 4
        assert r.evaluate({"user": {"id": "x"}, "action": "a"}).reasons[0].text == "shared"
    assert all(s.connections == 0 for s in shards)
