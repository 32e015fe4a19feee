"""The blocking client (one socket), a thread-safe pool of them, and a router (one per
shard, each question to the shard that owns it)."""

from __future__ import annotations

import queue
import select
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import _route, _wire
from ._common import DEFAULT_BATCH_ITEMS, FrameReader, InputLike, Request, batch_requests, decisions, eval_request, match
from .errors import CONNECT_FAILED, CONNECTION_LOST, PdpConnectionError, PdpError, PdpProtocolError, PdpTimeout
from .types import Decision, HelloOk


class Client:
    """One connection to a ``sark-pdp serve`` binary port. Not thread-safe: give each
    thread its own, or use :class:`Pool`.

    Every call fails closed: an error, a timeout, a lost connection, an ERROR frame or a
    malformed reply makes the decision a deny (``allow=False``, ``failed=True``, the
    reason in ``reasons``) — unless ``raise_errors=True``, where the typed exception is
    raised instead. After a failure the socket is closed; the next call connects again
    (not before ``reconnect_backoff`` seconds after a failed connect). A request that
    failed is never sent again.

    Args:
        host, port: the server's binary protocol address.
        token: HELLO's token (the server's caller token, or the admin token).
        timeout: seconds each request may wait for its reply (from when it is queued).
        connect_timeout: seconds for the TCP connect and the HELLO exchange
            (default: ``timeout``).
        max_payload: the largest payload this client accepts; HELLO negotiates the
            smaller of this and the server's.
        max_batch: most inputs per EVAL_BATCH frame (also bounded by the server's
            max_batch and by max_payload).
        raise_errors: raise :class:`~sark_pdp.errors.PdpError` subclasses instead of
            answering with a deny.
        reconnect_backoff: seconds after a failed connect during which calls fail at
            once instead of trying again.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float | None = None,
        max_payload: int = _wire.DEFAULT_MAX_PAYLOAD,
        max_batch: int = DEFAULT_BATCH_ITEMS,
        raise_errors: bool = False,
        reconnect_backoff: float = 0.1,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.max_payload = max_payload
        self.max_batch = max_batch
        self.raise_errors = raise_errors
        self.reconnect_backoff = reconnect_backoff
        #: What the server said in HELLO_OK on the current connection (None: not connected).
        self.hello: HelloOk | None = None
        self._token = token
        self._sock: socket.socket | None = None
        self._frames = FrameReader(max_payload)
        self._next_id = 1
        self._retry_at = 0.0
        self._connect_error: PdpError | None = None
        self._closed = False

    @classmethod
    def connect(cls, host: str, port: int, token: str | None = None, **kwargs: Any) -> Client:
        """Connect and say HELLO. On failure the client is returned unconnected (its
        calls deny with the reason, and connect again later), unless
        ``raise_errors=True``, where the error is raised. Keywords as for :class:`Client`."""
        c = cls(host, port, token=token, **kwargs)
        try:
            c._ensure()
        except PdpError:
            if c.raise_errors:
                raise
        return c

    @property
    def connected(self) -> bool:
        """Whether a connection is open (as far as this client knows)."""
        return self._sock is not None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; later calls fail (code 4003)."""
        self._closed = True
        self._drop()

    # ------------------------------------------------------------ calls

    def evaluate(self, inp: InputLike) -> Decision:
        """Decide one input (an :class:`~sark_pdp.Input` or a SARK input dict)."""
        return self.evaluate_many((inp,), depth=1)[0]

    def evaluate_many(self, inputs: Iterable[InputLike], depth: int = 64) -> list[Decision]:
        """Decide many inputs, one EVAL each, keeping up to ``depth`` in flight on this
        connection (pipelined); the decisions come back in input order."""
        try:
            x = self._many(inputs, depth)
        except PdpError as e:
            return self._all_failed(e, inputs)
        _run([x])
        return decisions(x.results, x.counts, self.raise_errors)

    def evaluate_batch(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """Decide many inputs in EVAL_BATCH frames (split to fit the server's max_batch,
        ``max_batch`` and max_payload; the frames are pipelined); decisions in order."""
        try:
            x = self._batches(inputs)
        except PdpError as e:
            return self._all_failed(e, inputs)
        _run([x])
        return decisions(x.results, x.counts, self.raise_errors)

    def ping(self, data: bytes = b"ping") -> bool:
        """Round trip a PING: True when the PONG echoes ``data``."""
        try:
            self._ensure()
            (res,), _ = self._exchange([(_wire.PING, data, 1)], 1)
            if isinstance(res, PdpError):
                raise res
            if res != data:
                raise PdpProtocolError("PONG does not echo the PING")
            return True
        except PdpError:
            if self.raise_errors:
                raise
            return False

    # ------------------------------------------------------------ internals

    def _all_failed(self, e: PdpError, inputs: Iterable[InputLike]) -> list[Decision]:
        if self.raise_errors:
            raise e
        return [Decision.fail_closed(e) for _ in inputs]

    def _ensure(self) -> HelloOk:
        """The open connection's HELLO_OK, connecting first if there is none."""
        if self._sock is not None and self.hello is not None:
            return self.hello
        if self._closed:
            raise PdpConnectionError("the client is closed", CONNECTION_LOST)
        if time.monotonic() < self._retry_at and self._connect_error is not None:
            raise self._connect_error
        try:
            return self._open()
        except PdpError as e:
            self._drop()
            self._connect_error = e
            self._retry_at = time.monotonic() + self.reconnect_backoff
            raise

    def _open(self) -> HelloOk:
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except socket.timeout:
            raise PdpTimeout(f"connect to {where}: no answer within {self.connect_timeout} s") from None
        except OSError as e:
            raise PdpConnectionError(f"connect to {where}: {e.strerror or e}", CONNECT_FAILED) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Non-blocking: _exchange polls itself (a socket with a timeout would poll again
        # inside every send and recv).
        sock.setblocking(False)
        self._sock, self._frames = sock, FrameReader(self.max_payload)
        hello_body = _wire.encode_hello(self.max_payload, self._token)
        (res,), _ = self._exchange([(_wire.HELLO, hello_body, 1)], 1, self.connect_timeout)
        if isinstance(res, PdpConnectionError):
            raise PdpConnectionError(f"HELLO to {where}: {res}", CONNECT_FAILED)
        if isinstance(res, PdpTimeout):
            raise PdpTimeout(f"HELLO to {where}: {res}")
        if isinstance(res, PdpError):  # an ERROR frame (3006: the token), a protocol error
            raise res
        assert isinstance(res, HelloOk)  # decode_reply answers HELLO with HELLO_OK or an error
        if not 0 < res.max_payload <= self.max_payload or res.max_batch < 1:
            raise PdpProtocolError(f"HELLO_OK with max_payload {res.max_payload} (offered {self.max_payload}), max_batch {res.max_batch}")
        self.hello = res
        self._frames.limit = res.max_payload
        return res

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self.hello = None

    def _exchange(self, reqs: Iterable[Request | PdpError], depth: int, timeout: float | None = None) -> tuple[list[Any], list[int]]:
        """Send ``reqs`` (errors stand for requests that cannot be sent) with up to
        ``depth`` in flight, and collect each one's decoded reply or error, in order,
        with how many inputs each carried.

        A failure of the connection (timeout, close, I/O error, protocol violation)
        closes it and becomes the result of every request not yet answered.
        """
        x = _Exchange(self, reqs, depth, self.timeout if timeout is None else timeout)
        _run([x])
        return x.results, x.counts

    def _many(self, inputs: Iterable[InputLike], depth: int) -> _Exchange:
        """An exchange of one EVAL per input (connecting first: raises its error)."""
        max_payload = self._ensure().max_payload
        return _Exchange(self, (eval_request(i, max_payload) for i in inputs), depth, self.timeout)

    def _batches(self, inputs: Iterable[InputLike]) -> _Exchange:
        """An exchange of EVAL_BATCH frames for ``inputs`` (connecting first: raises its error)."""
        hello = self._ensure()
        return _Exchange(self, batch_requests(inputs, hello.max_payload, min(self.max_batch, hello.max_batch)), 16, self.timeout)


class _Exchange:
    """One connection's share of :func:`_run`: its requests (sent with up to ``depth`` in
    flight), and each one's decoded reply or error, in order (``results``), with how many
    inputs each carried (``counts``). ``done`` once every request has its result."""

    def __init__(self, client: Client, reqs: Iterable[Request | PdpError], depth: int, timeout: float) -> None:
        self.client = client
        self.depth = depth
        self.timeout = timeout
        self.results: list[Any] = []
        self.counts: list[int] = []
        self.pending: dict[int, tuple[int, int, int, float]] = {}  # id: index, opcode, items, deadline
        self.out = bytearray()
        self.done = False
        self._it = iter(reqs)
        self._more = True
        sock = client._sock
        if sock is None:
            self.fail(PdpConnectionError("not connected", CONNECTION_LOST))
        else:
            self.sock = sock

    def send(self) -> None:
        """Queue requests up to ``depth`` in flight and write what the socket takes."""
        client, pending, out = self.client, self.pending, self.out
        while self._more and len(pending) < self.depth:
            req = next(self._it, None)
            if req is None:
                self._more = False
                break
            if isinstance(req, PdpError):
                self.results.append(req)
                self.counts.append(1)
                continue
            op, body, n = req
            rid = client._next_id
            client._next_id += 1
            out += _wire.frame(op, rid, body)
            pending[rid] = (len(self.results), op, n, time.monotonic() + self.timeout)
            self.results.append(None)
            self.counts.append(n)
        if out:
            try:
                del out[: self.sock.send(out)]
            except BlockingIOError:
                pass
        if not pending:
            self.done = True

    def deadline(self) -> float:
        """When the oldest request in flight times out."""
        return next(iter(self.pending.values()))[3]

    def receive(self) -> None:
        """Read what the socket has and match the replies it completes."""
        try:
            data = self.sock.recv(256 * 1024)
        except BlockingIOError:
            return
        if not data:
            raise PdpConnectionError("connection closed by the server", CONNECTION_LOST)
        for op, rid, payload in self.client._frames.feed(data):
            entry, result = match(self.pending, op, rid, payload)
            self.results[entry[0]] = result
            del self.pending[rid]

    def fail(self, exc: BaseException) -> None:
        """Close the connection; ``exc`` becomes the result of every request not yet
        answered (an OSError as a lost connection)."""
        e = exc if isinstance(exc, PdpError) else PdpConnectionError(f"connection failed: {exc}", CONNECTION_LOST)
        self.client._drop()
        for index, _, _, _ in self.pending.values():
            self.results[index] = e
        self.pending.clear()
        for req in self._it:
            self.results.append(req if isinstance(req, PdpError) else e)
            self.counts.append(1 if isinstance(req, PdpError) else req[2])
        self._more = False
        self.done = True


def _run(exchanges: list[_Exchange]) -> None:
    """Drive ``exchanges`` (each on its own connection) until all are done: every
    connection's requests are written before any reply is waited for, and one poll
    waits on all of them."""
    active = [x for x in exchanges if not x.done]
    while active:
        for x in active:
            try:
                x.send()
            except (PdpError, OSError) as e:
                x.fail(e)
        now = time.monotonic()
        for x in active:
            if not x.done and x.deadline() <= now:
                x.fail(PdpTimeout(f"no reply within {x.timeout} s"))
        active = [x for x in active if not x.done]
        if not active:
            return
        for x in _ready(active, min(x.deadline() for x in active) - now):
            try:
                x.receive()
            except (PdpError, OSError) as e:
                x.fail(e)
        active = [x for x in active if not x.done]


def _ready(exchanges: list[_Exchange], timeout: float) -> list[_Exchange]:
    """Wait up to ``timeout`` s until a socket is readable (or, for one with bytes left
    to write, writable); the exchanges whose sockets are readable (an error or hang-up
    counts: the recv that follows reports it). poll(2) where there is one (no FD_SETSIZE
    limit), select(2) elsewhere."""
    if hasattr(select, "poll"):
        p = select.poll()
        by_fd = {}
        for x in exchanges:
            fd = x.sock.fileno()
            by_fd[fd] = x
            p.register(fd, select.POLLIN | (select.POLLOUT if x.out else 0))
        readable = select.POLLIN | select.POLLERR | select.POLLHUP
        return [by_fd[fd] for fd, ev in p.poll(timeout * 1000) if ev & readable]
    socks = [x.sock for x in exchanges]
    r, _, _ = select.select(socks, [x.sock for x in exchanges if x.out], [], timeout)
    return [x for x in exchanges if x.sock in r]


class Pool:
    """A thread-safe pool of :class:`Client` connections: each call borrows an idle one
    (in turn), waiting up to ``timeout`` for one to be free. A client whose connection
    failed connects again on its next call."""

    def __init__(self, host: str, port: int, size: int = 4, **kwargs: Any) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.clients = [Client(host, port, **kwargs) for _ in range(size)]
        self.timeout: float = self.clients[0].timeout
        self.raise_errors: bool = self.clients[0].raise_errors
        self._idle: queue.Queue[Client] = queue.Queue()
        for c in self.clients:
            self._idle.put(c)

    @classmethod
    def connect(cls, host: str, port: int, size: int = 4, token: str | None = None, **kwargs: Any) -> Pool:
        """A pool of ``size`` connections, each connected now (failures as for
        :meth:`Client.connect`)."""
        pool = cls(host, port, size, token=token, **kwargs)
        for c in pool.clients:
            try:
                c._ensure()
            except PdpError:
                if pool.raise_errors:
                    pool.close()
                    raise
        return pool

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _borrow(self) -> Client:
        try:
            return self._idle.get(timeout=self.timeout)
        except queue.Empty:
            raise PdpTimeout(f"no free connection within {self.timeout} s") from None

    def evaluate(self, inp: InputLike) -> Decision:
        """As :meth:`Client.evaluate`, on a borrowed connection."""
        return self.evaluate_many((inp,), depth=1)[0]

    def evaluate_many(self, inputs: Iterable[InputLike], depth: int = 64) -> list[Decision]:
        """As :meth:`Client.evaluate_many`, on one borrowed connection."""
        try:
            c = self._borrow()
        except PdpTimeout as e:
            if self.raise_errors:
                raise
            return [Decision.fail_closed(e) for _ in inputs]
        try:
            return c.evaluate_many(inputs, depth)
        finally:
            self._idle.put(c)

    def evaluate_batch(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """As :meth:`Client.evaluate_batch`, on one borrowed connection."""
        try:
            c = self._borrow()
        except PdpTimeout as e:
            if self.raise_errors:
                raise
            return [Decision.fail_closed(e) for _ in inputs]
        try:
            return c.evaluate_batch(inputs)
        finally:
            self._idle.put(c)

    def ping(self) -> bool:
        """As :meth:`Client.ping`, on a borrowed connection."""
        try:
            c = self._borrow()
        except PdpTimeout:
            if self.raise_errors:
                raise
            return False
        try:
            return c.ping()
        finally:
            self._idle.put(c)

    def close(self) -> None:
        """Close every connection."""
        for c in self.clients:
            c.close()


class _ShardClient(Client):
    """A :class:`Client` on one shard's own port: every HELLO_OK (each reconnect too) must
    say it is shard ``shard`` of ``shards``, else the connect fails (4004)."""

    def __init__(self, host: str, port: int, shard: int, shards: int, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.shard = shard
        self.shards = shards

    def _open(self) -> HelloOk:
        hello = super()._open()
        if (hello.shard, hello.shards) != (self.shard, self.shards):
            raise PdpProtocolError(
                f"{self.host}:{self.port}, announced as shard {self.shard} of {self.shards}'s own port, "
                f"answered as shard {hello.shard} of {hello.shards}"
            )
        return hello


class Router:
    """Key-affine routing (``wire/PROTOCOL.md``): one :class:`Client` per shard, on each
    shard's own port, and every question sent to the shard that owns it (by user id and
    tool name, :func:`sark_pdp.owner`), so that shard's decision cache answers the
    repeats. Not thread-safe, like :class:`Client`.

    The first call (or :meth:`connect`) says HELLO on ``host:port`` and reads the shard
    ports and routing function from its HELLO_OK; with function 1 and one port per shard
    (more than one), that connection is closed and one opens to each shard port, on the
    address ``host`` resolved to; each must answer as its shard (else its questions fail,
    4004). Otherwise everything goes over the first connection (``routing`` is False).
    The layout is read once. Fails closed like :class:`Client`; keywords as for it.
    """

    def __init__(self, host: str, port: int, **kwargs: Any) -> None:
        self.host = host
        self.port = port
        self._kwargs = kwargs
        self._first = Client(host, port, **kwargs)
        self.raise_errors: bool = self._first.raise_errors
        #: HELLO_OK of ``host:port`` (None until the first HELLO).
        self.hello: HelloOk | None = None
        #: The connections questions go over: shard i's at index i when routing, else
        #: the one to ``host:port`` (empty until the first HELLO).
        self.clients: list[Client] = []
        self._closed = False

    @classmethod
    def connect(cls, host: str, port: int, token: str | None = None, **kwargs: Any) -> Router:
        """Say HELLO and connect to every shard now. On failure the router is returned
        with what it could open (the rest deny, and connect again later), unless
        ``raise_errors=True``, where the first error is raised."""
        r = cls(host, port, token=token, **kwargs)
        try:
            clients = r._layout()
        except PdpError:
            if r.raise_errors:
                raise
            return r
        for c in clients:
            try:
                c._ensure()
            except PdpError:
                if r.raise_errors:
                    r.close()
                    raise
        return r

    @property
    def routing(self) -> bool:
        """Whether questions go to their owners (False: all over one connection)."""
        return len(self.clients) > 1

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; later calls fail (code 4003)."""
        self._closed = True
        self._first.close()
        for c in self.clients:
            c.close()

    def _layout(self) -> list[Client]:
        """The connections (see ``clients``), reading the layout first if need be."""
        if self.clients:
            return self.clients
        if self._closed:
            raise PdpConnectionError("the router is closed", CONNECTION_LOST)
        first = self._first
        hello = first._ensure()
        if _route.routes(hello):
            host = self.host
            if first._sock is not None:
                try:
                    host = first._sock.getpeername()[0]
                except OSError:
                    pass
            self.clients = [_ShardClient(host, p, i, hello.shards, **self._kwargs) for i, p in enumerate(hello.shard_ports)]
            first.close()
        else:
            self.clients = [first]
        self.hello = hello
        return self.clients

    def evaluate(self, inp: InputLike) -> Decision:
        """As :meth:`Client.evaluate`, on the owner's connection."""
        try:
            clients = self._layout()
        except PdpError as e:
            return _route.all_failed(e, 1, self.raise_errors)[0]
        if len(clients) == 1:
            return clients[0].evaluate(inp)
        inp = _route.prepared(inp)
        return clients[_route.owner_of(inp, len(clients))].evaluate(inp)

    def evaluate_many(self, inputs: Iterable[InputLike], depth: int = 64) -> list[Decision]:
        """As :meth:`Client.evaluate_many`: each input on its owner's connection, up to
        ``depth`` in flight on each, all connections at once; decisions in input order."""
        return self._routed(inputs, lambda c, group: c._many(group, depth))

    def evaluate_batch(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """As :meth:`Client.evaluate_batch`: the inputs split by owner, EVAL_BATCH frames
        to each owner, every connection's sent before any reply is waited for; decisions
        in input order."""
        return self._routed(inputs, lambda c, group: c._batches(group))

    def ping(self, data: bytes = b"ping") -> bool:
        """:meth:`Client.ping` on every connection: True when all answer."""
        try:
            clients = self._layout()
        except PdpError:
            if self.raise_errors:
                raise
            return False
        return all([c.ping(data) for c in clients])

    def _routed(self, inputs: Iterable[InputLike], exchange: Callable[[Client, list[InputLike]], _Exchange]) -> list[Decision]:
        inputs = list(inputs)
        try:
            clients = self._layout()
        except PdpError as e:
            return _route.all_failed(e, len(inputs), self.raise_errors)
        at, groups = _route.split(inputs, len(clients)) if len(clients) > 1 else ([list(range(len(inputs)))], [inputs])
        parts: list[_Exchange | PdpError | None] = []
        for c, group in zip(clients, groups):
            try:
                parts.append(exchange(c, group) if group else None)
            except PdpError as e:  # its connect failed
                parts.append(e)
        _run([x for x in parts if isinstance(x, _Exchange)])
        out = []
        for x, group in zip(parts, groups):
            if isinstance(x, _Exchange):
                out.append(decisions(x.results, x.counts, False))
            else:
                out.append([] if x is None else [Decision.fail_closed(x) for _ in group])
        return _route.merge(at, out, self.raise_errors)
