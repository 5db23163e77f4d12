"""Every proxy (docs/proxy.md) through centrifuge-python, against a real application
backend over each transport: HTTP (tests/backends/proxy_backend.py, endpoints
`http://127.0.0.1:PORT/<kind>`) and gRPC (tests/backends/proxy_grpc_backend.py, one
endpoint `grpc://127.0.0.1:PORT`, the kind being the gRPC method). The gRPC backend
answers every call as the HTTP one does, so each test runs unchanged over both.

The Python twin of tests/sdk/js/proxy.test.mjs and proxy_channel.test.mjs:
- connect: a client without a token whose WebSocket upgrade carries
  `Cookie: session=<user>` (centrifuge-python's `headers` option: upgrade headers,
  not emulated ones) is the backend's user; its data in the connected context, its
  `channels` a server-side subscription that gets an HTTP API publication. No session
  is the backend's disconnect 4501.
- rpc: a result, an error (1000), a failure (100, the client stays connected), a
  namespace with the proxy off (108), a disconnect (4501).
- subscribe: allowed (the backend's data in the subscribed context), refused (403),
  a disconnect (4501).
- publish: the backend's rewritten data reaches a subscriber; a refusal is 1002.
- refresh: `session=short…` (expiring in 2 s) is extended by the backend and stays
  connected; `session=ending…` is closed 3005.
- sub_refresh: `sp:expiring-keep-…` stays subscribed past its expiry (herald looks
  at subscription expiry every presence_update_interval, 300 ms here);
  `sp:expiring-end-…` is ended 2501.

Every assertion message carries what the SDK saw and what the backend received; the
conftest hook adds the SDK events and herald's log tail."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest
import requests

from centrifuge import ClientDisconnectedError, ClientState, ReplyError, SubscriptionState

from harness import REPO_ROOT, RecordingClientEvents, connection_token, server_config, uniq, within

pytestmark = pytest.mark.anyio

API_KEY = f"proxy-api-key-{secrets.token_hex(8)}"
BACKENDS_DIR = REPO_ROOT / "tests" / "backends"
TIMEOUT = "500ms"
# The kind of a gRPC backend's recorded call, by its method.
GRPC_KINDS = {
    "Connect": "connect",
    "Refresh": "refresh",
    "Subscribe": "subscribe",
    "Publish": "publish",
    "RPC": "rpc",
    "SubRefresh": "sub_refresh",
}

# Loopback only: never through a proxy of the environment.
HTTP = requests.Session()
HTTP.trust_env = False


# ---------------------------------------------------------------------------
# The application backend


@dataclass
class Call:
    """One request the backend received, the same over both transports."""

    kind: str  # connect, refresh, subscribe, publish, rpc, sub_refresh
    cookie: Optional[str]  # the forwarded Cookie header (gRPC: `cookie` metadata)
    authorization: Optional[str]
    call: dict  # the request as the HTTP proxy's JSON


class Backend:
    """A running proxy_backend.py (`http`) or proxy_grpc_backend.py (`grpc`)."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        script = "proxy_backend.py" if transport == "http" else "proxy_grpc_backend.py"
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKENDS_DIR / script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        # The gRPC backend generates its stubs (grpc_tools.protoc) first.
        reader.join(30)
        words = (line[0] if line else "").split()
        if len(words) < 2 or words[0] != "listening":
            self.stop()
            raise RuntimeError(
                f"the {transport} proxy backend did not print 'listening PORT' within 30 s: "
                f"stdout {line!r}, stderr:\n{self.stderr_text()}"
            )
        self.port = int(words[1])
        # The gRPC backend lists its calls on a second, HTTP port.
        self.requests_port = int(words[3]) if transport == "grpc" else self.port

    def endpoint(self, kind: str) -> str:
        if self.transport == "grpc":
            return f"grpc://127.0.0.1:{self.port}"  # no path: the kind is the method
        return f"http://127.0.0.1:{self.port}/{kind}"

    def received(self) -> list[Call]:
        raw = HTTP.get(f"http://127.0.0.1:{self.requests_port}/requests", timeout=5).json()
        calls = []
        for r in raw:
            if self.transport == "grpc":
                meta = r.get("metadata", {})
                calls.append(
                    Call(GRPC_KINDS.get(r["method"], r["method"]), meta.get("cookie"), meta.get("authorization"), r["call"])
                )
            else:
                kind = r["path"].partition("?")[0].lstrip("/")
                calls.append(Call(kind, r.get("cookie"), r.get("authorization"), r.get("call") or {}))
        return calls

    def calls(self, kind: str, pred: Callable[[Call], bool] = lambda _c: True) -> list[Call]:
        return [c for c in self.received() if c.kind == kind and pred(c)]

    async def wait_calls(
        self, kind: str, pred: Callable[[Call], bool], count: int = 1, timeout: float = 8.0, what: str = ""
    ) -> list[Call]:
        deadline = time.monotonic() + timeout
        while True:
            found = await asyncio.to_thread(self.calls, kind, pred)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"[{self.transport}] the backend got {len(found)} {kind} call(s), wanted {count}"
                    f" ({what}) within {timeout} s; its {kind} calls: {self.calls(kind)!r}"
                )
            await asyncio.sleep(0.1)

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture(scope="module", params=["http", "grpc"])
def backend(request):
    try:
        b = Backend(request.param)
        failure = None
    except RuntimeError as e:
        failure = str(e)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def herald_config(backend):
    """proxy.test.mjs's and proxy_channel.test.mjs's configs together, every endpoint
    on the module's backend."""
    ep = backend.endpoint
    return server_config(
        {
            "http_api": {"key": API_KEY},
            "client": {
                # Subscription expiry is looked at on this tick.
                "presence_update_interval": "300ms",
                "proxy": {
                    "connect": {
                        "enabled": True,
                        "endpoint": ep("connect"),
                        "timeout": TIMEOUT,
                        "http_headers": ["Cookie"],
                    },
                    "refresh": {"enabled": True, "endpoint": ep("refresh"), "timeout": TIMEOUT},
                },
            },
            "rpc": {
                "proxy": {"endpoint": ep("rpc"), "timeout": TIMEOUT},
                "without_namespace": {"proxy_enabled": True},
                "namespaces": [
                    {"name": "ns", "proxy_enabled": True},
                    {"name": "off", "proxy_enabled": False},
                ],
            },
            "channel": {
                "proxy": {
                    "subscribe": {"endpoint": ep("subscribe"), "timeout": TIMEOUT},
                    "publish": {"endpoint": ep("publish"), "timeout": TIMEOUT},
                    "sub_refresh": {"endpoint": ep("sub_refresh"), "timeout": TIMEOUT},
                },
                "namespaces": [
                    {"name": "sp", "subscribe_proxy_enabled": True, "sub_refresh_proxy_enabled": True},
                    {"name": "pp", "publish_proxy_enabled": True, "allow_subscribe_for_client": True},
                ],
            },
        }
    )


