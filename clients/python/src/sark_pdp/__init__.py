"""A client for the SARK PDP binary protocol (``wire/PROTOCOL.md``): typed inputs,
pipelining, batches, pools, key-affine routing, blocking and asyncio, failing closed.

Example::

    from sark_pdp import Client
    c = Client.connect("127.0.0.1", 7474)
    d = c.evaluate({"user": {"id": "alice", "roles": ["developer"]}, "action": "tool:invoke"})
    print(d.allow, [r.text for r in d.reasons])
"""

from ._route import owner, route_hash
from .aio import AsyncClient, AsyncPool, AsyncRouter
from .client import Client, Pool, Router
from .errors import (
    CONNECT_FAILED,
    CONNECTION_LOST,
    INVALID_INPUT,
    PROTOCOL_ERROR,
    TIMEOUT,
    PdpConnectionError,
    PdpError,
    PdpInputError,
    PdpProtocolError,
    PdpServerError,
    PdpTimeout,
    PdpUnauthorized,
)
from .types import Decision, HelloOk, Input, Reason, Server, Tool

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncPool",
    "AsyncRouter",
    "CONNECT_FAILED",
    "CONNECTION_LOST",
    "Client",
    "Decision",
    "HelloOk",
    "INVALID_INPUT",
    "Input",
    "PROTOCOL_ERROR",
    "PdpConnectionError",
    "PdpError",
    "PdpInputError",
    "PdpProtocolError",
    "PdpServerError",
    "PdpTimeout",
    "PdpUnauthorized",
    "Pool",
    "Reason",
    "Router",
    "Server",
    "TIMEOUT",
    "Tool",
    "owner",
    "route_hash",
]
