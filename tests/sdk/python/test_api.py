"""herald's server HTTP API (POST /api/<method>, centrifugo-compat §4) driven by the real
`cent` client (PyPI cent 5.x), with centrifuge-python clients on the receiving side:
every method, the API key, and the HTTP-level errors.

cent 5.2.0 quirks the tests work around (cent's, not herald's):
- a 401 raises CentUnauthorizedError (not CentTransportError, which is for other non-200s);
- its batch parser indexes every reply by the method name, so a batch holding a failing
  command raises KeyError in cent: the failing-command batch is checked with raw HTTP.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field

import pytest
import requests
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Client,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from centrifuge import Client as SdkClient
from centrifuge import ClientState, SubscriptionState

from harness import EventLog, RecordingClientEvents, connection_token, server_config, uniq, within

API_KEY = f"api-key-{secrets.token_hex(16)}"
HISTORY = {"history_size": 100, "history_ttl": "300s"}


@pytest.fixture(scope="module")
def herald_config():
    return server_config(
        {
            "http_api": {"key": API_KEY},
            # Short expiry grace, so a refresh with a near expire_at closes within seconds.
            "client": {"expired_close_delay": "1s", "presence_update_interval": "1s"},
            "channel": {
                # No history, no presence: publish returns {}, history/presence are 108.
                "without_namespace": {"allow_subscribe_for_client": True},
                "namespaces": [
                    {
                        "name": "chat",
                        **HISTORY,
                        "presence": True,
                        "join_leave": True,
                        "force_recovery": True,
                        "allow_subscribe_for_client": True,
                    }
                ],
            },
        }
    )


# ---------------------------------------------------------------------------
# Helpers


class RecordingServerEvents(RecordingClientEvents):
    """Client events plus the server-side subscription events (API subscribe/unsubscribe)."""

    async def on_subscribing(self, ctx):
        await self.log.push("server_subscribing", ctx)

    async def on_subscribed(self, ctx):
        await self.log.push("server_subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        await self.log.push("server_unsubscribed", ctx)

    async def on_publication(self, ctx):
        await self.log.push("server_publication", ctx)

    async def on_join(self, ctx):
        await self.log.push("server_join", ctx)

    async def on_leave(self, ctx):
        await self.log.push("server_leave", ctx)


@dataclass
class Conn:
    """Same shape as conftest's ClientHandle, so the `sdk` fixture disconnects and reports it."""

    client: SdkClient
    log: EventLog
    label: str
    user: str
    subs: list = field(default_factory=list)
    id: str = ""


async def connected_client(sdk, label: str, info=None, user: str = "") -> Conn:
    user = user or uniq(label)
    log = EventLog(label)
    client = SdkClient(
        sdk.server.ws_url,
        events=RecordingServerEvents(log),
        token=connection_token(user, info=info),
        min_reconnect_delay=0.2,
        max_reconnect_delay=1.0,
    )
    conn = Conn(client, log, label, user)
    sdk.clients.append(conn)
    since = log.mark()
    await within(client.connect(), 5, f"{label} connect()")
    ctx = await log.wait_for("connected", since=since, what=f"{label} connect")
    conn.id = ctx.client
    return conn


async def subscribed(sdk, conn: Conn, channel: str):
    s = sdk.subscription(conn, channel)
    since = s.log.mark()
    await within(s.sub.subscribe(), 5, f"{conn.label} subscribe {channel}")
    ctx = await s.log.wait_for("subscribed", since=since, what=f"subscribe {channel}")
    return s, ctx


def api_url(herald) -> str:
    return f"{herald.api_url}/api"


@pytest.fixture
async def api(herald):
    client = AsyncClient(api_url(herald), API_KEY, timeout=5)
    yield client
    await client.close()


def raw_post(herald, path: str, body, headers=None) -> requests.Response:
    hdrs = {"X-API-Key": API_KEY}
    hdrs.update(headers or {})
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{herald.api_url}{path}", data=data, headers=hdrs, timeout=5)


