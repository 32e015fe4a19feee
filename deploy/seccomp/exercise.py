#!/usr/bin/env python3
"""Start `sark-pdp serve` behind a wrapper (strace, the seccomp launcher, runc), drive every
kind of traffic at it, reload it, stop it, and say whether it behaved.

    exercise.py [--mode MODE] [--expect-driver io_uring|epoll] [--bench PDP_BENCH]
                [--bin SARK_PDP] [--extra ARG]... -- WRAPPER... SARK_PDP serve [ARGS]

The command after `--` is run as given, with these added to it: every listener on
127.0.0.1:0, `--audit-dir` unless `--no-audit-dir` (the caller then passes its own), and
the mode's flags. The tokens go in the environment (SARK_PDP_CALLER_TOKEN,
SARK_PDP_ADMIN_TOKEN). The traffic:

  - binary protocol, with pdp-bench when given: PING, cache hits, misses, the seed mix,
    batches of 16, and HTTP keep-alive to the data API; a connection held open across the
    SIGTERM drain;
  - HTTP: /health, /health/live, /health/ready, /health?bundles, /metrics, the OPA data
    API, AuthZEN, a 401 and a 404;
  - admin API: reload, invalidate, a data write (PUT);
  - `sark-pdp reload` (a client; it runs outside the wrapper);
  - SIGHUP (bundle reload), then SIGTERM: exit status 0 and "stopped; N audit records".

Modes (what else is started and configured):
  basic    only the above
  clients  the server as a client too: a bundle directory with --watch, a bundle server
           polled (--bundle-url), a Splunk HEC sink, Redis (--cluster-redis) when
           redis-server is installed, all under host names resolved through DNS when
           --dns-port is given (a stub resolver on 127.0.0.1 that answers 127.0.0.1:
           the wrapper must point /etc/resolv.conf at it, see derive.sh)
  tls      TLS on every listener (a throwaway self-signed certificate, openssl needed)

Signals go to the server itself, found below the wrapper by its executable's name.
Exit status 0 when everything answered as expected; one line per finding otherwise.
"""
import argparse
import http.client
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

CALLER = "deploy-check-caller-token-0123"
ADMIN = "deploy-check-admin-token-01234"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

failures = []


def fail(msg):
    failures.append(msg)
    print(f"exercise: FAILED: {msg}", flush=True)


T0 = time.time()


def note(msg):
    print(f"exercise: [{time.time() - T0:5.1f} s] {msg}", flush=True)


# --- helpers the clients mode serves from ------------------------------------------------

class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def serve_http(handler):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def bundle_server(tar_bytes):
    class H(Quiet):
        def do_GET(self):
            if self.headers.get("if-none-match") == '"deploy-check-1"':
                self.send_response(304)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/gzip")
            self.send_header("etag", '"deploy-check-1"')
            self.send_header("content-length", str(len(tar_bytes)))
            self.end_headers()
            self.wfile.write(tar_bytes)
    return serve_http(H)


def hec_server(counter):
    class H(Quiet):
        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            self.rfile.read(n)
            counter[0] += 1
            body = b'{"text":"Success","code":0}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    return serve_http(H)


