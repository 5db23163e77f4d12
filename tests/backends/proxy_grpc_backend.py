#!/usr/bin/env python3
"""The gRPC application backend for herald's proxy tests (docs/proxy.md, "gRPC
proxies"): the behaviour of proxy_backend.py (its HTTP twin) over
`centrifugal.centrifugo.proxy.CentrifugoProxy`. Needs grpcio and grpcio-tools
(tests/sdk/python/requirements.txt); the stubs are generated at start from
herald's schema, crates/proxy/proto/proxy.proto, into a temporary directory.

`python3 proxy_grpc_backend.py` serves gRPC on a free loopback port and prints
`listening PORT requests HTTP_PORT`: the gRPC port first (the line a test reads
for either backend), then a plain HTTP port where GET /requests returns every
call received so far as a JSON list of {"method", "metadata", "call"} (`call` as
the HTTP proxy's JSON: `data` and `meta` parsed from their JSON bytes).

Every call is answered as proxy_backend.py answers the same call over HTTP (its
answer functions are imported and their JSON translated to protobuf), so a test
asserts the same outcomes over either transport: see that file's docstring for
the answers of Connect (by the `cookie` metadata herald forwards when the
proxy's `http_headers` lists Cookie), RPC, Subscribe, Publish, Refresh and
SubRefresh. The translation: an HTTP 500 is the gRPC status INTERNAL; the
answer `garbage` (a body that is not JSON) is a result whose data bytes are not
JSON; `data`, `info` and `meta` go as their JSON text in bytes.
"""

import importlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

PROTO = Path(__file__).resolve().parents[2] / "crates" / "proxy" / "proto" / "proxy.proto"

# The HTTP twin's answers (stdlib only; its main() runs only as a script).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_backend as http_twin  # noqa: E402

PAYLOADS = ("data", "info", "meta")

RECEIVED = []
LOCK = threading.Lock()


def load_stubs(out):
    """Generates and imports proxy_pb2 and proxy_pb2_grpc from herald's schema."""
    proc = subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTO.parent}", f"--python_out={out}", f"--grpc_python_out={out}",
            str(PROTO),
        ],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        sys.exit(f"grpc_tools.protoc failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    # The generated *_pb2_grpc module imports `proxy_pb2` by its top-level name.
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("proxy_pb2"), importlib.import_module("proxy_pb2_grpc")
    finally:
        sys.path.remove(str(out))


def as_json(message):
    """The call as the HTTP proxy's JSON: non-default fields, payloads parsed."""
    out = {}
    for field, value in message.ListFields():
        if field.name in ("data", "meta", "info"):
            try:
                value = json.loads(value)
            except ValueError:
                value = {"not_json": value.decode("latin-1")}
        elif not isinstance(value, (str, bytes, int, float, bool)):
            value = list(value)  # a repeated field
        out[field.name] = value
    return out


def jbytes(value):
    return json.dumps(value).encode()


def call_json(message):
    """The call as the HTTP proxy's JSON, every scalar field present (as herald's
    HTTP request has them), payloads parsed from their JSON bytes (absent when empty)."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.name in PAYLOADS:
            if value:
                try:
                    out[field.name] = json.loads(value)
                except ValueError:
                    out[field.name] = {"not_json": value.decode("latin-1")}
        elif isinstance(value, (str, bytes, int, float, bool)):
            out[field.name] = value
        else:
            out[field.name] = list(value)
    return out


def to_response(pb, kind, status, body, context):
    """The HTTP twin's answer (status, JSON body) as the `kind`Response."""
    if status != 200:
        context.abort(grpc.StatusCode.INTERNAL, f"the HTTP twin answers {status}")
    response, result_type = getattr(pb, f"{kind}Response"), getattr(pb, f"{kind}Result")
    if isinstance(body, str):  # `garbage`: an answer that is not JSON
        return response(result=result_type(data=body.encode()))
    if "error" in body:
        return response(error=pb.Error(**body["error"]))
    if "disconnect" in body:
        return response(disconnect=pb.Disconnect(**body["disconnect"]))
    fields = {}
    for name, value in body.get("result", {}).items():
        fields[name] = jbytes(value) if name in PAYLOADS else value
    return response(result=result_type(**fields))


def make_servicer(pb, pb_grpc):
    class Backend(pb_grpc.CentrifugoProxyServicer):
        def record(self, method, request, context):
            metadata = {}
            for key, value in context.invocation_metadata():
                metadata.setdefault(key, value)
            with LOCK:
                RECEIVED.append({"method": method, "metadata": metadata, "call": as_json(request)})
            return metadata, call_json(request)

        def Connect(self, request, context):
            metadata, _ = self.record("Connect", request, context)
            status, body = http_twin.connect_answer(metadata.get("cookie"))
            return to_response(pb, "Connect", status, body, context)

        def RPC(self, request, context):
            _, call = self.record("RPC", request, context)
            status, body = http_twin.answer_for(call)
            return to_response(pb, "RPC", status, body, context)

        def Subscribe(self, request, context):
            _, call = self.record("Subscribe", request, context)
            status, body = http_twin.subscribe_answer(call)
            return to_response(pb, "Subscribe", status, body, context)

        def Publish(self, request, context):
            _, call = self.record("Publish", request, context)
            status, body = http_twin.publish_answer(call)
            return to_response(pb, "Publish", status, body, context)

        def Refresh(self, request, context):
            _, call = self.record("Refresh", request, context)
            status, body = http_twin.refresh_answer(call)
            return to_response(pb, "Refresh", status, body, context)

        def SubRefresh(self, request, context):
            _, call = self.record("SubRefresh", request, context)
            status, body = http_twin.sub_refresh_answer(call)
            return to_response(pb, "SubRefresh", status, body, context)

    return Backend()


class Requests(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/requests":
            status, body = 404, b"{}"
        else:
            with LOCK:
                status, body = 200, json.dumps(RECEIVED).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    with tempfile.TemporaryDirectory(prefix="proxy_stubs_") as out:
        pb, pb_grpc = load_stubs(out)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_CentrifugoProxyServicer_to_server(make_servicer(pb, pb_grpc), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    requests = ThreadingHTTPServer(("127.0.0.1", 0), Requests)
    requests.daemon_threads = True
    threading.Thread(target=requests.serve_forever, daemon=True).start()
    print(f"listening {port} requests {requests.server_address[1]}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
