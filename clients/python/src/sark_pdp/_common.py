"""What the blocking and asyncio clients share: input preparation, batching, replies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

from . import _wire
from .errors import PdpError, PdpInputError, PdpProtocolError, server_error
from .types import Decision, Input, is_i64

InputLike = Union[Input, Mapping[str, Any]]
#: A request ready to send: opcode, body, how many inputs it carries.
Request = tuple[int, bytes, int]

#: Items per EVAL_BATCH frame unless told otherwise. The server takes 4096, but its reply
#: must also fit in max_payload and a decision with several reasons is ~0.5-1 KiB.
DEFAULT_BATCH_ITEMS = 1024

_EXPECTED = {
    _wire.HELLO: _wire.HELLO_OK,
    _wire.EVAL: _wire.DECISION,
    _wire.EVAL_BATCH: _wire.DECISION_BATCH,
    _wire.PING: _wire.PONG,
}


def eval_body(inp: InputLike, max_payload: int) -> bytes:
    """The EVAL body for an input (an :class:`Input`, or a dict for :meth:`Input.from_dict`).

    Raises:
        PdpInputError: the input cannot be encoded, or is over ``max_payload``.
    """
    if not isinstance(inp, Input):
        inp = Input.from_dict(inp)
    if isinstance(inp.context, dict) and "now_ns" in inp.context:
        inp = _now_ns_out_of_context(inp)
    body = _wire.encode_eval(inp)
    if len(body) > max_payload:
        raise PdpInputError(f"input of {len(body)} bytes is over the server's maximum payload of {max_payload}")
    return body


def _now_ns_out_of_context(inp: Input) -> Input:
    """``inp`` with a ``context["now_ns"]`` moved to the typed ``now_ns`` field.

    The server takes the time from the typed field alone (it keys its cache without the
    context's ``now_ns``, so it ignores one there and stamps its clock; servers before
    that fix decided on it yet cached the answer as the present's). So the time travels
    typed; one that is not a 64-bit integer is refused, where the JSON path would deny it
    as an input error. The typed field wins over the context's, as on the server.
    """
    context = dict(inp.context or {})
    now = context.pop("now_ns")
    if inp.now_ns is None:
        if not is_i64(now):
            raise PdpInputError("context.now_ns: must be a 64-bit integer (nanoseconds since the epoch)")
        return dataclasses.replace(inp, now_ns=now, context=context or None)
    return dataclasses.replace(inp, context=context or None)


def eval_request(inp: InputLike, max_payload: int) -> Request | PdpError:
    """One EVAL request (opcode, body, items), or the error that keeps it from being sent."""
    try:
        return (_wire.EVAL, eval_body(inp, max_payload), 1)
    except PdpError as e:
        return e


def batch_requests(inputs: Iterable[InputLike], max_payload: int, max_items: int) -> Iterator[Request | PdpError]:
    """EVAL_BATCH requests for ``inputs``, in order: consecutive inputs grouped while the
    frame stays within ``max_items`` and ``max_payload``; an input that cannot be sent
    becomes its error, in its place."""
    bodies: list[bytes] = []
    size = 4
    for inp in inputs:
        try:
            body = eval_body(inp, max_payload - 4)
        except PdpError as e:
            if bodies:
                yield (_wire.EVAL_BATCH, _wire.encode_batch(bodies), len(bodies))
                bodies, size = [], 4
            yield e
            continue
        if bodies and (len(bodies) >= max_items or size + len(body) > max_payload):
            yield (_wire.EVAL_BATCH, _wire.encode_batch(bodies), len(bodies))
            bodies, size = [], 4
        bodies.append(body)
        size += len(body)
    if bodies:
        yield (_wire.EVAL_BATCH, _wire.encode_batch(bodies), len(bodies))


class FrameReader:
    """Whole reply frames out of a byte stream. Each header is checked (version 1, no
    flags, length within ``limit``) as soon as its 16 bytes are in, before any of its
    payload is waited for."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Add ``data``; the (opcode, request id, payload) of every frame it completes.

        Raises:
            PdpProtocolError: a header that is not this protocol's or is over the limit.
        """
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        while len(buf) - pos >= _wire.HEADER_LEN:
            length, op, rid = _wire.parse_header(buf, pos, self.limit)
            end = pos + _wire.HEADER_LEN + length
            if len(buf) < end:
                break
            frames.append((op, rid, bytes(buf[pos + _wire.HEADER_LEN : end])))
            pos = end
        del buf[:pos]
        return frames


def match(pending: Mapping[int, tuple[Any, int, int, Any]], op: int, rid: int, payload: bytes) -> tuple[Any, Any]:
    """The pending entry ``(_, request opcode, items, _)`` a reply answers, and the decoded
    reply (the entry stays in ``pending``: a malformed reply raises with it still there,
    so its request fails with the connection).

    Raises:
        PdpProtocolError: a reply to no request in flight, or a malformed one.
        PdpServerError: an ERROR frame for no request in flight (a fatal one, id 0).
    """
    entry = pending.get(rid)
    if entry is None:
        if op == _wire.ERROR:
            raise decode_reply(_wire.EVAL, 1, op, payload)
        raise PdpProtocolError(f"reply to request {rid}, which is not in flight")
    return entry, decode_reply(entry[1], entry[2], op, payload)


def decode_reply(request_op: int, items: int, reply_op: int, payload: bytes) -> Any:
    """The reply to a request: a Decision, a list of them, HelloOk, PONG bytes — or, for
    an ERROR frame, the :class:`PdpServerError` to answer that request with.

    Raises:
        PdpProtocolError: a reply of another kind, or a malformed one.
    """
    if reply_op == _wire.ERROR:
        return server_error(*_wire.decode_error(payload))
    if reply_op != _EXPECTED[request_op]:
        raise PdpProtocolError(f"reply opcode {reply_op:#04x} to a request {request_op:#04x}")
    if reply_op == _wire.DECISION:
        return _wire.decode_decision(payload)
    if reply_op == _wire.DECISION_BATCH:
        return _wire.decode_decision_batch(payload, items)
    if reply_op == _wire.HELLO_OK:
        return _wire.decode_hello_ok(payload)
    return payload


def decisions(results: list[Any], counts: list[int], raise_errors: bool) -> list[Decision]:
    """One decision per input from the results of EVAL or EVAL_BATCH requests (``counts``:
    how many inputs each carried); a failed request denies every input it carried, or
    with ``raise_errors`` its error is raised (the first in order)."""
    out: list[Decision] = []
    for res, n in zip(results, counts):
        if isinstance(res, PdpError):
            if raise_errors:
                raise res
            out.extend([Decision.fail_closed(res)] * n)
        elif isinstance(res, list):
            out.extend(res)
        else:
            out.append(res)
    return out
