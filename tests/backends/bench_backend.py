#!/usr/bin/env python3
"""A fast application backend for herald's proxy benchmarks
(docs/benchmarks.md, "Proxies"): asyncio protocol callbacks parsing HTTP/1.1
keep-alive requests by hand, one process, the standard library only.
`python3 bench_backend.py [--port N]` listens on loopback (a free port by
default) and prints `listening PORT`.

It answers what herald's proxies send, and nothing else:
  POST /connect    {"result":{"user":<the session cookie>}} (a disconnect 4501
                   without one): the connect proxy with http_headers = ["Cookie"]
  POST /rpc        {"result":{"data":<the call's data>}}: every method echoes
  POST /subscribe  {"result":{}}
  anything else    404

The call's JSON is parsed (json.loads), as a real backend would. The test
backend, proxy_backend.py, does more (every answer of the test suites, a
record of each request) on ThreadingHTTPServer: a thread per connection and
the GIL between them, which made it the limit of the RPC rows (see
docs/benchmarks.md).
"""

import argparse
import asyncio
import json
import sys

NO_SESSION = b'{"disconnect":{"code":4501,"reason":"no session"}}'


def response(status, body):
    reason = {200: b"OK", 400: b"Bad Request"}.get(status, b"Not Found")
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


def session_of(cookie):
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "session":
            return value
    return None


def answer(path, headers, body):
    route = path.partition("?")[0]
    if route == "/rpc":
        call = json.loads(body)
        return response(200, json.dumps({"result": {"data": call.get("data")}}).encode())
    if route == "/connect":
        json.loads(body)
        session = session_of(headers.get("cookie", ""))
        if session is None:
            return response(200, NO_SESSION)
        return response(200, json.dumps({"result": {"user": session}}).encode())
    if route == "/subscribe":
        json.loads(body)
        return response(200, b'{"result":{}}')
    return response(404, b"{}")


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                break
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            parts = head[0].split(" ")
            try:
                out.append(answer(parts[1] if len(parts) > 1 else "/", headers, body))
            except ValueError:
                out.append(response(400, b'{"bad":"json"}'))
        if out:
            self.transport.write(b"".join(out))


async def main():
    parser = argparse.ArgumentParser(description="herald's proxy benchmark backend")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", args.port, backlog=4096)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
