"""The asyncio client (pipelined over one connection), a pool of them, and a router (one
per shard, each question to the shard that owns it)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from . import _route, _wire
from ._common import DEFAULT_BATCH_ITEMS, FrameReader, InputLike, Request, batch_requests, decisions, decode_reply, eval_body, match
from .errors import CONNECT_FAILED, CONNECTION_LOST, PdpConnectionError, PdpError, PdpProtocolError, PdpServerError, PdpTimeout
from .types import Decision, HelloOk


class _Conn:
    """One open connection: a reader task hands each reply to the future of the request
    whose id it carries (replies may come in any order). Frames queued in one turn of the
    event loop go out in one write; what is queued is bounded by the client's in-flight
    slots, so nothing waits for the transport to drain."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: HelloOk, ids: itertools.count[int]) -> None:
        self.reader = reader
        self.writer = writer
        self.hello = hello
        self.ids = ids
        self.error: PdpError | None = None
        self.pending: dict[int, tuple[asyncio.Future[Any], int, int, asyncio.TimerHandle]] = {}
        self._out: list[bytes] = []
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.task = loop.create_task(self._read_loop())

    async def request(self, op: int, body: bytes, items: int, timeout: float) -> Any:
        """Send one request; its decoded reply, or the error that ended it."""
        if self.error is not None:
            return self.error
        loop = self._loop
        rid = next(self.ids)
        fut: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(timeout, self.fail, PdpTimeout(f"no reply within {timeout} s"))
        self.pending[rid] = (fut, op, items, timer)
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(_wire.frame(op, rid, body))
        return await fut

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.error is None:
            self.writer.write(b"".join(out))

    async def _read_loop(self) -> None:
        frames = FrameReader(self.hello.max_payload)
        try:
            while True:
                data = await self.reader.read(256 * 1024)
                if not data:
                    raise PdpConnectionError("connection closed by the server", CONNECTION_LOST)
                for op, rid, payload in frames.feed(data):
                    (fut, _, _, timer), result = match(self.pending, op, rid, payload)
                    del self.pending[rid]
                    timer.cancel()
                    if not fut.done():
                        fut.set_result(result)
        except OSError as e:
            self.fail(PdpConnectionError(f"connection failed: {e}", CONNECTION_LOST))
        except PdpError as e:
            self.fail(e)

    def fail(self, e: PdpError) -> None:
        """Close the connection and answer every pending request with ``e``."""
        if self.error is None:
            self.error = e
        self.writer.close()
        if self.task is not asyncio.current_task():
            self.task.cancel()
        pending, self.pending = self.pending, {}
        for fut, _, _, timer in pending.values():
            timer.cancel()
            if not fut.done():
                fut.set_result(self.error)


