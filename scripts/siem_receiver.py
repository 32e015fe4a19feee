#!/usr/bin/env python3
"""A stand-in Splunk HEC collector and Datadog log intake for benchmarks (the tests have
their own, in shard/tests/common/siem.rs).

  scripts/siem_receiver.py PORT

Accepts POST /services/collector/event (Authorization: Splunk <token>; newline-joined
events, each with time, host, source, sourcetype, index and event) and POST /api/v2/logs
(DD-API-KEY; a JSON array of at most 1000 entries), gzip or not, answering as the real
services do on success (200 {"code":0} / 202). A request of the wrong shape gets 400 and is
counted as an error. GET /count answers {"splunk": N, "datadog": N, "errors": N}.
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"splunk": 0, "datadog": 0, "errors": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            self.reply(200, dict(counts))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            elif len(body) > 1024:
                raise ValueError("over 1 KiB and not gzipped")
            if self.path == "/services/collector/event":
                if not self.headers.get("authorization", "").startswith("Splunk "):
                    raise ValueError("no Splunk token")
                lines = body.decode().splitlines()
                first = json.loads(lines[0])
                if not all(k in first for k in ("time", "host", "source", "sourcetype", "index", "event")):
                    raise ValueError("event fields missing")
                with lock:
                    counts["splunk"] += len(lines)
                self.reply(200, {"text": "Success", "code": 0})
            elif self.path == "/api/v2/logs":
                if not self.headers.get("dd-api-key"):
                    raise ValueError("no DD-API-KEY")
                entries = json.loads(body)
                if not isinstance(entries, list) or len(entries) > 1000 or "ddsource" not in entries[0]:
                    raise ValueError("not a Datadog array")
                with lock:
                    counts["datadog"] += len(entries)
                self.reply(202, {})
            else:
                raise ValueError(f"unknown path {self.path}")
        except Exception as e:  # a wrong shape: 400, counted
            with lock:
                counts["errors"] += 1
            self.reply(400, {"error": str(e)})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A sender that went away mid-request (a server stopped under load): not news.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