# ---------------------------------------------------------------------------
# Helpers


class ServerSideEvents(RecordingClientEvents):
    """The client's events plus its server-side subscriptions' (`server_*`)."""

    async def on_subscribed(self, ctx):
        await self.log.push("server_subscribed", ctx)

    async def on_publication(self, ctx):
        await self.log.push("server_publication", ctx)


def cookie_client(sdk, label: str, cookie: Optional[str], **options: Any):
    """A client without a token whose WebSocket upgrade carries `cookie` (centrifuge-python's
    `headers` option goes on the upgrade request) and an Authorization nobody listed."""
    headers = {"Authorization": "Basic c2VjcmV0OnNlY3JldA=="}
    if cookie is not None:
        headers["Cookie"] = cookie
    h = sdk.client(label, headers=headers, **options)
    h.client.events = ServerSideEvents(h.log)
    return h


async def connect(h, timeout: float = 5.0):
    since = h.log.mark()
    await within(h.client.connect(), timeout, f"{h.label} connect()")
    return await h.log.wait_for("connected", since=since, timeout=timeout, what="connect")


async def connected(sdk, label: str):
    user = uniq(label)
    h = sdk.client(label, token=connection_token(user))
    await connect(h)
    return h, user


async def subscribe(s, timeout: float = 5.0):
    since = s.log.mark()
    await within(s.sub.subscribe(), timeout, "subscribe()")
    return await s.log.wait_for("subscribed", since=since, timeout=timeout, what=f"subscribe {s.sub.channel}")


async def rpc(h, method: str, data: Any) -> Any:
    """The rpc's data, or the ReplyError it raised."""
    try:
        return (await within(h.client.rpc(method, data), 5, f"rpc {method}")).data
    except ReplyError as e:
        return e


def reply_error(got: Any) -> str:
    if isinstance(got, ReplyError):
        return f"ReplyError(code={got.code}, message={got.message!r}, temporary={got.temporary})"
    return f"not an error: {got!r}"


def api_publish(herald, channel: str, data: Any) -> dict:
    r = HTTP.post(
        f"{herald.api_url}/api/publish",
        data=json.dumps({"channel": channel, "data": data}),
        headers={"X-API-Key": API_KEY},
        timeout=5,
    )
    assert r.status_code == 200 and "error" not in r.json(), f"publish: {r.status_code} {r.text}"
    return r.json()


# ---------------------------------------------------------------------------
# connect