async def quiet(log: EventLog, names: tuple, since: int, seconds: float) -> None:
    """Asserts that none of `names` is recorded during the next `seconds`."""
    await asyncio.sleep(seconds)
    hits = [e for e in log.entries[since:] if e.name in names]
    assert not hits, f"{log.label}: unexpected {[(e.name, e.ctx) for e in hits]}"


# ---------------------------------------------------------------------------
# publish, presence, presence_stats, history, history_remove


@pytest.mark.anyio
async def test_publish_presence_history_history_remove(sdk, api):
    info = {"name": "Alice"}
    alice = await connected_client(sdk, "alice", info=info)
    channel = f"chat:{uniq('room')}"
    s, sub_ctx = await subscribed(sdk, alice, channel)
    assert sub_ctx.recoverable, "force_recovery: the subscription is recoverable"
    epoch = sub_ctx.stream_position.epoch
    assert epoch, "a recoverable subscription reports the stream epoch"

    data = {"text": "hello from the API", "n": 1}
    since = s.log.mark()
    res = await api.publish(PublishRequest(channel=channel, data=data, tags={"kind": "api"}))
    assert (res.offset, res.epoch) == (1, epoch), f"publish result {res!r}: first offset, stream epoch"
    pub = (await s.log.wait_for("publication", since=since, what="API publication")).pub
    assert pub.data == data
    assert pub.offset == res.offset
    assert pub.tags == {"kind": "api"}
    assert pub.info is None, "an API publication carries no ClientInfo"

    presence = await api.presence(PresenceRequest(channel=channel))
    assert list(presence.presence) == [alice.id], f"presence lists the subscriber: {presence!r}"
    me = presence.presence[alice.id]
    assert (me.client, me.user, me.conn_info) == (alice.id, alice.user, info)

    stats = await api.presence_stats(PresenceStatsRequest(channel=channel))
    assert (stats.num_clients, stats.num_users) == (1, 1)

    hist = await api.history(HistoryRequest(channel=channel, limit=10))
    assert [p.data for p in hist.publications] == [data]
    assert hist.publications[0].offset == res.offset
    assert hist.publications[0].tags == {"kind": "api"}
    assert (hist.epoch, hist.offset) == (epoch, res.offset), "history carries the stream top"

    # No limit: only the stream position (Centrifugo: limit 0 => top only).
    top = await api.history(HistoryRequest(channel=channel))
    assert (top.publications, top.epoch, top.offset) == ([], epoch, res.offset)

    await api.history_remove(HistoryRemoveRequest(channel=channel))
    emptied = await api.history(HistoryRequest(channel=channel, limit=10))
    assert emptied.publications == [], f"history_remove empties the history: {emptied!r}"
    assert (emptied.epoch, emptied.offset) == (epoch, res.offset), (
        "history_remove drops publications, not the stream position"
    )

    since = s.log.mark()
    res2 = await api.publish(PublishRequest(channel=channel, data={"n": 2}))
    assert (res2.offset, res2.epoch) == (2, epoch), "the stream goes on after history_remove"
    pub2 = (await s.log.wait_for("publication", since=since, what="publication after remove")).pub
    assert (pub2.data, pub2.offset) == ({"n": 2}, 2)