def dns_stub(port, counter):
    """Answers every A question with 127.0.0.1, every other with no records."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))

    def run():
        while True:
            try:
                q, peer = s.recvfrom(4096)
            except OSError:
                return
            if len(q) < 12:
                continue
            qid = q[:2]
            # The question: labels to the zero byte, then type and class.
            i = 12
            while i < len(q) and q[i] != 0:
                i += 1 + q[i]
            qend = i + 5
            question = q[12:qend]
            qtype = struct.unpack("!H", q[i + 1:i + 3])[0] if qend <= len(q) else 0
            counter[0] += 1
            if qtype == 1:
                answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
                head = qid + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0)
            else:
                answer = b""
                head = qid + b"\x81\x80" + struct.pack("!HHHH", 1, 0, 0, 0)
            s.sendto(head + question + answer, peer)
    threading.Thread(target=run, daemon=True).start()
    return s


# --- the server's process -----------------------------------------------------------------

class Server:
    def __init__(self, argv, env, exe_name):
        self.exe_name = exe_name
        self.lines = []
        self.cond = threading.Condition()
        # stdout and stderr apart: the server's stderr lines are not written in one piece,
        # so in one pipe a stdout line can land in the middle of one.
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, pipe):
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_line(self, pattern, timeout, start=0):
        rx = re.compile(pattern)
        end = time.time() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if rx.search(line):
                        return line
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    for line in self.lines[start:]:
                        if rx.search(line):
                            return line
                    return None
                self.cond.wait(min(left, 0.2))

    def server_pid(self):
        """The sark-pdp process: the wrapper itself once it has exec'd, or a descendant."""
        todo = [self.proc.pid]
        seen = set()
        while todo:
            pid = todo.pop(0)
            if pid in seen:
                continue
            seen.add(pid)
            try:
                exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            except OSError:
                exe = ""
            if exe == self.exe_name:
                return pid
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return None