async def test_connect_proxy_cookie_user_data_and_channels(sdk, herald, backend):
    user = uniq("cookie-user")
    h = cookie_client(sdk, "cookie", f"theme=dark; session={user}")
    ctx = await connect(h)
    calls = backend.calls("connect", lambda c: user in (c.cookie or ""))
    seen = f"connected {ctx!r}; backend connect calls {calls!r}"
    assert ctx.data == {"hello": user}, f"the backend's data in the connected context: {seen}"
    assert len(calls) == 1, f"one connect call carrying the cookie: {seen}"
    assert calls[0].cookie == f"theme=dark; session={user}", f"the Cookie forwarded as it was: {seen}"
    assert calls[0].authorization is None, f"Authorization is not in http_headers: not forwarded: {seen}"
    assert calls[0].call.get("transport") == "websocket", seen

    # The backend's `channels`: a server-side subscription that gets publications.
    await h.log.wait_for("server_subscribed", lambda c: c.channel == "proxy-news", what="proxy-news")
    since = h.log.mark()
    api_publish(herald, "proxy-news", {"for": user})
    pub = await h.log.wait_for(
        "server_publication",
        lambda c: c.channel == "proxy-news" and c.pub.data == {"for": user},
        since=since,
        what="the API publication on the server-side channel proxy-news",
    )
    assert pub.pub.data == {"for": user}

    echo = await rpc(h, "echo", {})
    assert isinstance(echo, dict) and echo.get("user") == user, f"the connection is the backend's user: {echo!r}"


async def test_connect_proxy_no_session_is_the_backend_disconnect(sdk, backend):
    h = cookie_client(sdk, "anonymous", None)
    since = h.log.mark()
    await within(h.client.connect(), 5, "connect()")
    gone = await h.log.wait_for("disconnected", since=since, what="the backend's disconnect 4501")
    assert (gone.code, gone.reason) == (4501, "no session"), f"{gone!r}; events:\n{h.log.summary()}"
    assert h.log.all("connected", since) == [], f"never connected:\n{h.log.summary()}"
    assert h.client.state == ClientState.DISCONNECTED


# ---------------------------------------------------------------------------
# rpc


async def test_rpc_proxy_result_error_failure_off_and_disconnect(sdk, backend):
    h, user = await connected(sdk, "alice")

    got = await rpc(h, "echo", {"q": 1})
    want = {"echo": {"q": 1}, "user": user, "transport": "websocket", "protocol": "json", "encoding": "json"}
    calls = backend.calls("rpc", lambda c: c.call.get("user") == user)
    assert got == want, f"the backend's data: got {got!r}; backend rpc calls {calls!r}"
    ns = await rpc(h, "ns:echo", {"q": 2})
    assert isinstance(ns, dict) and ns.get("echo") == {"q": 2}, f"ns:echo: {ns!r}"

    refused = await rpc(h, "refuse", {})
    assert isinstance(refused, ReplyError) and (refused.code, refused.message) == (
        1000,
        "refused by the backend",
    ), f"refuse: {reply_error(refused)}"

    boom = await rpc(h, "boom", {})
    assert isinstance(boom, ReplyError) and boom.code == 100, f"boom: {reply_error(boom)}"
    assert h.client.state == ClientState.CONNECTED, f"boom: still connected; events:\n{h.log.summary()}"
    again = await rpc(h, "echo", {"after": "boom"})
    assert isinstance(again, dict) and again.get("echo") == {"after": "boom"}, f"after boom: {again!r}"

    off = await rpc(h, "off:echo", {})
    assert isinstance(off, ReplyError) and off.code == 108, f"off:echo: {reply_error(off)}"
    assert not backend.calls("rpc", lambda c: c.call.get("method") == "off:echo"), "off: never sent"

    since = h.log.mark()
    with pytest.raises(ClientDisconnectedError):
        await within(h.client.rpc("bye", {}), 5, "rpc bye")  # the SDK cancels it on the disconnect
    closed = await h.log.wait_for("disconnected", since=since, what="the backend's disconnect 4501")
    assert (closed.code, closed.reason) == (4501, "bye"), f"bye: {closed!r}; events:\n{h.log.summary()}"
    assert h.client.state == ClientState.DISCONNECTED, "4501 is terminal: no reconnect"


# ---------------------------------------------------------------------------
# subscribe