@pytest.mark.anyio
async def test_publish_validation_errors(sdk, api, herald):
    plain = uniq("plain")  # no namespace: no history, no presence
    res = await api.publish(PublishRequest(channel=plain, data={"x": 1}))
    assert (res.offset, res.epoch) == (0, ""), "no history: empty publish result"
    assert raw_post(herald, "/api/publish", {"channel": plain, "data": 1}).json() == {"result": {}}

    with pytest.raises(CentApiResponseError) as e:
        await api.publish(PublishRequest(channel=f"undefined:{uniq('x')}", data={"x": 1}))
    assert e.value.code == 102, f"unknown namespace: {e.value!r}"

    with pytest.raises(CentApiResponseError) as e:
        await api.history(HistoryRequest(channel=plain, limit=10))
    assert e.value.code == 108, f"history on a channel without history: {e.value!r}"

    with pytest.raises(CentApiResponseError) as e:
        await api.presence(PresenceRequest(channel=plain))
    assert e.value.code == 108, f"presence on a channel without presence: {e.value!r}"

    with pytest.raises(CentApiResponseError) as e:
        await api.publish(PublishRequest(channel="", data={"x": 1}))
    assert e.value.code == 107, f"empty channel: {e.value!r}"

    with pytest.raises(CentApiResponseError) as e:
        await api.publish(PublishRequest(channel=plain, data=None))  # cent drops data: None
    assert e.value.code == 107, f"publish without data: {e.value!r}"


@pytest.mark.anyio
async def test_history_since_reverse_and_unrecoverable_position(api):
    channel = f"chat:{uniq('hist')}"
    offsets = [(await api.publish(PublishRequest(channel=channel, data={"n": n}))).offset for n in range(4)]
    assert offsets == [1, 2, 3, 4]
    epoch = (await api.history(HistoryRequest(channel=channel))).epoch

    after = await api.history(
        HistoryRequest(channel=channel, limit=10, since=StreamPosition(offset=2, epoch=epoch))
    )
    assert [(p.offset, p.data) for p in after.publications] == [(3, {"n": 2}), (4, {"n": 3})]
    assert (after.epoch, after.offset) == (epoch, 4)

    latest = await api.history(HistoryRequest(channel=channel, limit=2, reverse=True))
    assert [p.offset for p in latest.publications] == [4, 3], "reverse: newest first"

    with pytest.raises(CentApiResponseError) as e:
        await api.history(
            HistoryRequest(channel=channel, limit=10, since=StreamPosition(offset=2, epoch="not-the-epoch"))
        )
    assert e.value.code == 112, f"since with another epoch: unrecoverable position: {e.value!r}"


# ---------------------------------------------------------------------------
# broadcast


@pytest.mark.anyio
async def test_broadcast_responses_in_channel_order(sdk, api):
    reader = await connected_client(sdk, "reader")
    a, b = f"chat:{uniq('a')}", f"chat:{uniq('b')}"
    sa, _ = await subscribed(sdk, reader, a)
    sb, _ = await subscribed(sdk, reader, b)
    pre = sb.log.mark()
    for n in range(2):  # b's stream is two ahead of a's
        await api.publish(PublishRequest(channel=b, data={"pre": n}))
    await sb.log.wait_count("publication", 2, since=pre)

    since_a, since_b = sa.log.mark(), sb.log.mark()
    bad = f"undefined:{uniq('c')}"
    res = await api.broadcast(BroadcastRequest(channels=[a, b, bad], data={"all": True}))
    assert len(res.responses) == 3, f"one response per channel: {res!r}"
    ra, rb, rc = res.responses
    assert ra.error is None and ra.result.offset == 1, f"first response is channel a's: {ra!r}"
    assert rb.error is None and rb.result.offset == 3, f"second response is channel b's: {rb!r}"
    assert ra.result.epoch and rb.result.epoch and ra.result.epoch != rb.result.epoch
    assert rc.result is None and rc.error is not None and rc.error.code == 102, (
        f"third response: unknown namespace error 102: {rc!r}"
    )

    pa = (await sa.log.wait_for("publication", since=since_a, what="broadcast on a")).pub
    pb = (await sb.log.wait_for("publication", since=since_b, what="broadcast on b")).pub
    assert (pa.data, pa.offset) == ({"all": True}, 1)
    assert (pb.data, pb.offset) == ({"all": True}, 3)


# ---------------------------------------------------------------------------
# subscribe / unsubscribe (server-side), channels


