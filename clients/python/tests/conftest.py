"""Fixtures: the shared real servers and fake servers (see support.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from support import TOKEN, FakeServer, Server, running


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The shared server: no caller token."""
    with running() as s:
        yield s


@pytest.fixture(scope="session")
def token_server() -> Iterator[Server]:
    """A server that needs the caller token ``TOKEN``."""
    with running("--caller-token", TOKEN) as s:
        yield s


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[socket.socket], None]], FakeServer]]:
    """``fake(handler)`` starts a :class:`FakeServer`; all are closed after the test."""
    servers: list[FakeServer] = []

    def start(handler: Callable[[socket.socket], None]) -> FakeServer:
        s = FakeServer(handler)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


