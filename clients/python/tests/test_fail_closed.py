"""Failing closed: refused connects, a server killed mid-run, and fake servers that send
garbage, the wrong version, oversized lengths, nonsense replies, or nothing. Every
outcome must be a deny naming why (or, with raise_errors, the typed exception) — never
an allow. Replies out of order and the in-flight bound are checked on fakes too."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sark_pdp import (
    CONNECT_FAILED,
    CONNECTION_LOST,
    PROTOCOL_ERROR,
    TIMEOUT,
    AsyncClient,
    AsyncPool,
    Client,
    Decision,
    PdpConnectionError,
    PdpError,
    PdpProtocolError,
    PdpServerError,
    PdpTimeout,
    Pool,
)
from support import closed_port, decision, frame, hello_ok, present, read_frame, running, sample, string, user_of

KINDS = ["blocking", "asyncio"]
DOC = {"user": {"id": "u"}, "action": "tool:invoke"}


def evaluate(kind: str, port: int, docs: list[Any], **kwargs: Any) -> list[Decision]:
    """Connect (blocking or asyncio), decide ``docs`` all at once, close."""
    if kind == "blocking":
        with Client.connect("127.0.0.1", port, **kwargs) as c:
            return c.evaluate_many(docs) if len(docs) > 1 else [c.evaluate(docs[0])]

    async def run() -> list[Decision]:
        async with await AsyncClient.connect("127.0.0.1", port, **kwargs) as c:
            return await c.evaluate_many(docs) if len(docs) > 1 else [await c.evaluate(docs[0])]

    return asyncio.run(run())


def assert_denied(d: Decision, code: int, text: str) -> None:
    assert (d.allow, d.failed, d.error_code) == (False, True, code), d
    assert d.reasons[0].code == code and text in d.reasons[0].text, d.reasons


def after_hello(reply: Callable[[socket.socket, int, int, bytes], None]) -> Callable[[socket.socket], None]:
    """A fake that answers HELLO, then calls ``reply(conn, opcode, id, payload)`` per frame."""

    def handler(conn: socket.socket) -> None:
        first = read_frame(conn)
        assert first is not None and first[0] == 0x01
        conn.sendall(hello_ok(first[1]))
        while (f := read_frame(conn)) is not None:
            reply(conn, *f)

    return handler


# ------------------------------------------------------------ connects


@pytest.mark.parametrize("kind", KINDS)
def test_connect_refused(kind: str) -> None:
    port = closed_port()
    (d,) = evaluate(kind, port, [DOC])
    assert_denied(d, CONNECT_FAILED, f"127.0.0.1:{port}")
    with pytest.raises(PdpConnectionError) as e:
        evaluate(kind, port, [DOC], raise_errors=True)
    assert e.value.code == CONNECT_FAILED


@pytest.mark.parametrize("kind", KINDS)
def test_hello_never_answered_times_out(kind: str, fake) -> None:
    f = fake(lambda conn: (read_frame(conn), read_frame(conn)))
    t0 = time.monotonic()
    (d,) = evaluate(kind, f.port, [DOC], timeout=0.3)
    assert_denied(d, TIMEOUT, "HELLO")
    assert time.monotonic() - t0 < 5
    with pytest.raises(PdpTimeout):
        evaluate(kind, f.port, [DOC], timeout=0.3, raise_errors=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_hello_ok_over_what_was_offered_is_refused(kind: str, fake) -> None:
    def handler(conn: socket.socket) -> None:
        first = read_frame(conn)
        assert first is not None
        conn.sendall(hello_ok(first[1], max_payload=1 << 30))
        read_frame(conn)

    f = fake(handler)
    (d,) = evaluate(kind, f.port, [DOC])
    assert_denied(d, PROTOCOL_ERROR, "max_payload 1073741824")


# ------------------------------------------------------------ replies


def garbage(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(b"this is not a frame at all\n" * 3)


def wrong_version(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(frame(0x82, rid, decision(True), version=2))


def oversized(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(struct.pack("<IBBHQ", 0x7FFFFFFF, 1, 0x82, 0, rid))  # and then nothing


def trailing(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(frame(0x82, rid, decision(True) + b"\x00"))


def truncated(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(frame(0x82, rid, decision(True)[:20]))


def unknown_id(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(frame(0x82, rid + 1000, decision(True)))


def wrong_opcode(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(frame(0x85, rid, b"ping"))


def closes(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.shutdown(socket.SHUT_RDWR)


def error_frame(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
    conn.sendall(frame(0xFF, rid, struct.pack("<H", 3004) + string("malformed EVAL: truncated")))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "reply, code, text, exc",
    [
        (garbage, PROTOCOL_ERROR, "protocol version", PdpProtocolError),
        (wrong_version, PROTOCOL_ERROR, "protocol version 2", PdpProtocolError),
        (oversized, PROTOCOL_ERROR, "2147483647 bytes is over the maximum payload", PdpProtocolError),
        (trailing, PROTOCOL_ERROR, "1 trailing bytes", PdpProtocolError),
        (truncated, PROTOCOL_ERROR, "truncated", PdpProtocolError),
        (unknown_id, PROTOCOL_ERROR, "not in flight", PdpProtocolError),
        (wrong_opcode, PROTOCOL_ERROR, "reply opcode 0x85", PdpProtocolError),
        (closes, CONNECTION_LOST, "closed by the server", PdpConnectionError),
        (error_frame, 3004, "malformed EVAL: truncated", PdpServerError),
    ],
)
def test_a_bad_reply_is_a_deny_with_its_reason(kind: str, fake, reply, code: int, text: str, exc: type[PdpError]) -> None:
    f = fake(after_hello(reply))
    t0 = time.monotonic()
    (d,) = evaluate(kind, f.port, [DOC], timeout=10)
    assert_denied(d, code, text)
    assert time.monotonic() - t0 < 5, "refused from the header, not after waiting"
    with pytest.raises(exc) as e:
        evaluate(kind, f.port, [DOC], timeout=10, raise_errors=True)
    assert e.value.code == code


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_that_never_answers_times_out_into_denies(kind: str, fake) -> None:
    f = fake(after_hello(lambda *_: None))
    t0 = time.monotonic()
    ds = evaluate(kind, f.port, [DOC] * 5, timeout=0.3)
    assert time.monotonic() - t0 < 5
    for d in ds:
        assert_denied(d, TIMEOUT, "no reply within 0.3 s")
    with pytest.raises(PdpTimeout):
        evaluate(kind, f.port, [DOC], timeout=0.3, raise_errors=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_reply_with_the_wrong_count_denies_every_item(kind: str, fake) -> None:
    def reply(conn: socket.socket, op: int, rid: int, payload: bytes) -> None:
        assert op == 0x04
        conn.sendall(frame(0x84, rid, struct.pack("<I", 1) + decision(True)))

    f = fake(after_hello(reply))
    if kind == "blocking":
        with Client.connect("127.0.0.1", f.port) as c:
            ds = c.evaluate_batch([DOC] * 3)
    else:

        async def run() -> list[Decision]:
            async with await AsyncClient.connect("127.0.0.1", f.port) as c:
                return await c.evaluate_batch([DOC] * 3)

        ds = asyncio.run(run())
    assert len(ds) == 3
    for d in ds:
        assert_denied(d, PROTOCOL_ERROR, "1 decisions for a batch of 3")


# ------------------------------------------------------------ ordering and bounds


def reverse_rounds(seen: list[int]) -> Callable[[socket.socket], None]:
    """A fake that collects requests until none comes for 0.2 s, then answers them in
    reverse order, each with its user id as the reason; ``seen`` gets each round's size."""

    def handler(conn: socket.socket) -> None:
        first = read_frame(conn)
        assert first is not None
        conn.sendall(hello_ok(first[1]))
        conn.settimeout(0.2)
        held: list[tuple[int, str]] = []
        while True:
            try:
                f = read_frame(conn)
            except TimeoutError:
                seen.append(len(held))
                conn.sendall(b"".join(frame(0x82, rid, decision(True, reasons=(user,))) for rid, user in reversed(held)))
                held = []
                continue
            if f is None:
                return
            held.append((f[1], user_of(f[2])))

    return handler


