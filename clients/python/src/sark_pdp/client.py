"""The blocking client (one socket) and a thread-safe pool of them."""

from __future__ import annotations

import queue
import select
import socket
import time
from collections.abc import Iterable
from typing import Any

from . import _wire
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
            max_payload = self._ensure().max_payload
        except PdpError as e:
            return self._all_failed(e, inputs)
        reqs = (eval_request(i, max_payload) for i in inputs)
        results, counts = self._exchange(reqs, depth)
        return decisions(results, counts, self.raise_errors)

    def evaluate_batch(self, inputs: Iterable[InputLike]) -> list[Decision]:
        """Decide many inputs in EVAL_BATCH frames (split to fit the server's max_batch,
        ``max_batch`` and max_payload; the frames are pipelined); decisions in order."""
        try:
            hello = self._ensure()
        except PdpError as e:
            return self._all_failed(e, inputs)
        reqs = batch_requests(inputs, hello.max_payload, min(self.max_batch, hello.max_batch))
        results, counts = self._exchange(reqs, 16)
        return decisions(results, counts, self.raise_errors)

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
        timeout = self.timeout if timeout is None else timeout
        results: list[Any] = []
        counts: list[int] = []
        pending: dict[int, tuple[int, int, int, float]] = {}  # id: index, opcode, items, deadline
        out = bytearray()
        it = iter(reqs)
        more = True
        sock = self._sock
        try:
            if sock is None:
                raise PdpConnectionError("not connected", CONNECTION_LOST)
            while True:
                while more and len(pending) < depth:
                    req = next(it, None)
                    if req is None:
                        more = False
                        break
                    if isinstance(req, PdpError):
                        results.append(req)
                        counts.append(1)
                        continue
                    op, body, n = req
                    rid = self._next_id
                    self._next_id += 1
                    out += _wire.frame(op, rid, body)
                    pending[rid] = (len(results), op, n, time.monotonic() + timeout)
                    results.append(None)
                    counts.append(n)
                if out:
                    try:
                        del out[: sock.send(out)]
                    except BlockingIOError:
                        pass
                if not pending:
                    break
                wait = next(iter(pending.values()))[3] - time.monotonic()
                if wait <= 0:
                    raise PdpTimeout(f"no reply within {timeout} s")
                if not _wait(sock, bool(out), wait):
                    continue
                try:
                    data = sock.recv(256 * 1024)
                except BlockingIOError:
                    continue
                if not data:
                    raise PdpConnectionError("connection closed by the server", CONNECTION_LOST)
                for op, rid, payload in self._frames.feed(data):
                    entry, result = match(pending, op, rid, payload)
                    results[entry[0]] = result
                    del pending[rid]
        except (PdpError, OSError) as exc:
            e = exc if isinstance(exc, PdpError) else PdpConnectionError(f"connection failed: {exc}", CONNECTION_LOST)
            self._drop()
            for index, _, _, _ in pending.values():
                results[index] = e
            for req in it:
                results.append(req if isinstance(req, PdpError) else e)
                counts.append(1 if isinstance(req, PdpError) else req[2])
        return results, counts


def _wait(sock: socket.socket, write: bool, timeout: float) -> bool:
    """Wait up to ``timeout`` s until ``sock`` is readable (or, with ``write``, writable);
    whether it is readable (an error or hang-up counts: the recv that follows reports
    it). poll(2) where there is one (no FD_SETSIZE limit), select(2) elsewhere."""
    if hasattr(select, "poll"):
        p = select.poll()
        p.register(sock, select.POLLIN | (select.POLLOUT if write else 0))
        events = p.poll(timeout * 1000)
        return bool(events and events[0][1] & (select.POLLIN | select.POLLERR | select.POLLHUP))
    r, _, _ = select.select([sock], [sock] if write else [], [], timeout)
    return bool(r)


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
