"""herald against the real centrifuge-python SDK in protobuf mode (subprotocol
`centrifuge-protobuf`): core flow, recovery, non-JSON payloads refused with 107, JSON and
protobuf clients sharing a channel.

In protobuf mode the SDK takes payloads as bytes and hands publication data (and
conn_info) back as bytes: herald carries JSON payloads only, so the bytes are JSON."""

from __future__ import annotations

import asyncio
import json

import pytest

from centrifuge import ClientState, SubscriptionState
from centrifuge.exceptions import ReplyError

from harness import connection_token, uniq, within

# The JSON suite's server (short pings, the `stream` namespace with forced recovery)
# and its connect/subscribe helpers: the same scenarios, in the other format.
from test_sdk import connect, herald_config, subscribe  # noqa: F401 (herald_config is a fixture)

pytestmark = pytest.mark.anyio


def enc(value) -> bytes:
    return json.dumps(value).encode()


def pb_client(sdk, label: str, **options):
    return sdk.client(label, use_protobuf=True, **options)


async def test_protobuf_connect_subscribe_publish_presence_history(sdk):
    user = uniq("alice")
    info = {"name": "Alice"}
    alice = pb_client(sdk, "alice-pb", token=connection_token(user, info=info))
    connected = await connect(alice)
    assert connected.client, "the connect reply carries a client id"

    channel = uniq("general")
    s = sdk.subscription(alice, channel)
    await subscribe(s)

    payload = enc({"text": "hello", "n": 1})
    since = s.log.mark()
    await within(s.sub.publish(payload), 5, "publish reply")
    pub = (await s.log.wait_for("publication", since=since, what="own publication")).pub
    assert isinstance(pub.data, bytes), f"protobuf publication data is bytes, got {type(pub.data)}"
    assert pub.data == payload, "the publication carries exactly the bytes published"
    assert pub.info is not None, "a client publication carries the publisher info"
    assert pub.info.user == user
    assert pub.info.client == connected.client
    assert isinstance(pub.info.conn_info, bytes), "conn_info is bytes in protobuf mode"
    assert json.loads(pub.info.conn_info) == info
    assert pub.offset > 0, "history channel publication has an offset"

    presence = await within(s.sub.presence(), 5, "presence reply")
    assert list(presence.clients) == [connected.client], "presence lists exactly this client"
    me = presence.clients[connected.client]
    assert (me.client, me.user) == (connected.client, user)
    assert json.loads(me.conn_info) == info

    stats = await within(s.sub.presence_stats(), 5, "presence_stats reply")
    assert (stats.num_clients, stats.num_users) == (1, 1)

    hist = await within(s.sub.history(limit=10), 5, "history reply")
    assert [p.data for p in hist.publications] == [payload]
    assert hist.publications[0].offset == pub.offset
    assert hist.publications[0].info is not None and hist.publications[0].info.user == user
    assert hist.offset == pub.offset, "stream top is the last offset"
    assert isinstance(hist.epoch, str) and hist.epoch, "history has an epoch"


async def test_protobuf_recovery_after_reconnect(sdk):
    channel = f"stream:{uniq('feed')}"
    reader = pb_client(sdk, "reader-pb", token=connection_token(uniq("reader")))
    writer = pb_client(sdk, "writer-pb", token=connection_token(uniq("writer")))
    await connect(reader)
    await connect(writer)

    s = sdk.subscription(reader, channel)
    first = await subscribe(s)
    assert first.recoverable, "force_recovery makes the subscription recoverable"

    since = s.log.mark()
    await within(writer.client.publish(channel, enc({"n": 0})), 5, "publish n=0")
    p0 = (await s.log.wait_for("publication", since=since, what="live n=0")).pub
    assert p0.data == enc({"n": 0})
    assert p0.offset > 0

    down = reader.log.mark()
    await within(reader.client.disconnect(), 5, "disconnect()")
    await reader.log.wait_for("disconnected", since=down, what="disconnect()")
    assert s.sub.state == SubscriptionState.SUBSCRIBING, "the SDK keeps the subscription"

    for n in range(1, 6):
        await within(writer.client.publish(channel, enc({"n": n})), 5, f"publish n={n}")

    since = s.log.mark()
    await within(reader.client.connect(), 10, "reconnect")
    again = await s.log.wait_for("subscribed", since=since, timeout=10, what="resubscribe")
    assert again.was_recovering, "the SDK resubscribed with recover"
    assert again.recovered, "subscribed context: recovered"

    await s.log.wait_count("publication", 5, since=since)
    await asyncio.sleep(0.3)  # nothing more may arrive
    recovered = [ctx.pub for ctx in s.log.all("publication", since)]
    assert [p.data for p in recovered] == [enc({"n": n}) for n in range(1, 6)], (
        "missed ones, in order, once, as the bytes published"
    )
    assert [p.offset for p in recovered] == [p0.offset + i for i in range(1, 6)]

    since = s.log.mark()
    await within(writer.client.publish(channel, enc({"n": 6})), 5, "publish n=6")
    p6 = (await s.log.wait_for("publication", since=since, what="live after recovery")).pub
    assert (p6.data, p6.offset) == (enc({"n": 6}), p0.offset + 6)