def http_call(addr, method, path, body=None, token=None, tls=False, timeout=10):
    host, port = addr.rsplit(":", 1)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
    else:
        c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["content-type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out


def expect(what, got, want):
    if got != want:
        fail(f"{what}: {got}, expected {want}")
        return False
    return True


def make_tls(dirname):
    key, crt = os.path.join(dirname, "pdp.key"), os.path.join(dirname, "pdp.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["basic", "clients", "tls"], default="basic")
    ap.add_argument("--expect-driver", choices=["io_uring", "epoll"])
    ap.add_argument("--bench", help="pdp-bench, for the binary protocol's load")
    ap.add_argument("--bin", help="sark-pdp as run outside the wrapper, for `sark-pdp reload`")
    ap.add_argument("--exe-name", default="sark-pdp", help="the server's executable name, to find its pid")
    ap.add_argument("--dns-port", type=int, help="clients mode: answer DNS on 127.0.0.1:PORT")
    ap.add_argument("--postgres-port", type=int, help="clients mode: a PostgreSQL sink to 127.0.0.1:PORT (user postgres, trust)")
    ap.add_argument("--ext-authz", action="store_true", help="also open --ext-authz-listen (HTTP/2 preface and SETTINGS only)")
    ap.add_argument("--expect-confined", action="store_true", help="the server must run with a seccomp filter, no_new_privs and no effective capability")
    ap.add_argument("--expect-uid", type=int, help="the server's uid")
    ap.add_argument("--expect-pinned", action="store_true", help="shard N's thread must be pinned to CPU N")
    ap.add_argument("--light", action="store_true", help="fewer bundle reloads: no admin reload and no `sark-pdp reload` (the data write and SIGHUP stay)")
    ap.add_argument("--no-audit-dir", action="store_true", help="the command names its own --audit-dir")
    ap.add_argument("--workdir", help="where the audit log and helpers' files go (default: a temporary folder)")
    ap.add_argument("--requests", type=int, default=3000, help="requests per pdp-bench run")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no server command after --")

    work = a.workdir or tempfile.mkdtemp(prefix="sark-pdp-exercise-")
    os.makedirs(work, exist_ok=True)
    args = list(cmd) + ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    if not a.no_audit_dir:
        args += ["--audit-dir", os.path.join(work, "audit")]
    helpers = []
    hec_count, dns_count = [0], [0]
    tls = a.mode == "tls"
    redis = None
    # The audit log rotates, retention deletes, and a torn tail is cut on start.
    audit_dir = os.path.join(work, "audit")
    if not a.no_audit_dir:
        os.makedirs(audit_dir, exist_ok=True)
        with open(os.path.join(audit_dir, os.environ.get("EXERCISE_TORN_NAME", "audit-00000000000000000001.jsonl")), "wb") as f:
            f.write(b'{"seq":1,"torn')
    cfg = os.path.join(work, "exercise.toml")
    with open(cfg, "w") as f:
        f.write("[audit]\nsegment_bytes = 65536\nretention_bytes = 1048576\n")
    args += ["--config", cfg]
    if a.ext_authz:
        args += ["--ext-authz-listen", "127.0.0.1:0"]
    if a.mode == "clients":
        host = "pdp-deploy-check.test" if a.dns_port else "127.0.0.1"
        if a.dns_port:
            helpers.append(dns_stub(a.dns_port, dns_count))
        bdir = os.path.join(work, "bundle")
        shutil.rmtree(bdir, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "policies"), bdir)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            t.add(os.path.join(ROOT, "policies"), arcname=".")
        bsrv = bundle_server(buf.getvalue())
        hsrv = hec_server(hec_count)
        helpers += [bsrv, hsrv]
        with open(cfg, "a") as f:
            f.write(f'[sinks.splunk]\nurl = "http://{host}:{hsrv.server_address[1]}"\ntoken = "deploy-check-hec"\nbatch = 10\nmax_wait_s = 1\n')
            if a.postgres_port:
                f.write(f'[sinks.postgres]\nurl = "postgresql://postgres@{host}:{a.postgres_port}/postgres"\nbatch = 100\nmax_wait_s = 1\n')
        args += ["--bundle", bdir, "--watch",
                 "--bundle-url", f"http://{host}:{bsrv.server_address[1]}/bundle.tar.gz", "--bundle-poll-s", "1"]
        if shutil.which("redis-server"):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                rport = s.getsockname()[1]
            redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(50):
                try:
                    socket.create_connection(("127.0.0.1", rport), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            args += ["--cluster-redis", f"redis://{host}:{rport}", "--node-id", "deploy-check"]
        else:
            note("redis-server not installed: --cluster-redis not exercised")
    if tls:
        crt, key = make_tls(work)
        args += ["--tls-cert", crt, "--tls-key", key]

    env = dict(os.environ, SARK_PDP_CALLER_TOKEN=CALLER, SARK_PDP_ADMIN_TOKEN=ADMIN)
    srv = Server(args, env, a.exe_name)
    try:
        run(a, srv, tls, hec_count, dns_count)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        if redis:
            redis.terminate()
            redis.wait()
        for h in helpers:
            if isinstance(h, socket.socket):
                h.close()
            else:
                h.shutdown()
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"exercise: {len(failures)} failure(s)", flush=True)
        for line in srv.lines[-40:]:
            print(f"  server| {line}", flush=True)
        sys.exit(1)
    note("ok")


def run(a, srv, tls, hec_count, dns_count):
    ready = srv.wait_line(r"listening on", 60)
    if not ready:
        fail("the server never said 'listening on'")
        return
    addrs = dict((name, addr) for addr, name in re.findall(r"(\d+\.\d+\.\d+\.\d+:\d+) \(([^)]+)\)", ready))
    note(ready)
    binary, web, admin = addrs.get("binary"), addrs.get("HTTP"), addrs.get("admin")
    if not (binary and web and admin):
        fail(f"listeners not all announced: {addrs}")
        return
    # Each shard names its driver once its runtime is up, after the ready line.
    m = re.search(r"(\d+) shards", ready)
    nshards = int(m.group(1)) if m else 1
    drivers = {}
    end = time.time() + 15
    while time.time() < end and len(drivers) < nshards:
        for line in list(srv.lines):
            m = re.search(r"shard (\d+) (?:on CPU \d+|not pinned[^,]*), (\S+) driver", line)
            if m:
                drivers[m.group(1)] = m.group(2)
        if len(drivers) < nshards:
            time.sleep(0.1)
    drivers = set(drivers.values())
    note(f"drivers: {sorted(drivers)}")
    if a.expect_driver and drivers != {a.expect_driver}:
        fail(f"shard drivers {sorted(drivers)}, expected {a.expect_driver}")
    if not a.no_audit_dir and not srv.wait_line(r"cut a torn tail", 1):
        fail("the torn tail planted in the audit log was not cut")
    ext = addrs.get("ext_authz") or addrs.get("ext-authz") or next((v for k, v in addrs.items() if "authz" in k.lower()), None)
    if a.ext_authz:
        if not ext:
            fail(f"--ext-authz-listen given, but no ext_authz listener announced: {addrs}")
        else:
            for _ in range(4):
                grpc_check(ext, CALLER, tls)
            code = grpc_check(ext, CALLER, tls)
            if code is None:
                fail("ext_authz: no CheckResponse to a Check")
            else:
                note(f"ext_authz: Check answered, status code {code}")
                if code not in (0, 7):
                    fail(f"ext_authz: status code {code}, expected OK (0) or PERMISSION_DENIED (7)")
    pid = srv.server_pid()
    if not pid:
        fail("cannot find the server's pid below the wrapper")
        return

    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    note(f"server pid {pid}: Uid {status.get('Uid', '?').split()[0]}, Seccomp {status.get('Seccomp')}, "
         f"NoNewPrivs {status.get('NoNewPrivs')}, CapEff {status.get('CapEff')}")
    if a.expect_confined:
        expect("Seccomp (2: a filter)", status.get("Seccomp"), "2")
        expect("NoNewPrivs", status.get("NoNewPrivs"), "1")
        expect("CapEff", status.get("CapEff"), "0000000000000000")
    if a.expect_uid is not None:
        expect("Uid", status.get("Uid", "").split()[0], str(a.expect_uid))
    if a.expect_pinned:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                cpus = [l.split(":\t")[1].strip() for l in open(f"/proc/{pid}/task/{tid}/status") if l.startswith("Cpus_allowed_list")][0]
            except OSError:
                continue
            m = re.fullmatch(r"shard-(\d+)", comm)
            if m:
                expect(f"{comm}'s CPUs", cpus, m.group(1))
    audit_line = next((l for l in srv.lines if "audit log" in l and "durability" in l), "")
    if a.expect_driver == "io_uring" and "io_uring" not in audit_line:
        fail(f"the audit writer does not use io_uring: {audit_line}")
    if a.expect_driver == "epoll" and "io_uring" in audit_line:
        fail(f"the audit writer uses io_uring although it should be refused: {audit_line}")

    # HTTP.
    expect("GET /health", http_call(web, "GET", "/health", tls=tls)[0], 200)
    expect("GET /health/live", http_call(web, "GET", "/health/live", tls=tls)[0], 200)
    expect("GET /health/ready", http_call(web, "GET", "/health/ready", tls=tls)[0], 200)
    expect("GET /health?bundles", http_call(web, "GET", "/health?bundles", tls=tls)[0], 200)
    expect("GET /metrics without a token", http_call(web, "GET", "/metrics", tls=tls)[0], 401)
    st, body = http_call(web, "GET", "/metrics", token=CALLER, tls=tls)
    if expect("GET /metrics", st, 200) and b"sark_pdp_shard_info" not in body:
        fail("/metrics has no sark_pdp_shard_info")
    with open(os.path.join(ROOT, "shard", "samples", "invoke-medium.json")) as f:
        sample = json.load(f)
    for i in range(20):
        sample["user"]["id"] = f"deploy-check-{i}"
        st, body = http_call(web, "POST", "/v1/data/sark/decision", {"input": sample}, token=CALLER, tls=tls)
        if not expect("POST /v1/data/sark/decision", st, 200):
            break
    authzen = {"subject": {"type": "user", "id": "alice", "properties": {"roles": ["developer"]}},
               "action": {"name": "tool:invoke"}, "resource": {"type": "tool", "id": "update_ticket"}}
    expect("POST /access/v1/evaluation", http_call(web, "POST", "/access/v1/evaluation", authzen, token=CALLER, tls=tls)[0], 200)
    expect("GET /no/such/path", http_call(web, "GET", "/no/such/path", token=CALLER, tls=tls)[0], 404)

    note("HTTP done")
    # The binary protocol.
    if a.bench and not tls:
        runs = [["--scenario", "ping"], ["--scenario", "hit"], ["--scenario", "miss"], ["--scenario", "seed-mix"],
                ["--scenario", "seed-mix", "--batch", "16"],
                ["--scenario", "hit", "--transport", "http", "--addr", web]]
        for r in runs:
            # A batch's frame carries 16 decisions: as many decisions as the other runs.
            n = max(8, a.requests // 16) if "--batch" in r else a.requests
            argv = [a.bench, "closed", "--addr", binary, "--token", CALLER, "--connections", "2", "--depth", "8",
                    "--warmup", "0", "--duration", "10", "--requests", str(n)] + r
            if "--transport" in r:
                argv.remove("--addr")
                argv.remove(binary)
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if p.returncode != 0:
                fail(f"pdp-bench {' '.join(r)}: exit {p.returncode}: {p.stdout.decode(errors='replace')[-400:]}")
    elif not tls:
        note("no pdp-bench: the binary protocol gets a PING only")
    if not tls:
        # A HELLO and a PING by hand, so that the binary protocol is spoken even without
        # pdp-bench.
        s = socket.create_connection(tuple_addr(binary), 5)
        tok = CALLER.encode()
        hello = struct.pack("<BIB", 1, 1 << 20, 1) + struct.pack("<I", len(tok)) + tok
        s.sendall(struct.pack("<IBBHQ", len(hello), 1, 0x01, 0, 1) + hello)
        head = recv_exact(s, 16)
        n, _, op = struct.unpack("<IBB", head[:6])
        recv_exact(s, n)
        expect("HELLO's answer", op, 0x81)
        s.sendall(struct.pack("<IBBHQ", 4, 1, 0x05, 0, 2) + b"ping")
        head = recv_exact(s, 16)
        n, _, op = struct.unpack("<IBB", head[:6])
        expect("PING's answer", (op, recv_exact(s, n)), (0x85, b"ping"))
        s.close()

    note("binary protocol done")
    # The admin API and the CLI's reload.
    if not a.light:
        st, body = http_call(admin, "POST", "/v1/admin/reload", token=ADMIN, tls=tls, timeout=60)
        expect("POST /v1/admin/reload", st, 200)
    expect("POST /v1/admin/invalidate", http_call(admin, "POST", "/v1/admin/invalidate", {"all": True}, token=ADMIN, tls=tls)[0], 200)
    expect("PUT /v1/data/deploy_check", http_call(admin, "PUT", "/v1/data/deploy_check", {"ok": True}, token=ADMIN, tls=tls, timeout=60)[0], 204)
    expect("POST /v1/admin/reload without the token", http_call(admin, "POST", "/v1/admin/reload", tls=tls)[0], 401)
    if a.bin and not tls and not a.light:
        p = subprocess.run([a.bin, "reload", "--admin", admin], env=dict(os.environ, SARK_PDP_ADMIN_TOKEN=ADMIN),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        expect("sark-pdp reload", p.returncode, 0)

    if a.mode == "clients":
        # The sink ships, the poller has polled (and the watcher looked) by now or soon.
        end = time.time() + 15
        while time.time() < end and hec_count[0] == 0:
            time.sleep(0.2)
        if hec_count[0] == 0:
            fail("the Splunk sink shipped nothing")
        else:
            note(f"Splunk sink: {hec_count[0]} batch(es) received")
        if a.dns_port:
            if dns_count[0] == 0:
                fail("no DNS question reached the stub resolver")
            else:
                note(f"DNS stub: {dns_count[0]} question(s)")
        # A file changed in the watched bundle directory: a reload.
        mark = len(srv.lines)
        bundle_dir = None
        for i, arg in enumerate(srv.proc.args):
            if arg == "--bundle":
                bundle_dir = srv.proc.args[i + 1]
        if bundle_dir:
            with open(os.path.join(bundle_dir, "data.json")) as f:
                data = f.read()
            with open(os.path.join(bundle_dir, "data.json"), "w") as f:
                f.write(data + "\n")
            time.sleep(3)
            note(f"after touching the watched bundle: {[l for l in srv.lines[mark:] if 'bundle' in l][-2:]}")

    note("admin API done")
    # SIGHUP: the bundle is reloaded.
    mark = len(srv.lines)
    os.kill(pid, signal.SIGHUP)
    if not srv.wait_line(r"SIGHUP: bundle", 60, start=mark):
        fail("no 'SIGHUP: bundle' line after SIGHUP")

    note("SIGHUP done")
    # SIGTERM with a connection open: the drain, then exit 0.
    held = None
    if not tls:
        held = socket.create_connection(tuple_addr(binary), 5)
    os.kill(pid, signal.SIGTERM)
    try:
        rc = srv.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        fail("the server did not stop within 60 s of SIGTERM")
        return
    if held:
        held.close()
    srv.wait_line(r"stopped;", 2)
    stopped = [l for l in srv.lines if "stopped;" in l]
    expect("exit status after SIGTERM", rc, 0)
    if not stopped:
        fail("no 'stopped; N audit records' line")
    else:
        note(stopped[-1])
    bad = [l for l in srv.lines if re.search(r"panick|failed|Operation not permitted|Bad system call", l)]
    if bad:
        fail(f"the server said: {bad[:3]}")


def hpack_literal(name, value):
    """A header as HPACK's literal without indexing, new name, no Huffman."""
    def n(x):  # a 7-bit-prefix integer (the lengths here fit in one byte or two)
        return bytes([x]) if x < 127 else bytes([127, x - 127])
    name, value = name.encode(), value.encode()
    return b"\x00" + n(len(name)) + name + n(len(value)) + value


def h2_frame(ftype, flags, stream, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", stream) + payload


def grpc_check(addr, token, tls):
    """envoy.service.auth.v3.Authorization/Check with an empty CheckRequest over HTTP/2 by
    hand; returns CheckResponse.status.code, or None."""
    s = socket.create_connection(tuple_addr(addr), 10)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
    host, port = addr.rsplit(":", 1)
    headers = b"".join(hpack_literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "https" if tls else "http"), (":path", "/envoy.service.auth.v3.Authorization/Check"),
        (":authority", addr), ("content-type", "application/grpc"), ("te", "trailers"), ("authorization", f"Bearer {token}")])
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"")
    out += h2_frame(1, 0x4, 1, headers) + h2_frame(0, 0x1, 1, b"\x00\x00\x00\x00\x00")
    s.sendall(out)
    data, code = b"", None
    end = time.time() + 10
    while time.time() < end:
        head = recv_exact(s, 9)
        length = int.from_bytes(head[:3], "big")
        ftype, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = recv_exact(s, length)
        if ftype == 4 and not flags & 1:
            s.sendall(h2_frame(4, 1, 0, b""))  # SETTINGS ACK
        elif ftype == 0 and stream == 1:
            data += payload
        elif ftype == 1 and stream == 1 and flags & 1:
            break  # trailers (or a trailers-only answer)
        elif ftype in (3, 7):  # RST_STREAM, GOAWAY
            break
    s.close()
    # gRPC message: flag, length, CheckResponse { status (1): google.rpc.Status { code (1) } }.
    if len(data) >= 5:
        msg = data[5:5 + int.from_bytes(data[1:5], "big")]
        code = 0
        if msg[:1] == b"\x0a":
            status = msg[2:2 + msg[1]]
            if status[:1] == b"\x08":
                code = status[1]
    return code


def tuple_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


if __name__ == "__main__":
    main()
