"""Typed inputs and results: SARK's input document as the EVAL's fields, and decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PdpError, PdpInputError

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

_TOP_FIELDS = frozenset({"user", "action", "tool", "server", "context", "parameters", "agent"})
_USER_FIELDS = frozenset({"id", "roles", "teams", "team_manager_of", "scopes", "mfa_verified", "mfa_age_s", "email"})
_TOOL_FIELDS = frozenset({"name", "sensitivity_level", "owner", "managers", "teams"})
_SERVER_FIELDS = frozenset({"id", "name", "owner_id", "teams", "managed_by_team"})


@dataclass(kw_only=True, slots=True)
class Tool:
    """``input.tool``: the MCP tool being acted on."""

    name: str
    sensitivity_level: str | None = None
    owner: str | None = None
    managers: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)


@dataclass(kw_only=True, slots=True)
class Server:
    """``input.server``: the MCP server being acted on."""

    id: str
    name: str | None = None
    owner_id: str | None = None
    teams: list[str] = field(default_factory=list)
    managed_by_team: str | None = None


@dataclass(kw_only=True, slots=True)
class Input:
    """One authorization question, as the binary protocol's EVAL carries it.

    ``None`` means absent for every optional field. ``parameters`` and ``agent`` are any
    JSON-able values; ``context`` is a JSON-able dict of the context fields other than
    ``client_ip`` and ``now_ns`` (which win over the same names in it). ``now_ns``
    absent: the server stamps its own clock.
    """

    user_id: str
    action: str
    roles: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    team_manager_of: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    mfa_verified: bool | None = None
    mfa_age_s: int | None = None
    email: str | None = None
    tool: Tool | None = None
    server: Server | None = None
    client_ip: str | None = None
    now_ns: int | None = None
    parameters: Any = None
    agent: Any = None
    context: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, doc: Any) -> Input:
        """Map SARK's JSON input document (what ``sark-pdp eval`` reads) to typed fields.

        Lists that are absent or null become empty lists, and optional fields that are
        null become absent (the typed EVAL has no null). ``context.client_ip`` (a string)
        and ``context.now_ns`` become the typed fields; every other context field, and a
        ``client_ip`` of another type, travel in ``context`` as they are, exactly as the
        server's JSON path would see them. ``now_ns`` must be an integer: the server
        takes the time from the typed field alone (see ``_common.py``).

        Raises:
            PdpInputError: the document has a field the typed EVAL cannot carry (an
                unknown field of the document, ``user``, ``tool`` or ``server``), or a
                field of the wrong type (``context.now_ns`` included). Dropping or
                coercing it could change the decision, so nothing is guessed; send
                such documents over HTTP instead.
        """
        top = _obj(doc, "input")
        _known(top, _TOP_FIELDS, "input")
        user = _obj(top.get("user"), "user")
        _known(user, _USER_FIELDS, "user")
        mfa_verified = user.get("mfa_verified")
        if mfa_verified is not None and not isinstance(mfa_verified, bool):
            raise PdpInputError("user.mfa_verified: must be a boolean")
        context = top.get("context")
        client_ip = now_ns = None
        rest: dict[str, Any] | None = None
        if context is not None:
            rest = dict(_obj(context, "context"))
            if isinstance(rest.get("client_ip"), str):
                client_ip = rest.pop("client_ip")
            if "now_ns" in rest:
                now_ns = rest.pop("now_ns")
                if not is_i64(now_ns):
                    raise PdpInputError("context.now_ns: must be a 64-bit integer (nanoseconds since the epoch)")
        return cls(
            user_id=_str(user.get("id"), "user.id"),
            roles=_strs(user.get("roles"), "user.roles"),
            teams=_strs(user.get("teams"), "user.teams"),
            team_manager_of=_strs(user.get("team_manager_of"), "user.team_manager_of"),
            scopes=_strs(user.get("scopes"), "user.scopes"),
            mfa_verified=mfa_verified,
            mfa_age_s=_opt_i64(user.get("mfa_age_s"), "user.mfa_age_s"),
            email=_opt_str(user.get("email"), "user.email"),
            action=_str(top.get("action"), "action"),
            tool=_tool(top.get("tool")),
            server=_server(top.get("server")),
            client_ip=client_ip,
            now_ns=now_ns,
            parameters=top.get("parameters"),
            agent=top.get("agent"),
            context=rest or None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The input document the server builds from these fields (before it stamps
        ``context.now_ns`` when absent), as ``pdp/src/input.rs`` does."""
        user: dict[str, Any] = {
            "id": self.user_id,
            "roles": list(self.roles),
            "teams": list(self.teams),
            "team_manager_of": list(self.team_manager_of),
            "scopes": list(self.scopes),
        }
        _put(user, "mfa_verified", self.mfa_verified)
        _put(user, "mfa_age_s", self.mfa_age_s)
        _put(user, "email", self.email)
        doc: dict[str, Any] = {"user": user, "action": self.action}
        if self.tool is not None:
            t = self.tool
            tool: dict[str, Any] = {"name": t.name, "managers": list(t.managers), "teams": list(t.teams)}
            _put(tool, "sensitivity_level", t.sensitivity_level)
            _put(tool, "owner", t.owner)
            doc["tool"] = tool
        if self.server is not None:
            s = self.server
            server: dict[str, Any] = {"id": s.id, "teams": list(s.teams)}
            _put(server, "name", s.name)
            _put(server, "owner_id", s.owner_id)
            _put(server, "managed_by_team", s.managed_by_team)
            doc["server"] = server
        _put(doc, "parameters", self.parameters)
        _put(doc, "agent", self.agent)
        context = dict(self.context or {})
        _put(context, "client_ip", self.client_ip)
        _put(context, "now_ns", self.now_ns)
        doc["context"] = context
        return doc


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason of a decision: ``code`` 0 for a policy's own reason, else the error code."""

    code: int
    text: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one EVAL.

    ``error_code`` is 0 for a policy's decision, 1001-1007 for an evaluation the server
    could not complete, 3001-3006 for a request the server refused with an ERROR frame,
    and 4001-4005 for a failure on the client's side (see :mod:`sark_pdp.errors`). Every
    non-zero code comes with ``allow=False``. ``error`` holds the exception when the
    client made this deny itself (a failure, or an ERROR frame); ``failed`` says so.
    """

    allow: bool
    cache_hit: bool = False
    ttl_s: int = 0
    decision_id: int = 0
    error_code: int = 0
    reasons: list[Reason] = field(default_factory=list)
    filtered_parameters: Any = None
    error: PdpError | None = None

    @property
    def failed(self) -> bool:
        """True when no decision came from the server (this is the client's deny)."""
        return self.error is not None

    @classmethod
    def fail_closed(cls, error: PdpError) -> Decision:
        """The deny the client answers with when it has no decision: ``error`` as reason."""
        return cls(allow=False, error_code=error.code, reasons=[Reason(error.code, str(error))], error=error)


@dataclass(frozen=True, slots=True)
class HelloOk:
    """What the server agreed to in HELLO_OK. ``route``: the routing function it announces
    (0 none, 1 :func:`sark_pdp.route_hash`); ``shard_ports[i]``: shard i's own port, on the
    address the client connected to (empty when the server runs with ``--shard-ports off``)."""

    max_payload: int
    max_batch: int
    shards: int
    shard: int
    bundle_revision: str
    driver: str
    route: int = 0
    shard_ports: tuple[int, ...] = ()


def _obj(v: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise PdpInputError(f"{name}: must be an object")
    return v


def _known(obj: Mapping[str, Any], known: frozenset[str], name: str) -> None:
    extra = sorted(str(k) for k in obj if k not in known)
    if extra:
        raise PdpInputError(f"{name}.{extra[0]}: the typed EVAL has no such field")


def _str(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise PdpInputError(f"{name}: must be a string")
    return v


def _opt_str(v: Any, name: str) -> str | None:
    return None if v is None else _str(v, name)


def _strs(v: Any, name: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise PdpInputError(f"{name}: must be a list of strings")
    return list(v)


def is_i64(v: Any) -> bool:
    """An int (not a bool) that fits in an i64."""
    return isinstance(v, int) and not isinstance(v, bool) and I64_MIN <= v <= I64_MAX


def _opt_i64(v: Any, name: str) -> int | None:
    if v is None:
        return None
    if not is_i64(v):
        raise PdpInputError(f"{name}: must be a 64-bit integer")
    return int(v)


def _tool(v: Any) -> Tool | None:
    if v is None:
        return None
    t = _obj(v, "tool")
    _known(t, _TOOL_FIELDS, "tool")
    return Tool(
        name=_str(t.get("name"), "tool.name"),
        sensitivity_level=_opt_str(t.get("sensitivity_level"), "tool.sensitivity_level"),
        owner=_opt_str(t.get("owner"), "tool.owner"),
        managers=_strs(t.get("managers"), "tool.managers"),
        teams=_strs(t.get("teams"), "tool.teams"),
    )


def _server(v: Any) -> Server | None:
    if v is None:
        return None
    s = _obj(v, "server")
    _known(s, _SERVER_FIELDS, "server")
    return Server(
        id=_str(s.get("id"), "server.id"),
        name=_opt_str(s.get("name"), "server.name"),
        owner_id=_opt_str(s.get("owner_id"), "server.owner_id"),
        teams=_strs(s.get("teams"), "server.teams"),
        managed_by_team=_opt_str(s.get("managed_by_team"), "server.managed_by_team"),
    )


def _put(d: dict[str, Any], key: str, v: Any) -> None:
    if v is not None:
        d[key] = v