@pytest.mark.parametrize("kind", KINDS)
def test_replies_in_any_order_are_matched_by_id_and_in_flight_is_bounded(kind: str, fake) -> None:
    seen: list[int] = []
    f = fake(reverse_rounds(seen))
    docs = [{"user": {"id": f"user-{i}"}, "action": "a"} for i in range(40)]
    if kind == "blocking":
        with Client.connect("127.0.0.1", f.port, raise_errors=True) as c:
            ds = c.evaluate_many(docs, depth=8)
    else:

        async def run() -> list[Decision]:
            async with await AsyncClient.connect("127.0.0.1", f.port, raise_errors=True, max_in_flight=8) as c:
                return await c.evaluate_many(docs)

        ds = asyncio.run(run())
    assert [d.reasons[0].text for d in ds] == [f"user-{i}" for i in range(40)]
    assert max(seen) == 8 and sum(seen) == 40


def test_an_input_over_max_payload_is_never_sent(fake) -> None:
    got: list[int] = []

    def handler(conn: socket.socket) -> None:
        first = read_frame(conn)
        assert first is not None
        conn.sendall(hello_ok(first[1], max_payload=1000))
        while (f := read_frame(conn)) is not None:
            got.append(len(f[2]))
            if f[0] == 0x04:
                (n,) = struct.unpack_from("<I", f[2])
                conn.sendall(frame(0x84, f[1], struct.pack("<I", n) + decision(False) * n))
            else:
                conn.sendall(frame(0x82, f[1], decision(False)))

    f = fake(handler)
    big = {"user": {"id": "u"}, "action": "a", "parameters": {"x": "y" * 1000}}
    with Client.connect("127.0.0.1", f.port) as c:
        ds = c.evaluate_many([big, DOC])
        batch = c.evaluate_batch([big, DOC, DOC])
    assert_denied(ds[0], 4005, "over the server's maximum payload of 1000")
    assert_denied(batch[0], 4005, "over the server's maximum payload")
    assert not ds[1].failed and not batch[1].failed and not batch[2].failed
    assert got and max(got) < 1000


