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
GET /requests: every request received so far, as a JSON list; each has
`verified` (true, false, or null when no signing key is given), `reason`
(why it was refused), `signature` (the X-Herald-Signature header) and `body`
(the raw body).

Signed proxy requests (docs/proxy.md, "Signed proxy requests"): started with
`--signing-key KID=SECRET` (repeatable; SECRET the base64 of herald's
`proxy_signing.keys[].secret`), every POST must carry a valid
X-Herald-Signature whose `ts` is at most `--max-age` seconds (default 30) from
the backend's clock; otherwise it is answered HTTP 401
{"error":"signature: <reason>"} and recorded with `verified: false`. Reasons:
missing, malformed, version, unknown_key, stale, bad_signature.

POST /replay {"index": N, "body"?: str, "path"?: str, "advance"?: seconds}
sends request N of /requests again, over HTTP to this backend, with the same
headers (signature included) and, unless replaced, the same body and path.
`advance` moves the backend's clock forward for that one check (the replayed
request carries `X-Backend-Clock-Advance`), so a test shows a replay after
the window refused without sleeping. Answers {"status", "verified",
"reason"} of the replayed request, which is also recorded (`replay_of`).
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED = []
RAW_BODIES = []
LOCK = threading.Lock()
SIGNING_KEYS = {}
MAX_AGE = 30
PORT = None
# Headers a replay sends again as they were.
REPLAYED_HEADERS = ("Content-Type", "X-Herald-Signature", "X-Static", "Cookie", "Authorization")


def decode_secret(secret):
    """herald's decoder: standard or URL-safe base64, padded or not."""
    padded = secret.strip() + "=" * (-len(secret.strip()) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except ValueError:
        return base64.urlsafe_b64decode(padded)


def verify(header, method, path, body, now):
    """(verified, reason) of a request by docs/proxy.md's rule."""
    if not header:
        return False, "missing"
    version, _, rest = header.partition(",")
    if version != "v1":
        return False, "version"
    fields = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
    kid, ts, sig = fields.get("kid"), fields.get("ts"), fields.get("sig")
    if kid is None or sig is None or ts is None or not ts.isdigit():
        return False, "malformed"
    if kid not in SIGNING_KEYS:
        return False, "unknown_key"
    if abs(now - int(ts)) > MAX_AGE:
        return False, "stale"
    message = b"v1\n" + method.encode() + b"\n" + path.encode() + b"\n" + ts.encode() + b"\n" + body
    digest = hmac.new(SIGNING_KEYS[kid], message, hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if not hmac.compare_digest(expected, sig):
        return False, "bad_signature"
    return True, None


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
        if self.path == "/replay":
            return self.replay(raw)
        verified, reason = None, None
        if SIGNING_KEYS:
            advance = int(self.headers.get("X-Backend-Clock-Advance", "0"))
            now = int(time.time()) + max(advance, 0)
            verified, reason = verify(self.headers.get("X-Herald-Signature"), "POST", self.path, raw, now)
        try:
            call = json.loads(raw)
        except ValueError:
            call = None
        record = {
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "static": self.headers.get("X-Static"),
            "cookie": self.headers.get("Cookie"),
            "authorization": self.headers.get("Authorization"),
            "tenant": self.headers.get("X-Tenant"),
            "signature": self.headers.get("X-Herald-Signature"),
            "verified": verified,
            "reason": reason,
            "body": raw.decode("utf-8", "replace"),
            "call": call,
        }
        if self.headers.get("X-Backend-Replay-Of") is not None:
            record["replay_of"] = int(self.headers["X-Backend-Replay-Of"])
        with LOCK:
            RECEIVED.append(record)
            RAW_BODIES.append(raw)
        if verified is False:
            return self.send(401, {"error": f"signature: {reason}"})
        if call is None:
            return self.send(400, {"bad": "json"})
        route = self.path.partition("?")[0]
        if route == "/connect":
            status, body = connect_answer(self.headers.get("Cookie"))
            return self.send(status, body)
        if route in ANSWERS:
            status, body = ANSWERS[route](call)
            return self.send(status, body)
        if route != "/rpc":
            return self.send(404, {})
        status, body = answer_for(call)
        self.send(status, body)

    def replay(self, raw):
        try:
            ask = json.loads(raw)
            index = int(ask["index"])
            with LOCK:
                record, body = RECEIVED[index], RAW_BODIES[index]
        except (ValueError, KeyError, IndexError, TypeError):
            return self.send(400, {"bad": "replay needs the index of a recorded request"})
        if "body" in ask:
            body = ask["body"].encode()
        headers = {"X-Backend-Replay-Of": str(index), "Content-Length": str(len(body))}
        for name in REPLAYED_HEADERS:
            key = {"Content-Type": "content_type", "X-Herald-Signature": "signature", "X-Static": "static"}.get(
                name, name.lower()
            )
            if record.get(key) is not None:
                headers[name] = record[key]
        if ask.get("advance"):
            headers["X-Backend-Clock-Advance"] = str(int(ask["advance"]))
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        try:
            connection.request("POST", ask.get("path", record["path"]), body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        finally:
            connection.close()
        with LOCK:
            replayed = next(r for r in reversed(RECEIVED) if r.get("replay_of") == index)
        self.send(200, {"status": status, "verified": replayed["verified"], "reason": replayed["reason"]})


def main():
    global MAX_AGE, PORT
    parser = argparse.ArgumentParser(description="herald's test backend for proxies")
    parser.add_argument("--signing-key", action="append", default=[], metavar="KID=SECRET")
    parser.add_argument("--max-age", type=int, default=30, metavar="SECONDS")
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    args = parser.parse_args()
    for pair in args.signing_key:
        kid, sep, secret = pair.partition("=")
        if not sep or not kid:
            parser.error(f"--signing-key wants KID=SECRET, got {pair!r}")
        SIGNING_KEYS[kid] = decode_secret(secret)
    MAX_AGE = args.max_age
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    PORT = server.server_address[1]
    print(f"listening {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
