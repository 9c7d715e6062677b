"""A minimal OTLP/HTTP receiver for the benchmarks: accepts POST /v1/traces
(and /v1/logs, /v1/metrics) with protobuf or JSON bodies, answers 200, and
counts requests and bytes per path. GET /stats decodes what it stored (with
opentelemetry-proto, installed with opentelemetry-exporter-otlp-proto-http)
and returns {"requests", "bytes", "spans", "paths"} as JSON. Decoding waits
for /stats so that the receiver costs as little CPU as possible while the
measured service runs.

    otlp_sink.py PORT      prints "otlp sink listening on 127.0.0.1:PORT"
"""

import gzip
import json
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
BODIES = []  # (path, content-type, bytes)
COUNTS = {}  # path -> [requests, bytes]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        with LOCK:
            c = COUNTS.setdefault(self.path, [0, 0])
            c[0] += 1
            c[1] += length
            BODIES.append((self.path, self.headers.get("Content-Type") or "", body))
        ctype = "application/json" if "json" in (self.headers.get("Content-Type") or "") else "application/x-protobuf"
        reply = b"{}" if ctype == "application/json" else b""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):
        if self.path != "/stats":
            self.send_error(404)
            return
        with LOCK:
            bodies = list(BODIES)
            counts = {k: list(v) for k, v in COUNTS.items()}
        spans = 0
        errors = []
        for path, ctype, body in bodies:
            if not path.endswith("/v1/traces"):
                continue
            try:
                if "json" in ctype:
                    doc = json.loads(body)
                    for rs in doc.get("resourceSpans", []):
                        for ss in rs.get("scopeSpans", []):
                            spans += len(ss.get("spans", []))
                else:
                    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                        ExportTraceServiceRequest,
                    )

                    req = ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            spans += len(ss.spans)
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                errors.append(f"{type(e).__name__}: {e}")
        out = json.dumps({
            "requests": sum(c[0] for c in counts.values()),
            "bytes": sum(c[1] for c in counts.values()),
            "spans": spans,
            "paths": counts,
            "decode_errors": errors[:3],
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"otlp sink listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