class _Slots:
    """A first-come first-served limit on requests in flight, O(1) per acquire and
    release (asyncio.Semaphore in Python 3.11 scans its waiters on every release)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # release() hands its slot over by resolving this
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over, but the caller is gone: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


class AsyncClient:
    """One pipelined asyncio connection to ``sark-pdp serve``: any number of coroutines
    may call it at once; at most ``max_in_flight`` requests are on the wire (the rest
    wait), and a reader task matches replies to requests by id.

    Fails closed like :class:`sark_pdp.Client` (a deny with the reason, or with
    ``raise_errors=True`` the typed exception); a timeout closes the connection (what
    follows on it is in doubt) and fails every request in flight on it; the next call
    connects again. Arguments as for :class:`sark_pdp.Client`, plus ``max_in_flight``.
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
        max_in_flight: int = 1024,
        raise_errors: bool = False,
        reconnect_backoff: float = 0.1,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.max_payload = max_payload
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.raise_errors = raise_errors
        self.reconnect_backoff = reconnect_backoff
        self._token = token
        self._conn: _Conn | None = None
        self._ids = itertools.count(1)
        self._slots = _Slots(max_in_flight)
        self._connecting: asyncio.Lock | None = None
        self._in_flight = 0
        self._retry_at = 0.0
        self._connect_error: PdpError | None = None
        self._closed = False

    @classmethod
    async def connect(cls, host: str, port: int, token: str | None = None, **kwargs: Any) -> AsyncClient:
        """Connect and say HELLO; on failure as :meth:`sark_pdp.Client.connect`."""
        c = cls(host, port, token=token, **kwargs)
        try:
            await c._ensure()
        except PdpError:
            if c.raise_errors:
                raise
        return c

    @property
    def hello(self) -> HelloOk | None:
        """HELLO_OK of the open connection (None: not connected)."""
        c = self._conn
        return c.hello if c is not None and c.error is None else None

    @property
    def connected(self) -> bool:
        """Whether a connection is open (as far as this client knows)."""
        return self.hello is not None

    @property
    def in_flight(self) -> int:
        """Requests sent or waiting to be sent, not yet answered."""
        return self._in_flight

    @property
    def available(self) -> bool:
        """Connected, or free to try connecting (not closed, not backing off)."""
        return self.connected or (not self._closed and time.monotonic() >= self._retry_at)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; later calls fail (code 4003)."""
        self._closed = True
        c, self._conn = self._conn, None
        if c is not None:
            c.fail(PdpConnectionError("the client is closed", CONNECTION_LOST))
            try:
                await c.writer.wait_closed()
            except OSError:
                pass

    # ------------------------------------------------------------ calls

    async def evaluate(self, inp: InputLike) -> Decision:
        """Decide one input (an :class:`~sark_pdp.Input` or a SARK input dict)."""
        res = await self._call(lambda hello: (_wire.EVAL, eval_body(inp, hello.max_payload), 1))
        if isinstance(res, PdpError):
            if self.raise_errors:
                raise res
            return Decision.fail_closed(res)
        return cast(Decision, res)

    async def evaluate_many(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """Decide many inputs, one EVAL each, all at once (``max_in_flight`` on the wire);
        decisions in input order."""
        return list(await asyncio.gather(*(self.evaluate(i) for i in inputs)))

    async def evaluate_batch(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """Decide many inputs in EVAL_BATCH frames (split as :meth:`sark_pdp.Client.evaluate_batch`
        does; the frames go concurrently); decisions in input order."""
        return await self._batches(inputs, self.raise_errors)

    async def ping(self, data: bytes = b"ping") -> bool:
        """Round trip a PING: True when the PONG echoes ``data``."""
        res = await self._call(lambda _: (_wire.PING, data, 1))
        if not isinstance(res, PdpError) and res != data:
            res = PdpProtocolError("PONG does not echo the PING")
        if isinstance(res, PdpError):
            if self.raise_errors:
                raise res
            return False
        return True

    # ------------------------------------------------------------ internals

    async def _batches(self, inputs: Iterable[InputLike], raise_errors: bool) -> list[Decision]:
        """:meth:`evaluate_batch`, raising (the first error in order) only with ``raise_errors``."""
        inputs = list(inputs)
        try:
            hello = (await self._ensure()).hello
        except PdpError as e:
            if raise_errors:
                raise
            return [Decision.fail_closed(e) for _ in inputs]
        reqs = list(batch_requests(inputs, hello.max_payload, min(self.max_batch, hello.max_batch)))
        results = await asyncio.gather(*(self._call(_built(r)) for r in reqs))
        counts = [1 if isinstance(r, PdpError) else r[2] for r in reqs]
        return decisions(list(results), counts, raise_errors)

    async def _call(self, build: Callable[[HelloOk], Request | PdpError]) -> Any:
        """Take an in-flight slot, connect if need be, build the request from the
        HELLO_OK (``build`` may return the error that stops it) and send it; the decoded
        reply or the error."""
        self._in_flight += 1
        try:
            await self._slots.acquire()
            try:
                conn = await self._ensure()
                req = build(conn.hello)
                if isinstance(req, PdpError):
                    return req
                return await conn.request(*req, self.timeout)
            finally:
                self._slots.release()
        except PdpError as e:
            return e
        finally:
            self._in_flight -= 1

    async def _ensure(self) -> _Conn:
        c = self._conn
        if c is not None and c.error is None:
            return c
        if self._closed:
            raise PdpConnectionError("the client is closed", CONNECTION_LOST)
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            c = self._conn
            if c is not None and c.error is None:
                return c
            if time.monotonic() < self._retry_at and self._connect_error is not None:
                raise self._connect_error
            try:
                self._conn = await self._open()
            except PdpError as e:
                self._connect_error = e
                self._retry_at = time.monotonic() + self.reconnect_backoff
                raise
            return self._conn

    async def _open(self) -> _Conn:
        where = f"{self.host}:{self.port}"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.connect_timeout)
        except asyncio.TimeoutError:
            raise PdpTimeout(f"connect to {where}: no answer within {self.connect_timeout} s") from None
        except OSError as e:
            raise PdpConnectionError(f"connect to {where}: {e.strerror or e}", CONNECT_FAILED) from None
        try:
            rid = next(self._ids)
            writer.write(_wire.frame(_wire.HELLO, rid, _wire.encode_hello(self.max_payload, self._token)))
            hello = await asyncio.wait_for(self._read_hello(reader, rid), self.connect_timeout)
        except BaseException as e:
            writer.close()
            if isinstance(e, PdpServerError):
                raise
            if isinstance(e, asyncio.TimeoutError):
                raise PdpTimeout(f"HELLO to {where}: no answer within {self.connect_timeout} s") from None
            if isinstance(e, asyncio.IncompleteReadError):
                raise PdpConnectionError(f"HELLO to {where}: connection closed by the server", CONNECT_FAILED) from None
            if isinstance(e, OSError):
                raise PdpConnectionError(f"HELLO to {where}: {e}", CONNECT_FAILED) from None
            raise
        return _Conn(reader, writer, hello, self._ids)

    async def _read_hello(self, reader: asyncio.StreamReader, rid: int) -> HelloOk:
        header = await reader.readexactly(_wire.HEADER_LEN)
        length, op, got = _wire.parse_header(header, 0, self.max_payload)
        payload = await reader.readexactly(length) if length else b""
        if got != rid:
            raise PdpProtocolError(f"reply to request {got}, which is not in flight")
        res = decode_reply(_wire.HELLO, 1, op, payload)
        if isinstance(res, PdpError):
            raise res
        assert isinstance(res, HelloOk)  # decode_reply answers HELLO with HELLO_OK or an error
        if not 0 < res.max_payload <= self.max_payload or res.max_batch < 1:
            raise PdpProtocolError(f"HELLO_OK with max_payload {res.max_payload} (offered {self.max_payload}), max_batch {res.max_batch}")
        return res


def _built(req: Request | PdpError) -> Callable[[HelloOk], Request | PdpError]:
    """A request already built, as :meth:`AsyncClient._call` takes it."""
    return lambda _: req


class AsyncPool:
    """``size`` :class:`AsyncClient` connections; each call goes to the available one
    with the fewest requests in flight (in turn on a tie). A connection that failed is
    tried again once its backoff is over; calls meanwhile go to the others."""

    def __init__(self, host: str, port: int, size: int = 4, **kwargs: Any) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.clients = [AsyncClient(host, port, **kwargs) for _ in range(size)]
        self.raise_errors: bool = self.clients[0].raise_errors
        self._turn = 0

    @classmethod
    async def connect(cls, host: str, port: int, size: int = 4, token: str | None = None, **kwargs: Any) -> AsyncPool:
        """A pool with every connection opened now (failures as :meth:`AsyncClient.connect`)."""
        pool = cls(host, port, size, token=token, **kwargs)
        results = await asyncio.gather(*(c._ensure() for c in pool.clients), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and pool.raise_errors:
            await pool.close()
            raise errors[0]
        return pool

    async def __aenter__(self) -> AsyncPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _pick(self) -> AsyncClient:
        n = len(self.clients)
        start = self._turn
        self._turn = (start + 1) % n
        best = self.clients[start]
        best_key = (not best.available, best.in_flight)
        for k in range(1, n):
            c = self.clients[(start + k) % n]
            key = (not c.available, c.in_flight)
            if key < best_key:
                best, best_key = c, key
        return best

    async def evaluate(self, inp: InputLike) -> Decision:
        """As :meth:`AsyncClient.evaluate`, on the least busy connection."""
        return await self._pick().evaluate(inp)

    async def evaluate_many(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """As :meth:`AsyncClient.evaluate_many`, each input on the least busy connection."""
        return list(await asyncio.gather(*(self.evaluate(i) for i in inputs)))

    async def evaluate_batch(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """As :meth:`AsyncClient.evaluate_batch`, slices of ``max_batch`` inputs spread
        over the connections."""
        inputs = list(inputs)
        step = self.clients[0].max_batch
        parts = await asyncio.gather(*(self._pick().evaluate_batch(inputs[i : i + step]) for i in range(0, len(inputs), step)))
        return [d for part in parts for d in part]

    async def ping(self) -> bool:
        """As :meth:`AsyncClient.ping`, on the least busy connection."""
        return await self._pick().ping()

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(c.close() for c in self.clients))


class _AsyncShardClient(AsyncClient):
    """An :class:`AsyncClient` on one shard's own port: every HELLO_OK (each reconnect
    too) must say it is shard ``shard`` of ``shards``, else the connect fails (4004)."""

    def __init__(self, host: str, port: int, shard: int, shards: int, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.shard = shard
        self.shards = shards

    async def _open(self) -> _Conn:
        conn = await super()._open()
        hello = conn.hello
        if (hello.shard, hello.shards) != (self.shard, self.shards):
            e = PdpProtocolError(
                f"{self.host}:{self.port}, announced as shard {self.shard} of {self.shards}'s own port, "
                f"answered as shard {hello.shard} of {hello.shards}"
            )
            conn.fail(e)
            raise e
        return conn


class AsyncRouter:
    """Key-affine routing as :class:`sark_pdp.Router` does it, with one
    :class:`AsyncClient` per shard: each question goes to the shard that owns it, a batch
    is split by owner and every part is in flight at once. Any number of coroutines may
    call it. Fails closed like :class:`AsyncClient`; keywords as for it."""

    def __init__(self, host: str, port: int, **kwargs: Any) -> None:
        self.host = host
        self.port = port
        self._kwargs = kwargs
        self._first = AsyncClient(host, port, **kwargs)
        self.raise_errors: bool = self._first.raise_errors
        #: HELLO_OK of ``host:port`` (None until the first HELLO).
        self.hello: HelloOk | None = None
        #: The connections questions go over: shard i's at index i when routing, else
        #: the one to ``host:port`` (empty until the first HELLO).
        self.clients: list[AsyncClient] = []
        self._laying_out: asyncio.Lock | None = None
        self._closed = False

    @classmethod
    async def connect(cls, host: str, port: int, token: str | None = None, **kwargs: Any) -> AsyncRouter:
        """Say HELLO and connect to every shard now; failures as :meth:`sark_pdp.Router.connect`."""
        r = cls(host, port, token=token, **kwargs)
        try:
            clients = await r._layout()
        except PdpError:
            if r.raise_errors:
                raise
            return r
        results = await asyncio.gather(*(c._ensure() for c in clients), return_exceptions=True)
        errors = [e for e in results if isinstance(e, BaseException)]
        if errors and r.raise_errors:
            await r.close()
            raise errors[0]
        return r

    @property
    def routing(self) -> bool:
        """Whether questions go to their owners (False: all over one connection)."""
        return len(self.clients) > 1

    async def __aenter__(self) -> AsyncRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; later calls fail (code 4003)."""
        self._closed = True
        await asyncio.gather(self._first.close(), *(c.close() for c in self.clients))

    async def _layout(self) -> list[AsyncClient]:
        """The connections (see ``clients``), reading the layout first if need be."""
        if self.clients:
            return self.clients
        if self._closed:
            raise PdpConnectionError("the router is closed", CONNECTION_LOST)
        if self._laying_out is None:
            self._laying_out = asyncio.Lock()
        async with self._laying_out:
            if self.clients:
                return self.clients
            first = self._first
            conn = await first._ensure()
            hello = conn.hello
            if _route.routes(hello):
                peer = conn.writer.get_extra_info("peername")
                host = peer[0] if isinstance(peer, tuple) and peer else self.host
                self.clients = [_AsyncShardClient(host, p, i, hello.shards, **self._kwargs) for i, p in enumerate(hello.shard_ports)]
                await first.close()
            else:
                self.clients = [first]
            self.hello = hello
            return self.clients

    async def evaluate(self, inp: InputLike) -> Decision:
        """As :meth:`AsyncClient.evaluate`, on the owner's connection."""
        try:
            clients = await self._layout()
        except PdpError as e:
            return _route.all_failed(e, 1, self.raise_errors)[0]
        if len(clients) == 1:
            return await clients[0].evaluate(inp)
        inp = _route.prepared(inp)
        return await clients[_route.owner_of(inp, len(clients))].evaluate(inp)

    async def evaluate_many(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """As :meth:`AsyncClient.evaluate_many`, each input on its owner's connection."""
        return list(await asyncio.gather(*(self.evaluate(i) for i in inputs)))

    async def evaluate_batch(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """As :meth:`AsyncClient.evaluate_batch`: the inputs split by owner, each part
        to its owner, all at once; decisions in input order."""
        inputs = list(inputs)
        try:
            clients = await self._layout()
        except PdpError as e:
            return _route.all_failed(e, len(inputs), self.raise_errors)
        if len(clients) == 1:
            return await clients[0].evaluate_batch(inputs)
        at, groups = _route.split(inputs, len(clients))
        parts = await asyncio.gather(*(c._batches(g, False) for c, g in zip(clients, groups) if g))
        at = [a for a in at if a]
        return _route.merge(at, parts, self.raise_errors)

    async def ping(self, data: bytes = b"ping") -> bool:
        """:meth:`AsyncClient.ping` on every connection: True when all answer."""
        try:
            clients = await self._layout()
        except PdpError:
            if self.raise_errors:
                raise
            return False
        return all(await asyncio.gather(*(c.ping(data) for c in clients)))