@pytest.mark.anyio
async def test_server_side_subscribe_and_unsubscribe(sdk, api):
    bob1 = await connected_client(sdk, "bob")
    bob2 = await connected_client(sdk, "bob2", user=bob1.user)

    channel = f"chat:{uniq('srv')}"
    top = await api.publish(PublishRequest(channel=channel, data={"before": True}))

    # Only the named client of the user.
    m1, m2 = bob1.log.mark(), bob2.log.mark()
    await api.subscribe(SubscribeRequest(user=bob1.user, channel=channel, client=bob1.id))
    sub_ctx = await bob1.log.wait_for("server_subscribed", since=m1, what="server-side subscribe")
    assert sub_ctx.channel == channel
    assert sub_ctx.recoverable, "force_recovery applies to server-side subscriptions too"
    assert sub_ctx.stream_position is not None and sub_ctx.stream_position.epoch == top.epoch
    assert sub_ctx.stream_position.offset == top.offset

    res = await api.publish(PublishRequest(channel=channel, data={"srv": 1}))
    got = await bob1.log.wait_for("server_publication", since=m1, what="publication on server-side sub")
    assert (got.channel, got.pub.data, got.pub.offset) == (channel, {"srv": 1}, res.offset)

    channels = await api.channels(ChannelsRequest(pattern=channel))
    assert {k: v.num_clients for k, v in channels.channels.items()} == {channel: 1}
    await quiet(bob2.log, ("server_subscribed", "server_publication"), m2, 0.2)

    # All connections of the user (no client): bob2 joins.
    m2 = bob2.log.mark()
    await api.subscribe(SubscribeRequest(user=bob1.user, channel=channel))
    ctx2 = await bob2.log.wait_for("server_subscribed", since=m2, what="subscribe of every connection")
    assert ctx2.channel == channel
    channels = await api.channels(ChannelsRequest(pattern=channel))
    assert channels.channels[channel].num_clients == 2

    # Unsubscribe one client, then the rest.
    m1, m2 = bob1.log.mark(), bob2.log.mark()
    await api.unsubscribe(UnsubscribeRequest(user=bob1.user, channel=channel, client=bob2.id))
    unsub = await bob2.log.wait_for("server_unsubscribed", since=m2, what="server-side unsubscribe")
    assert unsub.channel == channel
    await quiet(bob1.log, ("server_unsubscribed",), m1, 0.2)
    channels = await api.channels(ChannelsRequest(pattern=channel))
    assert {k: v.num_clients for k, v in channels.channels.items()} == {channel: 1}

    await api.unsubscribe(UnsubscribeRequest(user=bob1.user, channel=channel))
    await bob1.log.wait_for("server_unsubscribed", since=m1, what="unsubscribe without client")
    assert bob1.client.state == ClientState.CONNECTED and bob2.client.state == ClientState.CONNECTED
    channels = await api.channels(ChannelsRequest(pattern=channel))
    assert channels.channels == {}, "no subscriber left: the channel is not listed"


