"""Bytes on the wire (``wire/PROTOCOL.md``), sans I/O: frames, EVAL bodies, replies.

Byte for byte what ``wire/src/message.rs`` writes and reads. Decoding never trusts the
peer: every length and count is checked against the bytes that remain, UTF-8 is strict,
and a payload must be consumed exactly.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .errors import PdpInputError, PdpProtocolError
from .types import I64_MAX, I64_MIN, Decision, HelloOk, Input, Reason, Server, Tool

VERSION = 1
HEADER_LEN = 16
#: The protocol's default (and the server's default) maximum payload: 1 MiB.
DEFAULT_MAX_PAYLOAD = 1 << 20

HELLO = 0x01
EVAL = 0x02
EVAL_BATCH = 0x04
PING = 0x05
HELLO_OK = 0x81
DECISION = 0x82
DECISION_BATCH = 0x84
PONG = 0x85
ERROR = 0xFF

_HEADER = struct.Struct("<IBBHQ")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U8 = struct.Struct("<B")
_HELLO_OK = struct.Struct("<BIIHH")
_DECISION_HEAD = struct.Struct("<BIQQHI")  # flags, ttl, id low, id high, error code, n reasons
_U32_0 = _U32.pack(0)
_ABSENT = b"\x00"
_PRESENT = b"\x01"
_MFA = {None: b"\x00", False: b"\x01", True: b"\x02"}
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def frame(opcode: int, request_id: int, body: bytes) -> bytes:
    """A whole frame: header, then ``body``."""
    return _HEADER.pack(len(body), VERSION, opcode, 0, request_id) + body


def parse_header(buf: bytes | bytearray, at: int, max_payload: int) -> tuple[int, int, int]:
    """(payload length, opcode, request id) of the header at ``buf[at:at+16]``.

    Raises:
        PdpProtocolError: a version other than 1, non-zero flags, or a length over
            ``max_payload`` (refused from the header alone, before reading the payload).
    """
    length, version, opcode, flags, request_id = _HEADER.unpack_from(buf, at)
    if version != VERSION:
        raise PdpProtocolError(f"reply with protocol version {version}, not {VERSION}")
    if flags != 0:
        raise PdpProtocolError(f"reply with flags {flags:#06x}")
    if length > max_payload:
        raise PdpProtocolError(f"reply of {length} bytes is over the maximum payload of {max_payload}")
    return length, opcode, request_id


# ---------------------------------------------------------------- encoding


def _str(v: object, name: str) -> bytes:
    """``str``: u32 length, UTF-8 bytes."""
    if not isinstance(v, str):
        raise PdpInputError(f"{name}: must be a string, not {type(v).__name__}")
    try:
        b = v.encode()
    except UnicodeEncodeError as e:
        raise PdpInputError(f"{name}: not valid UTF-8 ({e.reason})") from None
    return _U32.pack(len(b)) + b


def _opt_str(v: object, name: str) -> bytes:
    """``opt<str>``."""
    return _ABSENT if v is None else _PRESENT + _str(v, name)


def _strs(v: object, name: str) -> bytes:
    """``[str]``: u32 count, strings."""
    if not isinstance(v, (list, tuple)):
        raise PdpInputError(f"{name}: must be a list of strings, not {type(v).__name__}")
    if not v:
        return _U32_0
    return _U32.pack(len(v)) + b"".join([_str(s, name) for s in v])


def _opt_i64(v: object, name: str) -> bytes:
    """``opt<i64>``."""
    if v is None:
        return _ABSENT
    if not isinstance(v, int) or isinstance(v, bool) or not I64_MIN <= v <= I64_MAX:
        raise PdpInputError(f"{name}: must be a 64-bit integer")
    return _PRESENT + _I64.pack(v)


def _opt_json(v: Any, name: str) -> bytes:
    """``opt<json>``: the value as compact JSON text."""
    if v is None:
        return _ABSENT
    try:
        text = _JSON.encode(v)
    except (TypeError, ValueError) as e:
        raise PdpInputError(f"{name}: not JSON-able ({e})") from None
    return _PRESENT + _str(text, name)


def encode_eval(inp: Input) -> bytes:
    """An EVAL body for ``inp``.

    Raises:
        PdpInputError: a field of the wrong type, a string that is not UTF-8, a JSON
            part that is not JSON-able.
    """
    if not isinstance(inp, Input):
        raise PdpInputError(f"input: must be an Input or a dict, not {type(inp).__name__}")
    mfa = _MFA.get(inp.mfa_verified) if isinstance(inp.mfa_verified, (bool, type(None))) else None
    if mfa is None:
        raise PdpInputError("user.mfa_verified: must be a boolean or None")
    t = inp.tool
    if t is None:
        tool = _ABSENT
    elif isinstance(t, Tool):
        tool = b"".join(
            (
                _PRESENT,
                _str(t.name, "tool.name"),
                _opt_str(t.sensitivity_level, "tool.sensitivity_level"),
                _opt_str(t.owner, "tool.owner"),
                _strs(t.managers, "tool.managers"),
                _strs(t.teams, "tool.teams"),
            )
        )
    else:
        raise PdpInputError(f"tool: must be a Tool or None, not {type(t).__name__}")
    s = inp.server
    if s is None:
        server = _ABSENT
    elif isinstance(s, Server):
        server = b"".join(
            (
                _PRESENT,
                _str(s.id, "server.id"),
                _opt_str(s.name, "server.name"),
                _opt_str(s.owner_id, "server.owner_id"),
                _strs(s.teams, "server.teams"),
                _opt_str(s.managed_by_team, "server.managed_by_team"),
            )
        )
    else:
        raise PdpInputError(f"server: must be a Server or None, not {type(s).__name__}")
    if inp.context is not None and not isinstance(inp.context, dict):
        raise PdpInputError(f"context: must be a dict or None, not {type(inp.context).__name__}")
    return b"".join(
        (
            _str(inp.user_id, "user.id"),
            _strs(inp.roles, "user.roles"),
            _strs(inp.teams, "user.teams"),
            _strs(inp.team_manager_of, "user.team_manager_of"),
            _strs(inp.scopes, "user.scopes"),
            mfa,
            _opt_i64(inp.mfa_age_s, "user.mfa_age_s"),
            _opt_str(inp.email, "user.email"),
            _str(inp.action, "action"),
            tool,
            server,
            _opt_str(inp.client_ip, "context.client_ip"),
            _opt_i64(inp.now_ns, "context.now_ns"),
            _opt_json(inp.parameters, "parameters"),
            _opt_json(inp.agent, "agent"),
            _opt_json(inp.context, "context"),
        )
    )


def encode_batch(bodies: list[bytes]) -> bytes:
    """An EVAL_BATCH body from EVAL bodies."""
    return _U32.pack(len(bodies)) + b"".join(bodies)


def encode_hello(max_payload: int, token: str | None) -> bytes:
    """A HELLO body: our version, the largest payload we accept, the optional token."""
    return bytes([VERSION]) + _U32.pack(max_payload) + _opt_str(token, "token")


# ---------------------------------------------------------------- decoding


class _Reader:
    """A cursor over one payload; every read is checked against what remains."""

    __slots__ = ("buf", "at", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.at = 0
        self.what = what

    def fail(self, why: str) -> PdpProtocolError:
        return PdpProtocolError(f"malformed {self.what}: {why}")

    def left(self) -> int:
        return len(self.buf) - self.at

    def unpack(self, s: struct.Struct) -> tuple[Any, ...]:
        if s.size > len(self.buf) - self.at:
            raise self.fail("truncated")
        v = s.unpack_from(self.buf, self.at)
        self.at += s.size
        return v

    def string(self) -> str:
        (n,) = self.unpack(_U32)
        if n > len(self.buf) - self.at:
            raise self.fail(f"string of {n} bytes with {self.left()} left")
        end = self.at + n
        try:
            s = self.buf[self.at : end].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"invalid UTF-8 ({e.reason})") from None
        self.at = end
        return s

    def opt_str(self) -> str | None:
        if self.at >= len(self.buf):
            raise self.fail("truncated")
        tag = self.buf[self.at]
        self.at += 1
        if tag == 0:
            return None
        if tag != 1:
            raise self.fail(f"presence tag {tag}")
        return self.string()

    def finish(self) -> None:
        if self.at != len(self.buf):
            raise self.fail(f"{self.left()} trailing bytes")


def decode_hello_ok(payload: bytes) -> HelloOk:
    """A HELLO_OK payload."""
    r = _Reader(payload, "HELLO_OK")
    version, max_payload, max_batch, shards, shard = r.unpack(_HELLO_OK)
    bundle_revision, driver = r.string(), r.string()
    (route,) = r.unpack(_U8)
    (n,) = r.unpack(_U16)
    if n * 2 > r.left():
        raise r.fail(f"{n} shard ports with {r.left()} bytes left")
    ports = r.unpack(struct.Struct(f"<{n}H")) if n else ()
    hello = HelloOk(max_payload, max_batch, shards, shard, bundle_revision, driver, route, tuple(ports))
    r.finish()
    if version != VERSION:
        raise PdpProtocolError(f"HELLO_OK with protocol version {version}, not {VERSION}")
    return hello


def _decision(r: _Reader) -> Decision:
    flags, ttl_s, id_low, id_high, error_code, n = r.unpack(_DECISION_HEAD)
    if flags & ~0b11:
        raise r.fail(f"decision flags {flags:#04x}")
    if n * 6 > r.left():
        raise r.fail(f"{n} reasons with {r.left()} bytes left")
    reasons = []
    for _ in range(n):
        (code,) = r.unpack(_U16)
        reasons.append(Reason(code, r.string()))
    fp = r.opt_str()
    if fp is not None:
        try:
            fp = json.loads(fp)
        except ValueError:
            raise r.fail("filtered_parameters is not JSON") from None
    allow = bool(flags & 1)
    if allow and error_code:
        raise r.fail(f"an allow with error code {error_code}")
    return Decision(allow, bool(flags & 2), ttl_s, id_low | (id_high << 64), error_code, reasons, fp)


def decode_decision(payload: bytes) -> Decision:
    """A DECISION payload."""
    r = _Reader(payload, "DECISION")
    d = _decision(r)
    r.finish()
    return d


def decode_decision_batch(payload: bytes, expected: int) -> list[Decision]:
    """A DECISION_BATCH payload that must hold ``expected`` decisions."""
    r = _Reader(payload, "DECISION_BATCH")
    (n,) = r.unpack(_U32)
    if n != expected:
        raise r.fail(f"{n} decisions for a batch of {expected}")
    if n * 27 > r.left():
        raise r.fail(f"{n} decisions with {r.left()} bytes left")
    out = [_decision(r) for _ in range(n)]
    r.finish()
    return out


def decode_error(payload: bytes) -> tuple[int, str]:
    """An ERROR payload: (code, message)."""
    r = _Reader(payload, "ERROR")
    (code,) = r.unpack(_U16)
    message = r.string()
    r.finish()
    return code, message
