"""Test support: the real ``sark-pdp serve`` (binary from ``SARK_PDP_BIN``, default
``target/debug/sark-pdp``) on a free port, ``sark-pdp eval`` for reference decisions, and
fake servers speaking (or breaking) the protocol from a thread."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("SARK_PDP_BIN", ROOT / "target" / "debug" / "sark-pdp"))
SAMPLES = ROOT / "shard" / "samples"
TOKEN = "caller-token-0123456789"


class Server:
    """One ``sark-pdp serve`` child on 127.0.0.1 (port 0 unless ``port`` is given), HTTP
    off, ``shards`` shards (one unless given), audit log in a temporary directory; the
    binary port is read from the line it prints on stdout: ``sark-pdp: listening on
    127.0.0.1:PORT (binary)[ and ports P0,P1,... (binary, one per shard)]; ...``, and
    the shards' own ports (``shard_ports``) from it too."""

    def __init__(self, *args: str, port: int = 0, shards: int = 1) -> None:
        if not BIN.is_file():
            pytest.fail(f"no sark-pdp binary at {BIN} (build it with `cargo build -p shard --locked` or set SARK_PDP_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="sark-pdp-pyclient-"))
        self.stdout = open(self.dir / "stdout", "w+b")
        self.stderr = open(self.dir / "stderr", "w+b")
        cmd = [str(BIN), "serve", "--listen", f"127.0.0.1:{port}", "--http-listen", "off", "--shards", str(shards),
               "--audit-ring", "4096", "--audit-dir", str(self.dir / "audit"), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.stdout, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.port, self.shard_ports = self._wait_port()

    def _wait_port(self) -> tuple[int, tuple[int, ...]]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+) \(binary\)(?: and ports ([\d,]+) \(binary, one per shard\))?", (self.dir / "stdout").read_bytes())
            if m:
                return int(m.group(1)), tuple(int(p) for p in m.group(2).split(b",")) if m.group(2) else ()
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        pytest.fail(f"sark-pdp serve did not say where it listens: {self.output()}")

    def output(self) -> str:
        return ((self.dir / "stdout").read_bytes() + (self.dir / "stderr").read_bytes()).decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL and wait (nothing is flushed: a crash)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM, wait, clean up; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stdout.close()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode


@contextlib.contextmanager
def running(*args: str, port: int = 0, shards: int = 1) -> Iterator[Server]:
    """A server for the duration of a ``with``; it must exit 0 on SIGTERM unless killed."""
    s = Server(*args, port=port, shards=shards)
    try:
        yield s
    finally:
        killed = s.proc.poll() is not None
        out = s.output()
        status = s.stop()
        assert killed or status == 0, f"sark-pdp serve exited {status}: {out}"


def sample(name: str = "invoke-medium") -> dict[str, Any]:
    """A document of shard/samples/."""
    return json.loads((SAMPLES / f"{name}.json").read_text())


def present(doc: dict[str, Any], user: str | None = None) -> dict[str, Any]:
    """A copy of ``doc`` about the present (no ``context.now_ns``, so the server caches
    it), for user ``user`` if given."""
    doc = copy.deepcopy(doc)
    doc.get("context", {}).pop("now_ns", None)
    if user is not None:
        doc["user"]["id"] = user
    return doc


def eval_cli(doc: Any) -> dict[str, Any]:
    """``sark-pdp eval`` on a document: the decision JSON it prints."""
    proc = subprocess.run([str(BIN), "eval"], input=json.dumps(doc), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"sark-pdp eval exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- fake servers

HEADER = struct.Struct("<IBBHQ")


def read_frame(conn: socket.socket) -> tuple[int, int, bytes] | None:
    """(opcode, request id, payload) of the next frame, None at end of stream."""
    head = _read_exactly(conn, 16)
    if head is None:
        return None
    length, _, op, _, rid = HEADER.unpack(head)
    payload = _read_exactly(conn, length) if length else b""
    return None if payload is None else (op, rid, payload)


def _read_exactly(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def frame(op: int, rid: int, payload: bytes, version: int = 1) -> bytes:
    return HEADER.pack(len(payload), version, op, 0, rid) + payload


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def hello_ok(rid: int, max_payload: int = 1 << 20, max_batch: int = 4096, shards: int = 1, shard: int = 0, route: int = 0, ports: tuple[int, ...] = ()) -> bytes:
    """A HELLO_OK frame, hand-written from PROTOCOL.md."""
    return frame(0x81, rid, hello_ok_body(max_payload, max_batch, shards, shard, route, ports))


def hello_ok_body(max_payload: int = 1 << 20, max_batch: int = 4096, shards: int = 1, shard: int = 0, route: int = 0, ports: tuple[int, ...] = ()) -> bytes:
    """A HELLO_OK payload: version, max_payload, max_batch, shards, shard, bundle revision,
    driver, route, u16 n + n shard ports."""
    head = struct.pack("<BIIHH", 1, max_payload, max_batch, shards, shard) + string("fake-1") + string("epoll")
    return head + struct.pack(f"<BH{len(ports)}H", route, len(ports), *ports)


def decision(allow: bool, ttl: int = 0, decision_id: int = 1, error_code: int = 0, reasons: tuple[str, ...] = ("r",), params: str | None = None) -> bytes:
    """A DECISION body, hand-written from PROTOCOL.md."""
    body = struct.pack("<BI", int(allow), ttl) + decision_id.to_bytes(16, "little") + struct.pack("<HI", error_code, len(reasons))
    for r in reasons:
        body += struct.pack("<H", error_code) + string(r)
    return body + (b"\x00" if params is None else b"\x01" + string(params))


class FakeServer:
    """A TCP server on 127.0.0.1 running ``handler(conn)`` on a thread per connection
    (counted in ``connections``); an exception in a handler fails the test at close."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        except BaseException as e:  # reported by close()
            self.errors.append(e)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self._open:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        assert not self.errors, self.errors


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mixed(n: int, tag: str = "mix", small: bool = False) -> tuple[list[dict[str, Any]], list[bool]]:
    """``n`` documents about the present, every third one denied and the others allowed,
    so that decisions out of place show; and whether each is allowed. Two distinct inputs
    per ``tag`` (after two misses, cache hits): the samples (a viewer on a critical tool
    is denied), or with ``small`` two ~60-byte ones (policy:read and policy:create)."""
    if small:
        allow = {"user": {"id": f"{tag}-ok", "roles": ["developer"]}, "action": "policy:read"}
        deny = {"user": {"id": f"{tag}-no", "roles": ["viewer"]}, "action": "policy:create"}
    else:
        allow = present(sample("invoke-medium"), f"{tag}-ok")
        deny = present(sample("invoke-critical-viewer"), f"{tag}-no")
    docs = [deny if i % 3 == 0 else allow for i in range(n)]
    return docs, [i % 3 != 0 for i in range(n)]


def user_of(payload: bytes) -> str:
    """The user id of an EVAL payload (its first field)."""
    (n,) = struct.unpack_from("<I", payload)
    return payload[4 : 4 + n].decode()
