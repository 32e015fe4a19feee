"""Exceptions, and the client-side error codes a fail-closed deny carries.

The server's own codes: 1001-1007 in a DECISION (an evaluation that failed, see the
project README), 3001-3006 in an ERROR frame (``wire/PROTOCOL.md``). When an ERROR frame
answers a request, the deny carries that 3xxx code. Failures the client sees itself use
4001-4005:

====  ==================  ==========================================================
code  name                meaning
====  ==================  ==========================================================
4001  CONNECT_FAILED      no connection: refused, unreachable, or HELLO went wrong
4002  TIMEOUT             no reply within the timeout (the connection is closed)
4003  CONNECTION_LOST     the connection closed or failed with the request in flight
4004  PROTOCOL_ERROR      the server's reply broke the protocol (the connection is closed)
4005  INVALID_INPUT       the input cannot be sent (wrong types, over max_payload)
====  ==================  ==========================================================
"""

from __future__ import annotations

CONNECT_FAILED = 4001
TIMEOUT = 4002
CONNECTION_LOST = 4003
PROTOCOL_ERROR = 4004
INVALID_INPUT = 4005

#: The ERROR frame code for a request the connection's token does not allow.
UNAUTHORIZED = 3006


class PdpError(Exception):
    """Any failure to get a decision from the PDP; ``code`` says which kind."""

    code: int = CONNECTION_LOST

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class PdpConnectionError(PdpError):
    """Could not connect (4001), or the connection was lost mid-request (4003)."""

    code = CONNECT_FAILED


class PdpTimeout(PdpError):
    """No reply (or no connection) within the timeout (4002)."""

    code = TIMEOUT


class PdpProtocolError(PdpError):
    """The peer sent something that is not this protocol (4004)."""

    code = PROTOCOL_ERROR


class PdpInputError(PdpError, ValueError):
    """The input cannot be encoded as an EVAL, or is over the server's limits (4005)."""

    code = INVALID_INPUT


class PdpServerError(PdpError):
    """The server answered with an ERROR frame; ``code`` is its code (3001-3006)."""


class PdpUnauthorized(PdpServerError):
    """ERROR 3006: the caller token is missing or wrong (or INVALIDATE without admin)."""

    code = UNAUTHORIZED


def server_error(code: int, message: str) -> PdpServerError:
    """The exception for an ERROR frame."""
    cls = PdpUnauthorized if code == UNAUTHORIZED else PdpServerError
    return cls(f"server error {code}: {message}", code)