@pytest.mark.anyio
async def test_server_side_subscribe_carries_data_and_info(sdk, api):
    """centrifugo-compat §4.3: subscribe takes `data` (sent to the client in the subscribe
    push) and `info` (the subscription's channel info, shown in presence as chan_info)."""
    ivy = await connected_client(sdk, "ivy")
    channel = f"chat:{uniq('welcome')}"
    since = ivy.log.mark()
    await api.subscribe(
        SubscribeRequest(user=ivy.user, channel=channel, data={"welcome": 1}, info={"role": "guest"})
    )
    ctx = await ivy.log.wait_for("server_subscribed", since=since, what="server-side subscribe")
    assert ctx.channel == channel
    presence = await api.presence(PresenceRequest(channel=channel))
    problems = []
    if ctx.data != {"welcome": 1}:
        problems.append(f"subscribe data must reach the client in the subscribe push, got {ctx!r}")
    if presence.presence[ivy.id].chan_info != {"role": "guest"}:
        problems.append(f"subscribe info must be the chan_info in presence, got {presence!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.anyio
async def test_api_unsubscribe_of_client_side_subscription(sdk, api):
    carol = await connected_client(sdk, "carol")
    channel = f"chat:{uniq('cs')}"
    s, _ = await subscribed(sdk, carol, channel)
    since = s.log.mark()
    await api.unsubscribe(UnsubscribeRequest(user=carol.user, channel=channel))
    ctx = await s.log.wait_for("unsubscribed", since=since, what="API unsubscribe")
    assert ctx.code == 2000, f"server unsubscribe code 2000, got {ctx.code} {ctx.reason}"
    assert s.sub.state == SubscriptionState.UNSUBSCRIBED
    assert carol.client.state == ClientState.CONNECTED


@pytest.mark.anyio
async def test_channels_and_info(sdk, api, herald):
    c1 = await connected_client(sdk, "chan1")
    c2 = await connected_client(sdk, "chan2")
    tag = uniq("ch")
    shared, own = f"chat:{tag}-shared", f"chat:{tag}-own"
    await subscribed(sdk, c1, shared)
    await subscribed(sdk, c2, shared)
    await subscribed(sdk, c1, own)

    every = await api.channels(ChannelsRequest())
    assert every.channels[shared].num_clients == 2, f"channels lists {shared}: {every!r}"
    assert every.channels[own].num_clients == 1
    matched = await api.channels(ChannelsRequest(pattern=f"chat:{tag}-*"))
    assert {k: v.num_clients for k, v in matched.channels.items()} == {shared: 2, own: 1}
    one = await api.channels(ChannelsRequest(pattern=f"*{tag}-sh*"))
    assert {k: v.num_clients for k, v in one.channels.items()} == {shared: 2}

    info = await api.info(InfoRequest())
    assert len(info.nodes) == 1, f"one node: {info!r}"
    node = info.nodes[0]
    assert node.uid and node.name and node.version, f"uid, name, version set: {node!r}"
    assert node.num_clients >= 2 and node.num_users >= 2, f"counts the two clients: {node!r}"
    assert node.num_channels >= 2 and node.num_subs >= 3, f"counts the subscriptions: {node!r}"

    raw = raw_post(herald, "/api/info", {}).json()
    [raw_node] = raw["result"]["nodes"]
    for key in ("uid", "name", "version", "num_clients", "num_users", "num_channels", "num_subs"):
        assert key in raw_node, f"info node always carries {key!r}: {raw_node}"


# ---------------------------------------------------------------------------
# disconnect, refresh


@pytest.mark.anyio
async def test_disconnect_codes(sdk, api):
    # Default: 3503 "force disconnect", terminal.
    dan = await connected_client(sdk, "dan")
    since = dan.log.mark()
    await api.disconnect(DisconnectRequest(user=dan.user))
    d = await dan.log.wait_for("disconnected", since=since, what="API disconnect (default)")
    assert (d.code, d.reason) == (3503, "force disconnect"), f"got {d.code} {d.reason!r}"
    assert dan.client.state == ClientState.DISCONNECTED

    # Custom terminal code (4500-4999).
    eve = await connected_client(sdk, "eve")
    since = eve.log.mark()
    await api.disconnect(DisconnectRequest(user=eve.user, disconnect=Disconnect(code=4501, reason="banned")))
    d = await eve.log.wait_for("disconnected", since=since, what="API disconnect 4501")
    assert (d.code, d.reason) == (4501, "banned"), f"got {d.code} {d.reason!r}"

    # Custom reconnecting code (4000-4499): the SDK goes connecting, then reconnects.
    fay = await connected_client(sdk, "fay")
    since = fay.log.mark()
    await api.disconnect(DisconnectRequest(user=fay.user, disconnect=Disconnect(code=4001, reason="reload")))
    c = await fay.log.wait_for("connecting", since=since, what="API disconnect 4001")
    assert (c.code, c.reason) == (4001, "reload"), f"got {c.code} {c.reason!r}"
    await fay.log.wait_for("connected", since=since, what="reconnect after 4001")


@pytest.mark.anyio
async def test_disconnect_client_and_whitelist(sdk, api):
    g1 = await connected_client(sdk, "gus1")
    g2 = await connected_client(sdk, "gus2", user=g1.user)
    g3 = await connected_client(sdk, "gus3", user=g1.user)
    user, conns = g1.user, [g1, g2, g3]
    marks = [c.log.mark() for c in conns]

    await api.disconnect(DisconnectRequest(user=user, client=g3.id))
    d = await g3.log.wait_for("disconnected", since=marks[2], what="disconnect by client id")
    assert d.code == 3503
    await api.disconnect(DisconnectRequest(user=user, whitelist=[g1.id]))
    d = await g2.log.wait_for("disconnected", since=marks[1], what="disconnect with whitelist")
    assert d.code == 3503
    await quiet(g1.log, ("disconnected", "connecting"), marks[0], 0.3)
    assert g1.client.state == ClientState.CONNECTED, "the whitelisted client stays"


@pytest.mark.anyio
async def test_refresh(sdk, api):
    hal = await connected_client(sdk, "hal")

    # expired: disconnect now with 3005 (reconnecting; the token has no exp, so it comes back).
    since = hal.log.mark()
    await api.refresh(RefreshRequest(user=hal.user, expired=True))
    c = await hal.log.wait_for("connecting", since=since, what="refresh expired=true")
    assert c.code == 3005, f"connection expired 3005, got {c.code} {c.reason!r}"
    await hal.log.wait_for("connected", since=since, timeout=5, what="reconnect after 3005")

    # expire_at in a second: closed with 3005 after it plus expired_close_delay (1 s).
    since = hal.log.mark()
    await api.refresh(RefreshRequest(user=hal.user, expire_at=int(time.time()) + 1))
    c = await hal.log.wait_for("connecting", since=since, timeout=5, what="expiry set by refresh")
    assert c.code == 3005, f"connection expired 3005, got {c.code} {c.reason!r}"
    await hal.log.wait_for("connected", since=since, timeout=5, what="reconnect after expiry")

    # A later refresh replaces the near expiry: the connection lives on.
    since = hal.log.mark()
    await api.refresh(RefreshRequest(user=hal.user, expire_at=int(time.time()) + 1))
    await api.refresh(RefreshRequest(user=hal.user, expire_at=int(time.time()) + 3600))
    await quiet(hal.log, ("connecting", "disconnected"), since, 3.5)
    assert hal.client.state == ClientState.CONNECTED


# ---------------------------------------------------------------------------
# batch


@pytest.mark.anyio
async def test_batch_replies_in_order(sdk, api, herald):
    reader = await connected_client(sdk, "batch")
    channel = f"chat:{uniq('batch')}"
    s, _ = await subscribed(sdk, reader, channel)
    since = s.log.mark()
    res = await api.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel=channel, data={"b": 1}),
                PublishRequest(channel=channel, data={"b": 2}),
                PresenceStatsRequest(channel=channel),
                HistoryRequest(channel=channel, limit=10),
            ]
        )
    )
    p1, p2, stats, hist = res.replies
    assert (p1.offset, p2.offset) == (1, 2), f"publish replies in order: {res!r}"
    assert (stats.num_clients, stats.num_users) == (1, 1)
    assert [p.data for p in hist.publications] == [{"b": 1}, {"b": 2}]
    await s.log.wait_count("publication", 2, since=since)
    assert [c.pub.data for c in s.log.all("publication", since)] == [{"b": 1}, {"b": 2}]

    # One failing command: its reply is {"error":...} in its place (raw HTTP: cent 5.2.0's
    # batch parser cannot read error replies).
    for parallel in (False, True):
        body = {
            "commands": [
                {"publish": {"channel": channel, "data": {"b": "x"}}},
                {"publish": {"channel": f"undefined:{uniq('x')}", "data": {"b": "y"}}},
                {"history": {"channel": channel, "limit": 0}},
            ],
            "parallel": parallel,
        }
        r = raw_post(herald, "/api/batch", body)
        assert r.status_code == 200
        replies = r.json()["replies"]
        assert len(replies) == 3, f"parallel={parallel}: {r.text}"
        assert set(replies[0]) == {"publish"} and replies[0]["publish"]["offset"] >= 3, r.text
        assert replies[1] == {"error": {"code": 102, "message": "unknown channel"}}, r.text
        assert set(replies[2]) == {"history"}, r.text
        if not parallel:
            assert replies[2]["history"]["offset"] == replies[0]["publish"]["offset"], r.text


