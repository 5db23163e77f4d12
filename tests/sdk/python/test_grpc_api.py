"""herald's gRPC server API (`grpc_api`) driven by a real grpcio client, with
centrifuge-python clients on the receiving side.

The client stubs are generated at test time from herald's own proto file
(crates/protocol/proto/api.proto) with grpcio-tools' bundled protoc, so the test speaks
exactly the schema herald ships: `centrifugal.centrifugo.api.CentrifugoApi`, whose message
names and field numbers are Centrifugo v6's.

Covered (docs/protocol.md, "gRPC server API"): the `grpc_api=127.0.0.1:PORT` ready line;
publish (a subscriber receives it, history shows it); presence and presence_stats of a
connected client (conn_info as JSON bytes); broadcast responses in channel order; batch,
sequential and parallel, replies in command order with per-command errors; info; API
errors in the response's `error` (empty channel 107, unknown namespace 102, no history
108) and the error metric moving; the key (`http_api.key` when `grpc_api.key` is empty)
checked: a wrong or missing one is UNAUTHENTICATED; an unknown method UNIMPLEMENTED; a
message that is not the request INVALID_ARGUMENT, one too large OUT_OF_RANGE; TLS with a test CA.

Every call has a deadline; the conftest hook adds herald's log tail to a failure."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness import (
    GrpcStubs,
    generate_grpc_stubs,
    ready_line_addr,
    REPO_ROOT,
    Herald,
    connection_token,
    server_config,
    uniq,
    within,
)
from test_uni_grpc import make_test_certificates

PROTO = REPO_ROOT / "crates" / "protocol" / "proto" / "api.proto"
API_KEY = f"api-key-{secrets.token_hex(16)}"
SERVICE = "centrifugal.centrifugo.api.CentrifugoApi"

# Loopback only: never through an http_proxy/grpc_proxy of the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
CALL_TIMEOUT_S = 5.0


def grpc_api_config(extra: dict | None = None) -> dict:
    config = server_config(
        {
            # No grpc_api.key: calls carry http_api.key.
            "http_api": {"key": API_KEY},
            "grpc_api": {"enabled": True, "address": "127.0.0.1", "port": 0},
            "channel": {
                # No history, no presence: history is 108.
                "without_namespace": {"allow_subscribe_for_client": True},
                "namespaces": [
                    {
                        "name": "chat",
                        "history_size": 100,
                        "history_ttl": "300s",
                        "presence": True,
                        "allow_subscribe_for_client": True,
                    }
                ],
            },
        }
    )
    for k, v in (extra or {}).items():
        config[k] = {**config.get(k, {}), **v}
    return config


@pytest.fixture(scope="module")
def herald_config():
    return grpc_api_config()


# ---------------------------------------------------------------------------
# Stubs generated at test time


Stubs = GrpcStubs


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Stubs:
    return generate_grpc_stubs(PROTO, tmp_path_factory.mktemp("api_stubs"))


# ---------------------------------------------------------------------------
# Helpers


def grpc_api_addr(server: Herald) -> str:
    """The `grpc_api=127.0.0.1:PORT` address of the ready line (stdout)."""
    return ready_line_addr(server, "grpc_api")


@pytest.fixture
def chan(herald):
    ch = grpc.insecure_channel(grpc_api_addr(herald), options=CHANNEL_OPTIONS)
    yield ch
    ch.close()


class Api:
    """The generated stub with the key in every call's metadata."""

    def __init__(self, stubs: Stubs, channel: grpc.Channel, key: str | None = API_KEY) -> None:
        self.pb = stubs.pb
        self.stub = stubs.grpc.CentrifugoApiStub(channel)
        self.metadata = [] if key is None else [("authorization", f"apikey {key}")]

    def __getattr__(self, method: str):
        rpc = getattr(self.stub, method)
        return lambda request: rpc(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)


@pytest.fixture
def api(stubs, chan) -> Api:
    return Api(stubs, chan)


def ok(response: Any, what: str) -> Any:
    assert not response.HasField("error"), f"{what}: error {response.error}"
    assert response.HasField("result"), f"{what}: neither error nor result"
    return response.result


def api_error(response: Any, what: str) -> tuple[int, str]:
    assert response.HasField("error"), f"{what}: expected an error, got {response}"
    assert not response.HasField("result"), f"{what}: an error and a result: {response}"
    return response.error.code, response.error.message


async def call(fn, *args):
    """A blocking gRPC call off the event loop, so the SDK clients keep reading."""
    return await asyncio.to_thread(fn, *args)


async def connected_client(sdk, label: str, info: Any = None) -> tuple[Any, str, str]:
    user = uniq(label)
    h = sdk.client(label, token=connection_token(user, info=info))
    since = h.log.mark()
    await within(h.client.connect(), 5, f"{label} connect()")
    ctx = await h.log.wait_for("connected", since=since, what=f"{label} connect")
    return h, user, ctx.client


