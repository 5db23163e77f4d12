"""herald's observability endpoints (interface.md "HTTP endpoints" and "Metrics"), checked with
a real Prometheus text parser and driven by the real centrifuge-python SDK.

One herald (memory engine) with a separate internal port: /metrics, /health, /ready and the
server API live there and nowhere on the public (WebSocket) port. Right after start every
metric of interface.md is exported, labelled families with their pre-initialised series at 0.
Then one known piece of work (connect, subscribe, publish, a failing publish, a rejected token,
a server API call and a failing one) must move exactly the series it concerns, by exactly the
expected amount, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families

from centrifuge import ReplyError

from harness import connection_token, server_config, uniq, within

pytestmark = pytest.mark.anyio

API_KEY = "metrics-test-api-key"

# interface.md, "Metrics": name -> Prometheus type.
GAUGES = [
    "herald_node_num_clients",
    "herald_node_num_users",
    "herald_node_num_channels",
    "herald_node_num_subscriptions",
    "herald_node_num_nodes",
]
COUNTERS = {
    "herald_client_connections_accepted_total": (),
    "herald_client_num_reply_errors_total": ("method", "code"),
    "herald_client_num_server_disconnects_total": ("code",),
    "herald_transport_messages_sent_total": ("frame_type",),
    "herald_transport_messages_received_total": ("frame_type",),
    "herald_transport_bytes_sent_total": (),
    "herald_broker_messages_received_total": (),
    "herald_bus_rejected_envelopes_total": ("reason",),
    "herald_auth_failures_total": ("reason",),
    "herald_api_errors_total": ("method", "code"),
}
HISTOGRAMS = {
    "herald_client_command_duration_seconds": ("method",),
    "herald_broker_publish_duration_seconds": (),
    "herald_api_command_duration_seconds": ("method",),
}

# The closed label sets that must be there (at 0) from startup. Client error codes and
# disconnect codes: centrifugo-compat §1.8 / §1.9; methods: the protocol's commands and the
# server API's methods (interface.md "HTTP endpoints").
CLIENT_ERROR_CODES = [str(c) for c in range(100, 114)]
CLIENT_METHODS = [
    "connect", "subscribe", "unsubscribe", "publish", "presence", "presence_stats",
    "history", "rpc", "refresh", "sub_refresh",
]
API_METHODS = [
    "publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "refresh", "presence",
    "presence_stats", "history", "history_remove", "channels", "info", "batch",
]
SERVER_DISCONNECT_CODES = [
    "3001", "3004", "3005", "3006", "3008", "3009", "3010", "3011", "3012", "3013", "3014",
    "3500", "3501", "3502", "3503", "3504", "3505", "3506", "3507", "3508", "3509",
]
SENT_FRAME_TYPES = ["reply", "push_publication", "push_join", "push_leave", "push_unsubscribe",
                    "push_subscribe", "server_ping"]
RECEIVED_FRAME_TYPES = ["connect", "subscribe", "unsubscribe", "publish", "presence",
                        "presence_stats", "history", "rpc", "refresh", "sub_refresh"]
AUTH_REASONS = ["expired", "signature", "malformed"]
BUS_REJECT_REASONS = ["malformed", "overflow"]

PROCESS_METRICS = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def herald_config():
    return server_config(
        {
            "http_server": {"internal_port": free_port()},
            "http_api": {"key": API_KEY},
            "engine": {"type": "memory"},
            "prometheus": {"enabled": True},
            "health": {"enabled": True},
            "channel": {
                "without_namespace": {
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_client": True,
                },
            },
        }
    )


# ---------------------------------------------------------------------------
# HTTP and scraping


def public_base(herald) -> str:
    u = urllib.parse.urlsplit(herald.ws_url)
    return f"http://{u.netloc}"


def http(method: str, url: str, body: Optional[bytes] = None, headers: Optional[dict] = None):
    """(status, headers, body text) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def api(herald, method: str, payload: dict):
    status, _, text = http(
        "POST",
        f"{herald.api_url}/api/{method}",
        json.dumps(payload).encode(),
        {"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    return status, text


class Scrape:
    """One /metrics answer, parsed by prometheus_client's text parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict = {}
        for fam in self.families.values():
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in self.samples, f"duplicate series {key}"
                self.samples[key] = s.value

    def get(self, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, f"series {name}{labels} is not exported"
        return self.samples[key]

    def series(self, name: str) -> dict:
        """label tuple -> value of every sample named `name`."""
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}

    def family(self, metric: str):
        # The parser names a counter family without its `_total` suffix.
        name = metric[: -len("_total")] if metric.endswith("_total") else metric
        return self.families.get(name)


def scrape(herald) -> Scrape:
    status, headers, text = http("GET", f"{herald.api_url}/metrics")
    assert status == 200, f"GET /metrics on the internal port: {status} {text[:200]}"
    ctype = headers.get("Content-Type", "")
    assert ctype.startswith("text/plain"), f"Prometheus text format content type, got {ctype!r}"
    return Scrape(text)


@pytest.fixture(scope="module")
def startup(herald) -> Scrape:
    """The scrape taken right after herald started, before any test did anything."""
    return scrape(herald)


# ---------------------------------------------------------------------------
# Tests


def test_startup_exports_every_interface_metric(herald, startup):
    m = startup
    missing = []
    for name in GAUGES:
        fam = m.family(name)
        if fam is None or fam.type != "gauge":
            missing.append(f"{name} (gauge)")
    for name in COUNTERS:
        fam = m.family(name)
        if fam is None or fam.type != "counter" or not m.series(name):
            missing.append(f"{name} (counter)")
    for name in HISTOGRAMS:
        fam = m.family(name)
        if fam is None or fam.type != "histogram" or not m.series(f"{name}_count"):
            missing.append(f"{name} (histogram)")
    assert not missing, f"metrics of interface.md not exported at startup: {missing}\n{m.text[:3000]}"

    # Label names are those of interface.md (labels may grow, never shrink).
    for name, labels in {**COUNTERS, **HISTOGRAMS}.items():
        sample = f"{name}_count" if name in HISTOGRAMS else name
        for label_tuple in m.series(sample):
            have = {k for k, _ in label_tuple}
            assert set(labels) <= have, f"{name}: labels {sorted(have)} lack {labels}"

    # Nothing happened yet: every herald counter and histogram is at 0, gauges idle.
    nonzero = {
        k: v
        for k, v in m.samples.items()
        if k[0].startswith("herald_")
        and k[0] not in ("herald_node_num_nodes", "herald_engine_healthy")
        and v != 0
    }
    assert not nonzero, f"non-zero herald series right after start: {nonzero}"
    assert m.get("herald_node_num_nodes") == 1, "the memory engine is a cluster of one node"
    assert m.get("herald_engine_healthy") == 1, "the memory engine is always reachable"

    # Pre-initialised closed label sets (a dashboard sees the series before the first event).
    absent = []

    def need(name: str, **labels) -> None:
        key = (name, tuple(sorted(labels.items())))
        if key not in m.samples:
            absent.append(f"{name}{labels}")

    for method in CLIENT_METHODS:
        need("herald_client_command_duration_seconds_count", method=method)
        need("herald_client_command_duration_seconds_bucket", method=method, le="+Inf")
        for code in CLIENT_ERROR_CODES:
            need("herald_client_num_reply_errors_total", method=method, code=code)
    for method in API_METHODS:
        need("herald_api_command_duration_seconds_count", method=method)
        for code in ["100", "102", "107", "108"]:
            need("herald_api_errors_total", method=method, code=code)
    for code in SERVER_DISCONNECT_CODES:
        need("herald_client_num_server_disconnects_total", code=code)
    for ft in SENT_FRAME_TYPES:
        need("herald_transport_messages_sent_total", frame_type=ft)
    for ft in RECEIVED_FRAME_TYPES:
        need("herald_transport_messages_received_total", frame_type=ft)
    for reason in AUTH_REASONS:
        need("herald_auth_failures_total", reason=reason)
    for reason in BUS_REJECT_REASONS:
        need("herald_bus_rejected_envelopes_total", reason=reason)
    need("herald_broker_publish_duration_seconds_count")
    assert not absent, f"{len(absent)} pre-initialised series missing, e.g. {absent[:10]}"
    # The brief's example, literally.
    assert 'herald_client_num_reply_errors_total{code="103",method="publish"} 0' in m.text or (
        'herald_client_num_reply_errors_total{method="publish",code="103"} 0' in m.text
    )

    # The process collector comes along.
    for name in PROCESS_METRICS:
        assert (name, ()) in m.samples, f"{name} is not exported"
    assert m.get("process_resident_memory_bytes") > 0
    assert m.get("process_open_fds") > 0
    assert abs(m.get("process_start_time_seconds") - time.time()) < 300, "start time is now-ish"

    check_histograms(m)


def check_histograms(m: Scrape) -> None:
    """Every histogram series: cumulative buckets, +Inf bucket == count."""
    for name in HISTOGRAMS:
        for labels, count in m.series(f"{name}_count").items():
            buckets = sorted(
                (float(dict(bl)["le"]), v)
                for bl, v in m.series(f"{name}_bucket").items()
                if tuple(kv for kv in bl if kv[0] != "le") == labels
            )
            assert buckets, f"{name}{dict(labels)} has no buckets"
            values = [v for _, v in buckets]
            assert values == sorted(values), f"{name}{dict(labels)} buckets not cumulative"
            assert buckets[-1][0] == float("inf") and buckets[-1][1] == count, (
                f"{name}{dict(labels)}: +Inf bucket {buckets[-1]} != count {count}"
            )


def test_internal_routes_only_on_internal_port(herald):
    pub = public_base(herald)
    assert pub != herald.api_url, "internal_port set: two different listeners"
    for path in ["/metrics", "/health", "/ready"]:
        status, _, _ = http("GET", f"{pub}{path}")
        assert status == 404, f"GET {path} on the public port must be 404, got {status}"
    status, _, _ = http(
        "POST", f"{pub}/api/info", b"{}", {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    )
    assert status == 404, f"POST /api/info on the public port must be 404, got {status}"

    status, _, text = http("GET", f"{herald.api_url}/metrics")
    assert status == 200 and "herald_node_num_clients" in text


def test_health_and_ready(herald):
    status, headers, text = http("GET", f"{herald.api_url}/health")
    assert status == 200, f"/health: {status} {text}"
    assert json.loads(text) == {}, f"/health body: {text!r}"
    assert headers.get("Content-Type", "").startswith("application/json")

    status, _, text = http("GET", f"{herald.api_url}/ready")
    assert status == 200, f"/ready with the memory engine: {status} {text}"
    assert json.loads(text) == {}, f"/ready body: {text!r}"


async def wait_gauges(herald, want: dict, timeout: float = 5.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(herald)
        got = {g: m.get(g) for g in want}
        if got == want or time.monotonic() > deadline:
            assert got == want, f"node gauges: want {want}, got {got}"
            return m
        await asyncio.sleep(0.05)


async def test_work_moves_exactly_the_expected_series(herald, startup, sdk):
    before = scrape(herald)

    # --- a client connects and subscribes
    user = uniq("metrics-user")
    h = sdk.client("alice", token=connection_token(user))
    since = h.log.mark()
    await within(h.client.connect(), 5, "connect()")
    await h.log.wait_for("connected", since=since, what="connect")

    channel = uniq("metrics")
    s = sdk.subscription(h, channel)
    since = s.log.mark()
    await within(s.sub.subscribe(), 5, "subscribe()")
    await s.log.wait_for("subscribed", since=since, what="subscribe")

    await wait_gauges(
        herald,
        {
            "herald_node_num_clients": 1,
            "herald_node_num_users": 1,
            "herald_node_num_channels": 1,
            "herald_node_num_subscriptions": 1,
            "herald_node_num_nodes": 1,
        },
    )

    # --- a publication, delivered back to the subscriber
    since = s.log.mark()
    await within(h.client.publish(channel, {"n": 1}), 5, "publish")
    await s.log.wait_for("publication", since=since, what="own publication")

    # --- a failing command: publish into a namespace that does not exist -> 102
    with pytest.raises(ReplyError) as err:
        await within(h.client.publish(f"nosuchns:{uniq('x')}", {"n": 2}), 5, "bad publish")
    assert err.value.code == 102, f"unknown namespace: 102, got {err.value}"

    # --- a rejected token (wrong signature) -> 3500, auth failure "signature"
    bad = sdk.client(
        "mallory",
        token=connection_token(uniq("mallory"), secret="not-the-server-secret-but-32-bytes-long"),
    )
    since = bad.log.mark()
    await within(bad.client.connect(), 10, "connect attempt with a forged token")
    d = await bad.log.wait_for("disconnected", since=since, what="terminal disconnect")
    assert d.code == 3500, f"forged token: 3500, got {d.code} {d.reason}"

    # --- server API: one call that works, one that fails (unknown namespace -> 102)
    status, text = api(herald, "info", {})
    assert status == 200 and "error" not in json.loads(text), f"/api/info: {status} {text}"
    status, text = api(herald, "publish", {"channel": f"nosuchns:{uniq('y')}", "data": {}})
    body = json.loads(text)
    assert body.get("error", {}).get("code") == 102, f"/api/publish to an unknown ns: {status} {text}"

    after = scrape(herald)
    check_histograms(after)

    # Each counter series and histogram count that must have moved, by exactly this much.
    expected = {
        ("herald_client_connections_accepted_total", ()): 1,
        # alice and the client with the forged token, both speaking JSON
        ("herald_client_upgrades_total", (("format", "json"),)): 2,
        ("herald_transport_connects_total", (("transport", "websocket"),)): 2,
        # connect (accepted) + connect (rejected), subscribe, publish ok + publish 102
        ("herald_transport_messages_received_total", (("frame_type", "connect"),)): 2,
        ("herald_transport_messages_received_total", (("frame_type", "subscribe"),)): 1,
        ("herald_transport_messages_received_total", (("frame_type", "publish"),)): 2,
        ("herald_client_command_duration_seconds_count", (("method", "connect"),)): 2,
        ("herald_client_command_duration_seconds_count", (("method", "subscribe"),)): 1,
        ("herald_client_command_duration_seconds_count", (("method", "publish"),)): 2,
        # replies: connect, subscribe, publish, publish error (the rejected connect gets none)
        ("herald_transport_messages_sent_total", (("frame_type", "reply"),)): 4,
        ("herald_transport_messages_sent_total", (("frame_type", "push_publication"),)): 1,
        ("herald_broker_publish_duration_seconds_count", ()): 1,
        ("herald_broker_messages_received_total", ()): 1,
        ("herald_client_num_reply_errors_total", (("code", "102"), ("method", "publish"))): 1,
        ("herald_auth_failures_total", (("reason", "signature"),)): 1,
        ("herald_client_num_server_disconnects_total", (("code", "3500"),)): 1,
        ("herald_api_command_duration_seconds_count", (("method", "info"),)): 1,
        ("herald_api_command_duration_seconds_count", (("method", "publish"),)): 1,
        ("herald_api_errors_total", (("code", "102"), ("method", "publish"))): 1,
    }
    # Moved, by an amount that depends on timing or sizes: checked separately.
    # (herald_transport_connections: the forged-token connection's Session
    # may still be ending at the scrape.)
    free = {"herald_transport_bytes_sent_total", "herald_transport_connections"}

    def movable(key) -> bool:
        name = key[0]
        if not name.startswith("herald_") or name.startswith("herald_node_"):
            return False
        if name in free or name.endswith("_sum") or name.endswith("_bucket"):
            return False
        return True

    problems = []
    for key in sorted(set(before.samples) | set(after.samples)):
        if not movable(key):
            continue
        if key not in before.samples or key not in after.samples:
            problems.append(f"{key[0]}{dict(key[1])}: series appeared or vanished")
            continue
        delta = after.samples[key] - before.samples[key]
        want = expected.get(key, 0)
        if delta != want:
            problems.append(f"{key[0]}{dict(key[1])}: moved by {delta:g}, expected {want}")
    for key in expected:
        if key not in after.samples:
            problems.append(f"{key[0]}{dict(key[1])}: not exported")
    assert not problems, "metric deltas after the work:\n  " + "\n  ".join(problems)

    ws_open = ("herald_transport_connections", (("transport", "websocket"),))
    for _ in range(100):
        now = scrape(herald)
        if now.samples.get(ws_open) == before.samples.get(ws_open, 0) + 1:
            break
        await asyncio.sleep(0.05)
    assert now.samples.get(ws_open) == before.samples.get(ws_open, 0) + 1, (
        f"open websocket connections: before {before.samples.get(ws_open)}, "
        f"now {now.samples.get(ws_open)} (alice is connected)"
    )

    sent = after.get("herald_transport_bytes_sent_total") - before.get(
        "herald_transport_bytes_sent_total"
    )
    # 4 replies and 1 publication push, at least a few bytes each.
    assert sent >= 5 * 10, f"bytes sent moved by {sent}"
    for name, labels in [
        ("herald_client_command_duration_seconds_sum", {"method": "publish"}),
        ("herald_api_command_duration_seconds_sum", {"method": "info"}),
        ("herald_broker_publish_duration_seconds_sum", {}),
    ]:
        assert after.get(name, **labels) > before.get(name, **labels), f"{name}{labels} grew"

    # --- the client leaves: the node gauges go back to idle
    await within(h.client.disconnect(), 5, "disconnect()")
    await wait_gauges(
        herald,
        {
            "herald_node_num_clients": 0,
            "herald_node_num_users": 0,
            "herald_node_num_channels": 0,
            "herald_node_num_subscriptions": 0,
            "herald_node_num_nodes": 1,
        },
    )