async def test_subscribe_proxy_allows_refuses_disconnects(sdk, backend):
    h, user = await connected(sdk, "bob")

    channel = f"sp:{uniq('room')}"
    s = sdk.subscription(h, channel)
    ctx = await subscribe(s)
    calls = backend.calls("subscribe", lambda c: c.call.get("channel") == channel)
    assert ctx.data == {"welcome": channel}, f"the backend's data: {ctx!r}; backend calls {calls!r}"
    assert len(calls) == 1 and calls[0].call.get("user") == user, f"one call naming the user: {calls!r}"

    refused = sdk.subscription(h, f"sp:refuse-{uniq('x')}")
    since = refused.log.mark()
    await within(refused.sub.subscribe(), 5, "subscribe() refuse")
    gone = await refused.log.wait_for("unsubscribed", since=since, what="the refusal")
    assert (gone.code, gone.reason) == (403, "not for you"), f"refuse: {gone!r}"
    assert refused.sub.state == SubscriptionState.UNSUBSCRIBED
    assert h.client.state == ClientState.CONNECTED, f"a refusal keeps the connection:\n{h.log.summary()}"

    since = h.log.mark()
    await within(sdk.subscription(h, f"sp:bye-{uniq('x')}").sub.subscribe(), 5, "subscribe() bye")
    closed = await h.log.wait_for("disconnected", since=since, what="the backend's disconnect 4501")
    assert (closed.code, closed.reason) == (4501, "bye"), f"bye: {closed!r}; events:\n{h.log.summary()}"


# ---------------------------------------------------------------------------
# publish


async def test_publish_proxy_rewrites_and_refuses(sdk, backend):
    writer, _ = await connected(sdk, "writer")
    reader, _ = await connected(sdk, "reader")
    channel = f"pp:rewrite-{uniq('x')}"
    r = sdk.subscription(reader, channel)
    await subscribe(r)
    w = sdk.subscription(writer, channel)
    await subscribe(w)

    since = r.log.mark()
    await within(w.sub.publish({"x": 1}), 5, "publish")
    pub = (await r.log.wait_for("publication", since=since, what="the rewritten publication")).pub
    calls = backend.calls("publish", lambda c: c.call.get("channel") == channel)
    assert pub.data == {"rewritten": {"x": 1}, "by": "backend"}, f"{pub!r}; backend calls {calls!r}"
    assert pub.tags == {"t": "1"}, f"the backend's tags: {pub!r}"
    assert [c.call.get("data") for c in calls] == [{"x": 1}], f"the backend saw the client's data: {calls!r}"

    refuse = sdk.subscription(writer, f"pp:refuse-{uniq('x')}")
    await subscribe(refuse)
    with pytest.raises(ReplyError) as e:
        await within(refuse.sub.publish({"x": 2}), 5, "publish refused")
    assert (e.value.code, e.value.message) == (1002, "not published"), reply_error(e.value)
    assert writer.client.state == ClientState.CONNECTED


# ---------------------------------------------------------------------------
# refresh


async def test_refresh_proxy_extends_or_ends_the_connection(sdk, backend):
    short_user = uniq("short")
    short = cookie_client(sdk, "short", f"session={short_user}")
    ending = cookie_client(sdk, "ending", f"session={uniq('ending')}")
    await connect(short)
    short_since = short.log.mark()
    ending_since = ending.log.mark()
    await connect(ending)

    # The connection expires in <= 2 s: herald asks the backend, which extends it.
    calls = await backend.wait_calls(
        "refresh", lambda c: c.call.get("user") == short_user, what="the refresh of the short session"
    )
    gone = await ending.log.wait_for(
        ("connecting", "disconnected"),
        lambda c: c.code == 3005,
        since=ending_since + 1,
        timeout=8,
        what="3005 from the backend's expired",
    )
    assert gone.code == 3005, f"{gone!r}"
    await asyncio.sleep(0.5)
    assert short.client.state == ClientState.CONNECTED, (
        f"extended by the backend: refresh calls {calls!r}; events:\n{short.log.summary()}"
    )
    left = short.log.all("disconnected", short_since) + short.log.all("connecting", short_since)
    assert left == [], f"the extended connection never left: {left!r}"


# ---------------------------------------------------------------------------
# sub_refresh


async def test_sub_refresh_proxy_extends_or_ends_the_subscription(sdk, backend):
    h, _ = await connected(sdk, "erin")
    keep = sdk.subscription(h, f"sp:expiring-keep-{uniq('x')}")
    await subscribe(keep)
    keep_since = keep.log.mark()
    end = sdk.subscription(h, f"sp:expiring-end-{uniq('x')}")
    await subscribe(end)
    end_since = end.log.mark()

    # Both expire in <= 2 s: the backend extends one and ends the other (2501).
    ended = await end.log.wait_for(
        ("subscribing", "unsubscribed"), since=end_since, timeout=8, what="the end of the subscription"
    )
    assert ended.code == 2501, f"{ended!r}; backend sub_refresh calls {backend.calls('sub_refresh')!r}"
    calls = await backend.wait_calls(
        "sub_refresh", lambda c: c.call.get("channel") == keep.sub.channel, what="the keep subscription's refresh"
    )
    await asyncio.sleep(1.0)  # well past the first expiry
    left = keep.log.entries[keep_since:]
    assert keep.sub.state == SubscriptionState.SUBSCRIBED and left == [], (
        f"extended: state {keep.sub.state}, events since subscribed {left!r}; sub_refresh calls {calls!r}"
    )
    assert h.client.state == ClientState.CONNECTED
