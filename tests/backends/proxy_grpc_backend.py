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

RPC answers by the call's `method` (the part after a namespace's `:`):
  echo     result, data {"echo":<data>,"user","transport","protocol","encoding"}
  refuse   error {code 1000, message "refused by the backend"}
  bye      disconnect {code 4501, reason "bye"}
  boom     gRPC status INTERNAL (the twin of HTTP 500)
  slow     waits 3 s, then a result (past any test timeout)
  garbage  result whose data bytes are not JSON
  big      result with a 2 MB data
  code100  error {code 100} (outside [400, 1999])
Connect answers by the `session` cookie (the `cookie` metadata herald forwards
when the proxy's `http_headers` lists Cookie):
  session=<user>    result {user, data {"hello":<user>}, channels ["proxy-news"]}
  session=refuse    error {code 1001, message "log in first"}
  session=boom      gRPC status INTERNAL
  no session        disconnect {code 4501, reason "no session"}
Subscribe: a channel containing `refuse` gets error 1000, `bye` disconnect 4501,
any other a result with data {"channel":<channel>}. Publish: a result with the
publication's data. Refresh and SubRefresh: a result expiring in an hour.
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


def make_servicer(pb, pb_grpc):
    class Backend(pb_grpc.CentrifugoProxyServicer):
        def record(self, method, request, context):
            metadata = {}
            for key, value in context.invocation_metadata():
                metadata.setdefault(key, value)
            with LOCK:
                RECEIVED.append({"method": method, "metadata": metadata, "call": as_json(request)})
            return metadata

        def Connect(self, request, context):
            metadata = self.record("Connect", request, context)
            session = None
            for part in metadata.get("cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "session":
                    session = value
            if session is None:
                return pb.ConnectResponse(disconnect=pb.Disconnect(code=4501, reason="no session"))
            if session == "refuse":
                return pb.ConnectResponse(error=pb.Error(code=1001, message="log in first"))
            if session == "boom":
                context.abort(grpc.StatusCode.INTERNAL, "boom")
            return pb.ConnectResponse(
                result=pb.ConnectResult(
                    user=session, data=jbytes({"hello": session}), channels=["proxy-news"]
                )
            )

        def RPC(self, request, context):
            self.record("RPC", request, context)
            method = request.method.split(":")[-1]
            if method == "echo":
                echo = json.loads(request.data) if request.data else None
                keys = ("user", "transport", "protocol", "encoding")
                data = {"echo": echo, **{k: getattr(request, k) for k in keys}}
                return pb.RPCResponse(result=pb.RPCResult(data=jbytes(data)))
            if method == "refuse":
                return pb.RPCResponse(error=pb.Error(code=1000, message="refused by the backend"))
            if method == "bye":
                return pb.RPCResponse(disconnect=pb.Disconnect(code=4501, reason="bye"))
            if method == "boom":
                context.abort(grpc.StatusCode.INTERNAL, "boom")
            if method == "slow":
                time.sleep(3)
                return pb.RPCResponse(result=pb.RPCResult())
            if method == "garbage":
                return pb.RPCResponse(result=pb.RPCResult(data=b"not json at all"))
            if method == "big":
                return pb.RPCResponse(result=pb.RPCResult(data=jbytes({"pad": "x" * 2_000_000})))
            if method == "code100":
                return pb.RPCResponse(error=pb.Error(code=100, message="reserved"))
            return pb.RPCResponse(error=pb.Error(code=404, message=f"no method {method!r}"))

        def Subscribe(self, request, context):
            self.record("Subscribe", request, context)
            if "refuse" in request.channel:
                return pb.SubscribeResponse(error=pb.Error(code=1000, message="refused by the backend"))
            if "bye" in request.channel:
                return pb.SubscribeResponse(disconnect=pb.Disconnect(code=4501, reason="bye"))
            return pb.SubscribeResponse(
                result=pb.SubscribeResult(data=jbytes({"channel": request.channel}))
            )

        def Publish(self, request, context):
            self.record("Publish", request, context)
            return pb.PublishResponse(result=pb.PublishResult(data=request.data))

        def Refresh(self, request, context):
            self.record("Refresh", request, context)
            return pb.RefreshResponse(result=pb.RefreshResult(expire_at=int(time.time()) + 3600))

        def SubRefresh(self, request, context):
            self.record("SubRefresh", request, context)
            return pb.SubRefreshResponse(
                result=pb.SubRefreshResult(expire_at=int(time.time()) + 3600)
            )

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