async def test_protobuf_non_json_publish_is_refused_107_and_connection_lives(sdk):
    h = pb_client(sdk, "binary-pb", token=connection_token(uniq("bob")))
    await connect(h)
    channel = uniq("binary")
    s = sdk.subscription(h, channel)
    await subscribe(s)

    down = h.log.mark()
    since = s.log.mark()
    with pytest.raises(ReplyError) as refused:
        await within(s.sub.publish(b"\x01\x02"), 5, "non-JSON publish reply")
    assert refused.value.code == 107, f"refused with 107 (bad request), got {refused.value}"

    # The refusal is a reply error, not a disconnect: the same connection goes on.
    valid = enc({"ok": True})
    await within(s.sub.publish(valid), 5, "valid publish reply after the refusal")
    pub = (await s.log.wait_for("publication", since=since, what="valid publication")).pub
    assert pub.data == valid, "the refused payload was never delivered; the valid one is"
    await asyncio.sleep(0.3)
    assert [ctx.pub.data for ctx in s.log.all("publication", since)] == [valid]
    assert h.client.state == ClientState.CONNECTED
    assert s.sub.state == SubscriptionState.SUBSCRIBED
    assert h.log.all("disconnected", down) == [], "no disconnect"
    assert h.log.all("connecting", down) == [], "no reconnect"

    hist = await within(s.sub.history(limit=10), 5, "history reply")
    assert [p.data for p in hist.publications] == [valid], "history holds only the valid one"


async def test_json_and_protobuf_clients_share_a_channel(sdk):
    channel = uniq("mixed")
    j = sdk.client("json", token=connection_token(uniq("jane")))
    p = pb_client(sdk, "protobuf", token=connection_token(uniq("pete")))
    await connect(j)
    await connect(p)
    js = sdk.subscription(j, channel)
    ps = sdk.subscription(p, channel)
    await subscribe(js)
    await subscribe(ps)

    from_json = {"from": "json", "text": "héllo", "list": [1, 2.5, None, True]}
    from_pb = {"from": "protobuf", "nested": {"k": "v"}, "n": 7}
    j_since, p_since = js.log.mark(), ps.log.mark()
    await within(js.sub.publish(from_json), 5, "JSON client publish")
    await within(ps.sub.publish(enc(from_pb)), 5, "protobuf client publish")

    j_pubs = [c.pub for c in await js.log.wait_count("publication", 2, since=j_since)]
    p_pubs = [c.pub for c in await ps.log.wait_count("publication", 2, since=p_since)]
    await asyncio.sleep(0.3)  # nothing more may arrive
    assert len(js.log.all("publication", j_since)) == 2
    assert len(ps.log.all("publication", p_since)) == 2

    assert [pub.data for pub in j_pubs] == [from_json, from_pb], "JSON client: parsed, in order"
    assert all(isinstance(pub.data, bytes) for pub in p_pubs), "protobuf client: bytes"
    assert [json.loads(pub.data) for pub in p_pubs] == [from_json, from_pb], (
        "protobuf client: the same JSON, in order"
    )
    assert [pub.offset for pub in j_pubs] == [pub.offset for pub in p_pubs], "same offsets"
    assert j_pubs[1].offset == j_pubs[0].offset + 1
    assert [pub.info.client for pub in j_pubs] == [pub.info.client for pub in p_pubs]