# ---------------------------------------------------------------------------
# Auth and HTTP-level errors


def test_unknown_namespace_is_102_with_sync_client(herald):
    with Client(api_url(herald), API_KEY, timeout=5) as api:
        with pytest.raises(CentApiResponseError) as e:
            api.publish(PublishRequest(channel="undefined:channel", data={"x": 1}))
        assert e.value.code == 102, f"{e.value!r}"
        with pytest.raises(CentApiResponseError) as e:
            api.history(HistoryRequest(channel="undefined:channel", limit=1))
        assert e.value.code == 102, f"{e.value!r}"
        assert api.presence_stats(PresenceStatsRequest(channel=f"chat:{uniq('nobody')}")).num_clients == 0


def test_wrong_key_is_401_with_empty_body(herald):
    with Client(api_url(herald), "not-the-key", timeout=5) as api:
        with pytest.raises(CentUnauthorizedError):
            api.publish(PublishRequest(channel="chat:x", data={"x": 1}))
        with pytest.raises(CentUnauthorizedError):
            api.info(InfoRequest())

    for headers in (
        {"X-API-Key": "not-the-key"},
        {"X-API-Key": ""},
        {"Authorization": "apikey not-the-key"},
        {"Authorization": f"bearer {API_KEY}"},
    ):
        r = requests.post(f"{herald.api_url}/api/info", data="{}", headers=headers, timeout=5)
        assert (r.status_code, r.content) == (401, b""), f"{headers}: {r.status_code} {r.content!r}"
    r = requests.post(f"{herald.api_url}/api/info", data="{}", timeout=5)
    assert (r.status_code, r.content) == (401, b""), f"no key: {r.status_code} {r.content!r}"

    # The other accepted form: Authorization: apikey <key> (scheme case-insensitive).
    for scheme in ("apikey", "APIKEY"):
        r = requests.post(
            f"{herald.api_url}/api/info", data="{}", headers={"Authorization": f"{scheme} {API_KEY}"}, timeout=5
        )
        assert r.status_code == 200 and "nodes" in r.json()["result"], f"{scheme}: {r.status_code} {r.text}"


def test_non_post_is_405(herald):
    for method in ("GET", "PUT", "DELETE"):
        for headers in ({"X-API-Key": API_KEY}, {}):  # checked before auth
            r = requests.request(method, f"{herald.api_url}/api/publish", headers=headers, timeout=5)
            assert r.status_code == 405, f"{method} {headers}: {r.status_code} {r.text!r}"


def test_legacy_post_api_is_404_pointing_to_per_method(herald):
    legacy = json.dumps({"method": "publish", "params": {"channel": "chat:x", "data": {}}})
    r = raw_post(herald, "/api", legacy)
    assert r.status_code == 404, f"{r.status_code} {r.text!r}"
    assert "/api/<method>" in r.text or "/api/publish" in r.text, f"body points to /api/<method>: {r.text!r}"