# ------------------------------------------------------------ the real server, killed


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_killed_mid_run_fails_closed_then_clients_reconnect(kind: str) -> None:
    port = closed_port()
    docs = [present(sample(), f"killed-{kind}-{i}") for i in range(3000)]  # all misses: slow
    with running(port=port) as s:
        # Killed once some hundreds were answered (SIGKILL: no goodbye on the socket).
        if kind == "blocking":

            def inputs() -> Iterator[dict[str, Any]]:
                for i, doc in enumerate(docs):
                    if i == 300:  # taken only once 300 - 64 replies came back
                        s.kill()
                    yield doc

            c = Client.connect("127.0.0.1", port, timeout=30)
            ds = c.evaluate_many(inputs(), depth=64)
        else:

            async def run() -> list[Decision]:
                a = await AsyncClient.connect("127.0.0.1", port, timeout=30, max_in_flight=64)
                tasks = [asyncio.ensure_future(a.evaluate(d)) for d in docs]
                while sum(t.done() for t in tasks) < 236:
                    await asyncio.sleep(0.01)
                s.kill()
                return await asyncio.gather(*tasks)

            ds = asyncio.run(run())
    answered = [d for d in ds if not d.failed]
    failed = [d for d in ds if d.failed]
    assert len(answered) >= 236 and len(failed) >= 2000, (len(answered), len(failed))
    assert all(d.allow for d in answered)
    # Those in flight lost their connection; those after it could not connect again.
    assert all(not d.allow and d.error_code in (CONNECTION_LOST, CONNECT_FAILED) for d in failed)
    assert ds[: len(answered)] == answered, "the server answers in order: the answered come first"
    # While nothing listens: refused, a deny.
    (d,) = evaluate(kind, port, [docs[0]])
    assert_denied(d, CONNECT_FAILED, "connect")

    # Back on the same port: pools find their way again.
    with running(port=port):
        if kind == "blocking":
            with Pool("127.0.0.1", port, size=2, reconnect_backoff=0) as pool:
                assert pool.evaluate(docs[0]).allow
        else:

            async def again() -> bool:
                async with AsyncPool("127.0.0.1", port, size=2, reconnect_backoff=0) as pool:
                    return (await pool.evaluate(docs[0])).allow

            assert asyncio.run(again())


def test_a_pool_survives_a_restart_of_the_server() -> None:
    port = closed_port()
    pool = Pool("127.0.0.1", port, size=2, reconnect_backoff=0, timeout=30)
    with running(port=port) as s:
        assert all(d.allow for d in pool.evaluate_many([present(sample(), "restart")] * 4))
        assert pool.evaluate(present(sample(), "restart")).allow
        s.kill()
    with running(port=port):
        tries = [pool.evaluate(present(sample(), "restart")) for _ in range(5)]
    pool.close()
    # Each connection fails at most once (its socket died with the old server), then
    # connects again; nothing in between is an allow that was not the server's.
    firsts = [d for d in tries if d.failed]
    assert len(firsts) <= 2 and all(not d.allow for d in firsts)
    assert tries[-1].allow and not tries[-1].failed
