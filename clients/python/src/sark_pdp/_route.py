"""Key-affine routing (``wire/PROTOCOL.md``, "Key-affine routing"): which shard owns a
question, and what the blocking and asyncio routers share.

Each shard keeps its own decision cache, so a client that sends every question about one
user and tool to the same shard (over that shard's own port, announced in HELLO_OK) finds
that shard's cache warm. The function is ``wire/src/route.rs``'s, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ._common import InputLike
from .errors import PdpError, PdpInputError
from .types import Decision, HelloOk, Input, Tool

#: HELLO_OK's ``route`` when the server announces no routing function.
ROUTE_NONE = 0
#: HELLO_OK's ``route`` for :func:`route_hash`.
ROUTE_FNV1A64_FMIX = 1

_MASK = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def route_hash(user_id: str, tool_name: str) -> int:
    """64-bit FNV-1a of the UTF-8 bytes of ``user_id``, one 0 byte and ``tool_name``
    (``""`` for an input without a tool), finalised with MurmurHash3's fmix64."""
    h = _FNV_OFFSET
    for b in user_id.encode() + b"\x00" + tool_name.encode():
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def owner(user_id: str, tool_name: str, shards: int) -> int:
    """The shard (0 ≤ shard < ``shards``) that owns questions about ``user_id`` and
    ``tool_name``: ``route_hash(user_id, tool_name) % shards`` (one shard below 1)."""
    return route_hash(user_id, tool_name) % max(shards, 1)


def routes(hello: HelloOk) -> bool:
    """Whether a HELLO_OK lets a client route: function 1, one port per shard, and more
    than one shard. Otherwise (route 0 or unknown, ``--shard-ports off``, one shard)
    everything goes over the one connection; any shard answers any question."""
    return hello.route == ROUTE_FNV1A64_FMIX and hello.shards > 1 and len(hello.shard_ports) == hello.shards


def prepared(inp: InputLike) -> InputLike:
    """``inp`` as an :class:`Input` (a dict is mapped once here, not again when it is
    sent); a dict that cannot be mapped is returned as it is, to fail when it is sent."""
    if isinstance(inp, Input) or not isinstance(inp, Mapping):
        return inp
    try:
        return Input.from_dict(inp)
    except PdpInputError:
        return inp


def owner_of(inp: InputLike, shards: int) -> int:
    """The shard that owns a :func:`prepared` input; 0 for one that cannot be sent (it
    fails the same wherever it goes)."""
    if not isinstance(inp, Input):
        return 0
    tool = inp.tool.name if isinstance(inp.tool, Tool) else ""
    try:
        return owner(inp.user_id, tool, shards)
    except (AttributeError, TypeError, UnicodeError):
        return 0


def split(inputs: Iterable[InputLike], shards: int) -> tuple[list[list[int]], list[list[InputLike]]]:
    """The :func:`prepared` inputs grouped by owner, each group in input order, with
    each one's position in ``inputs``."""
    at: list[list[int]] = [[] for _ in range(shards)]
    groups: list[list[InputLike]] = [[] for _ in range(shards)]
    for i, inp in enumerate(inputs):
        inp = prepared(inp)
        o = owner_of(inp, shards)
        at[o].append(i)
        groups[o].append(inp)
    return at, groups


def merge(at: Sequence[list[int]], parts: Sequence[list[Decision]], raise_errors: bool) -> list[Decision]:
    """Each group's decisions put back in input order; with ``raise_errors`` the error
    of the first input (in input order) the client could not get a decision for."""
    out: list[Decision | None] = [None] * sum(len(a) for a in at)
    for positions, ds in zip(at, parts):
        for i, d in zip(positions, ds):
            out[i] = d
    done: list[Decision] = [d for d in out if d is not None]
    assert len(done) == len(out), "a decision per input"
    if raise_errors:
        for d in done:
            if d.error is not None:
                raise d.error
    return done


def all_failed(e: PdpError, n: int, raise_errors: bool) -> list[Decision]:
    """``n`` denies for ``e``, or with ``raise_errors`` ``e`` raised."""
    if raise_errors:
        raise e
    return [Decision.fail_closed(e) for _ in range(n)]