async def subscribed(sdk, h, channel: str):
    s = sdk.subscription(h, channel)
    since = s.log.mark()
    await within(s.sub.subscribe(), 5, f"{h.label} subscribe {channel}")
    await s.log.wait_for("subscribed", since=since, what=f"subscribe {channel}")
    return s


def metric(server: Herald, name: str, labels: dict) -> float:
    """A sample of /metrics (0 when absent), its labels in any order."""
    text = requests.get(f"{server.api_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


# ---------------------------------------------------------------------------
# Tests


def test_ready_line_and_stubs(herald, stubs):
    assert grpc_api_addr(herald).startswith("127.0.0.1:")
    service = stubs.pb.DESCRIPTOR.services_by_name["CentrifugoApi"]
    assert service.full_name == SERVICE
    # Centrifugo v6's numbers, which stubs generated from its file rely on.
    fields = {f.name: f.number for f in stubs.pb.PublishRequest.DESCRIPTOR.fields}
    assert fields["data"] == 2 and fields["idempotency_key"] == 6
    reply = {f.name: f.number for f in stubs.pb.Reply.DESCRIPTOR.fields}
    assert (reply["error"], reply["publish"], reply["invalidate_user_tokens"]) == (2, 4, 24)


@pytest.mark.anyio
async def test_publish_reaches_subscriber_and_history(sdk, api, herald):
    h, _user, _client = await connected_client(sdk, "alice")
    channel = f"chat:{uniq('room')}"
    s = await subscribed(sdk, h, channel)
    data = {"text": "over gRPC", "n": 1}

    since = s.log.mark()
    res = ok(
        await call(api.Publish, api.pb.PublishRequest(
            channel=channel, data=json.dumps(data).encode(), tags={"kind": "grpc"},
        )),
        "publish",
    )
    assert res.offset == 1 and res.epoch, f"publish result: first offset and the epoch: {res}"
    pub = (await s.log.wait_for("publication", since=since, what="the gRPC publication")).pub
    assert (pub.data, pub.offset, pub.tags) == (data, 1, {"kind": "grpc"})

    hist = ok(await call(api.History, api.pb.HistoryRequest(channel=channel, limit=10)), "history")
    assert [json.loads(p.data) for p in hist.publications] == [data]
    assert (hist.publications[0].offset, dict(hist.publications[0].tags)) == (1, {"kind": "grpc"})
    assert (hist.epoch, hist.offset) == (res.epoch, 1)

    ok(await call(api.HistoryRemove, api.pb.HistoryRemoveRequest(channel=channel)), "history_remove")
    hist = ok(await call(api.History, api.pb.HistoryRequest(channel=channel, limit=10)), "history")
    assert (len(hist.publications), hist.offset) == (0, 1), f"history removed, top kept: {hist}"


@pytest.mark.anyio
async def test_presence_of_a_connected_client(sdk, api):
    info = {"name": "Bob"}
    h, user, client = await connected_client(sdk, "bob", info=info)
    channel = f"chat:{uniq('lobby')}"
    await subscribed(sdk, h, channel)

    presence = ok(await call(api.Presence, api.pb.PresenceRequest(channel=channel)), "presence")
    assert list(presence.presence) == [client], f"presence lists the subscriber: {presence}"
    me = presence.presence[client]
    assert (me.client, me.user, json.loads(me.conn_info)) == (client, user, info)

    stats = ok(
        await call(api.PresenceStats, api.pb.PresenceStatsRequest(channel=channel)), "presence_stats"
    )
    assert (stats.num_clients, stats.num_users) == (1, 1)

    channels = ok(await call(api.Channels, api.pb.ChannelsRequest(pattern=channel)), "channels")
    assert dict(channels.channels) and channels.channels[channel].num_clients == 1, f"{channels}"


def test_broadcast_responses_in_channel_order(api):
    good = f"chat:{uniq('b')}"
    res = ok(
        api.Broadcast(api.pb.BroadcastRequest(channels=[good, "", good], data=b'{"b":1}')),
        "broadcast",
    )
    codes = [(r.HasField("result"), r.error.code) for r in res.responses]
    assert codes == [(True, 0), (False, 107), (True, 0)], f"{res}"
    assert [r.result.offset for r in res.responses if r.HasField("result")] == [1, 2]


def test_batch_replies_in_command_order(api):
    pb = api.pb
    channel = f"chat:{uniq('batch')}"
    plain = uniq("plain")  # no namespace: no history
    for parallel in (False, True):
        commands = [
            pb.Command(publish=pb.PublishRequest(channel=channel, data=b'{"i":1}')),
            pb.Command(history=pb.HistoryRequest(channel=plain, limit=1)),
            pb.Command(),  # no method herald serves: 104
            pb.Command(presence_stats=pb.PresenceStatsRequest(channel=channel)),
            pb.Command(info=pb.InfoRequest()),
        ]
        res = api.Batch(pb.BatchRequest(commands=commands, parallel=parallel))
        r = list(res.replies)
        assert len(r) == 5, f"parallel={parallel}: one reply per command: {res}"
        assert r[0].HasField("publish") and r[0].publish.offset in (1, 2), f"{r[0]}"
        assert r[1].error.code == 108, f"history without history: {r[1]}"
        assert r[2].error.code == 104, f"an empty command: {r[2]}"
        assert r[3].HasField("presence_stats"), f"{r[3]}"
        assert r[4].HasField("info") and len(r[4].info.nodes) == 1, f"{r[4]}"
    hist = ok(api.History(pb.HistoryRequest(channel=channel, limit=10)), "history")
    assert len(hist.publications) == 2, "both batches published"


def test_info(api, herald):
    info = ok(api.Info(api.pb.InfoRequest()), "info")
    assert len(info.nodes) == 1, f"{info}"
    node = info.nodes[0]
    assert node.uid and node.name and node.version, f"{node}"


def test_api_errors_are_in_the_response(api, herald):
    before = metric(herald, "herald_api_errors_total", {"method": "publish", "code": "107"})
    code, message = api_error(api.Publish(api.pb.PublishRequest(channel="", data=b"{}")), "empty channel")
    assert code == 107 and "channel" in message
    after = metric(herald, "herald_api_errors_total", {"method": "publish", "code": "107"})
    assert after == before + 1, "the HTTP API's error metric counts gRPC calls too"

    code, _ = api_error(
        api.Presence(api.pb.PresenceRequest(channel=f"nowhere:{uniq('x')}")), "unknown namespace"
    )
    assert code == 102
    code, _ = api_error(
        api.History(api.pb.HistoryRequest(channel=uniq("plain"))), "a channel without history"
    )
    assert code == 108
    # Data that is not JSON is bytes, which a JSON channel refuses.
    code, _ = api_error(
        api.Publish(api.pb.PublishRequest(channel=f"chat:{uniq('x')}", data=b"\x00\x01")), "not JSON"
    )
    assert code == 107
    code, _ = api_error(api.Disconnect(api.pb.DisconnectRequest(user="")), "no user")
    assert code == 107


def test_wrong_or_missing_key_is_unauthenticated(stubs, chan):
    for key in ("wrong", None):
        api = Api(stubs, chan, key=key)
        with pytest.raises(grpc.RpcError) as e:
            api.Info(stubs.pb.InfoRequest())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, f"key {key!r}: {e.value}"


def test_unknown_method_and_bad_message(chan):
    metadata = [("authorization", f"apikey {API_KEY}")]
    raw = lambda name: chan.unary_unary(  # noqa: E731
        f"/{SERVICE}/{name}", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as e:
        raw("Connections")(b"", metadata=metadata, timeout=CALL_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, f"{e.value}"
    with pytest.raises(grpc.RpcError) as e:
        # Field 1 as a varint where PublishRequest.channel is a string.
        raw("Publish")(b"\x08\x01\xff", metadata=metadata, timeout=CALL_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{e.value}"
    with pytest.raises(grpc.RpcError) as e:
        # Past grpc_api.max_receive_message_size (4 MiB by default).
        raw("Publish")(b"\x12" + b"\x80\x80\x80\x03" + b"x" * (6 << 20), metadata=metadata,
                       timeout=CALL_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE, f"{e.value}"
    # Still serving.
    reply = raw("Info")(b"", metadata=metadata, timeout=CALL_TIMEOUT_S)
    assert reply, "Info answers after a bad message"


def test_tls(stubs, tmp_path):
    certs = make_test_certificates(tmp_path)
    tls = {"enabled": True, "cert_pem_file": str(certs["cert"]), "key_pem_file": str(certs["key"])}
    server = Herald(
        grpc_api_config({"grpc_api": {"tls": tls, "key": "grpc-only-key"}}),
        label="herald (grpc_api tls)",
    )
    opened: list[grpc.Channel] = []
    try:
        addr = grpc_api_addr(server)
        creds = grpc.ssl_channel_credentials(root_certificates=certs["ca"].read_bytes())
        secure = grpc.secure_channel(
            addr, creds, options=[*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", "localhost")]
        )
        plain = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
        opened += [secure, plain]
        # grpc_api.key, when set, replaces http_api.key.
        info = ok(Api(stubs, secure, key="grpc-only-key").Info(stubs.pb.InfoRequest()), "info over TLS")
        assert len(info.nodes) == 1
        with pytest.raises(grpc.RpcError) as e:
            Api(stubs, secure).Info(stubs.pb.InfoRequest())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, "http_api.key is not grpc_api.key"
        with pytest.raises(grpc.RpcError):
            Api(stubs, plain, key="grpc-only-key").Info(stubs.pb.InfoRequest())
    except BaseException:
        print(server.logs(tail=80))
        raise
    finally:
        for c in opened:
            c.close()
        server.stop()
