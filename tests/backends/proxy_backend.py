#!/usr/bin/env python3
"""An application backend for herald's proxy tests (docs/proxy.md), on the
standard library only: `python3 proxy_backend.py` listens on a free loopback
port and prints `listening PORT`.

POST /rpc answers by the call's `method` (the part after a namespace's `:`):
  echo     {"result":{"data":{"echo":<data>,"user","transport","protocol","encoding"}}}
  refuse   {"error":{"code":1000,"message":"refused by the backend"}}
  bye      {"disconnect":{"code":4501,"reason":"bye"}}
  boom     HTTP 500
  slow     waits 3 s, then a result (past any test timeout)
  garbage  200 with a body that is not JSON
  big      200 with a 2 MB body
  code100  {"error":{"code":100}} (outside [400, 1999])
POST /connect answers by the `session` cookie (the Cookie header herald
forwards when `client.proxy.connect.http_headers` lists it):
  session=<user>    {"result":{"user":<user>,"data":{"hello":<user>},"channels":["proxy-news"]}}
  session=refuse    {"error":{"code":1001,"message":"log in first"}}
  session=boom      HTTP 500
  no session        {"disconnect":{"code":4501,"reason":"no session"}}
  session=short     as <user>, expiring in 2 s (the refresh proxy extends it)
  session=ending    as <user>, expiring in 2 s (the refresh proxy ends it)
  every result carries "meta": {"session": <session>}
POST /refresh answers by the call's `user`: one starting with "ending" is
  {"result":{"expired":true}}; any other gets expire_at in 10 minutes and
  info {"refreshed":true}.
POST /subscribe answers by the channel (after its namespace's `:`):
  refuse...  {"error":{"code":403,"message":"not for you"}}
  bye...     {"disconnect":{"code":4501,"reason":"bye"}}
  boom...    HTTP 500
  expiring...  a result expiring in 2 s
  anything else {"result":{"info":{"granted":<user>},"data":{"welcome":<channel>}}}
POST /publish answers by the channel (after its namespace's `:`):
  rewrite... {"result":{"data":{"rewritten":<data>,"by":"backend"},"tags":{"t":"1"}}}
  refuse...  {"error":{"code":1002,"message":"not published"}}
  skip...    {"result":{"skip_history":true}}
  anything else {"result":{}}
POST /sub_refresh answers by the channel (after its namespace's `:`):
  expiring-end...  {"result":{"expired":true}}; others: expire_at in 10 minutes.
GET /requests: every request received so far, as a JSON list.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED = []
LOCK = threading.Lock()


def connect_answer(cookie):
    session = None
    for part in (cookie or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "session":
            session = value
    if session is None:
        return 200, {"disconnect": {"code": 4501, "reason": "no session"}}
    if session == "refuse":
        return 200, {"error": {"code": 1001, "message": "log in first"}}
    if session == "boom":
        return 500, {"oops": True}
    result = {
        "user": session,
        "data": {"hello": session},
        "channels": ["proxy-news"],
        "meta": {"session": session},
    }
    if session.startswith(("short", "ending")):
        result["expire_at"] = int(time.time()) + 2
    return 200, {"result": result}


def channel_of(call):
    return call.get("channel", "").split(":")[-1]


def refresh_answer(call):
    if call.get("user", "").startswith("ending"):
        return 200, {"result": {"expired": True}}
    return 200, {"result": {"expire_at": int(time.time()) + 600, "info": {"refreshed": True}}}


def subscribe_answer(call):
    channel = channel_of(call)
    if channel.startswith("refuse"):
        return 200, {"error": {"code": 403, "message": "not for you"}}
    if channel.startswith("bye"):
        return 200, {"disconnect": {"code": 4501, "reason": "bye"}}
    if channel.startswith("boom"):
        return 500, {"oops": True}
    result = {"info": {"granted": call.get("user")}, "data": {"welcome": call.get("channel")}}
    if channel.startswith("expiring"):
        result["expire_at"] = int(time.time()) + 2
    return 200, {"result": result}


def publish_answer(call):
    channel = channel_of(call)
    if channel.startswith("rewrite"):
        return 200, {"result": {"data": {"rewritten": call.get("data"), "by": "backend"}, "tags": {"t": "1"}}}
    if channel.startswith("refuse"):
        return 200, {"error": {"code": 1002, "message": "not published"}}
    if channel.startswith("skip"):
        return 200, {"result": {"skip_history": True}}
    return 200, {"result": {}}


def sub_refresh_answer(call):
    if channel_of(call).startswith("expiring-end"):
        return 200, {"result": {"expired": True}}
    return 200, {"result": {"expire_at": int(time.time()) + 600}}


ANSWERS = {
    "/refresh": refresh_answer,
    "/subscribe": subscribe_answer,
    "/publish": publish_answer,
    "/sub_refresh": sub_refresh_answer,
}


def answer_for(call):
    method = call.get("method", "").split(":")[-1]
    if method == "echo":
        keys = ("user", "transport", "protocol", "encoding")
        data = {"echo": call.get("data"), **{k: call.get(k) for k in keys}}
        if "meta" in call:
            data["meta"] = call["meta"]
        return 200, {"result": {"data": data}}
    if method == "refuse":
        return 200, {"error": {"code": 1000, "message": "refused by the backend"}}
    if method == "bye":
        return 200, {"disconnect": {"code": 4501, "reason": "bye"}}
    if method == "boom":
        return 500, {"oops": True}
    if method == "slow":
        time.sleep(3)
        return 200, {"result": {}}
    if method == "garbage":
        return 200, "not json at all"
    if method == "big":
        return 200, {"result": {"data": {"pad": "x" * 2_000_000}}}
    if method == "code100":
        return 200, {"error": {"code": 100, "message": "reserved"}}
    return 200, {"error": {"code": 404, "message": f"no method {method!r}"}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body):
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        try:
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        if self.path == "/requests":
            with LOCK:
                self.send(200, list(RECEIVED))
        else:
            self.send(404, {})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            call = json.loads(raw)
        except ValueError:
            return self.send(400, {"bad": "json"})
        with LOCK:
            RECEIVED.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "static": self.headers.get("X-Static"),
                    "cookie": self.headers.get("Cookie"),
                    "authorization": self.headers.get("Authorization"),
                    "tenant": self.headers.get("X-Tenant"),
                    "call": call,
                }
            )
        path = self.path.split("?")[0]
        if path == "/connect":
            status, body = connect_answer(self.headers.get("Cookie"))
            return self.send(status, body)
        if path in ANSWERS:
            status, body = ANSWERS[path](call)
            return self.send(status, body)
        if path != "/rpc":
            return self.send(404, {})
        status, body = answer_for(call)
        self.send(status, body)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
