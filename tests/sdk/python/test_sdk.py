"""herald against the real centrifuge-python SDK: core flow, recovery, invalid token."""

from __future__ import annotations

import asyncio

import pytest

from centrifuge import ClientState, SubscriptionState

from harness import connection_token, server_config, uniq, within

pytestmark = pytest.mark.anyio

HISTORY = {"history_size": 100, "history_ttl": "300s"}


@pytest.fixture(scope="module")
def herald_config():
    return server_config(
        {
            # Short pings: the SDK must answer them (pong) for the connection to live.
            "client": {"ping_interval": "2s", "pong_timeout": "1s", "presence_update_interval": "1s"},
            "channel": {
                "without_namespace": {
                    "presence": True,
                    **HISTORY,
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_client": True,
                    "allow_presence_for_client": True,
                    "allow_history_for_client": True,
                },
                "namespaces": [
                    {
                        "name": "stream",
                        **HISTORY,
                        "force_recovery": True,
                        "allow_subscribe_for_client": True,
                        "allow_publish_for_client": True,
                    }
                ],
            },
        }
    )


async def connect(handle, timeout: float = 5.0):
    since = handle.log.mark()
    await within(handle.client.connect(), timeout, f"{handle.label} connect()")
    return await handle.log.wait_for("connected", since=since, timeout=timeout, what="connect")


async def subscribe(sub_handle, timeout: float = 5.0):
    since = sub_handle.log.mark()
    await within(sub_handle.sub.subscribe(), timeout, "subscribe()")
    return await sub_handle.log.wait_for("subscribed", since=since, timeout=timeout, what="subscribe")


async def test_connect_subscribe_publish_presence_history(sdk):
    user = uniq("alice")
    info = {"name": "Alice"}
    alice = sdk.client("alice", token=connection_token(user, info=info))
    connected = await connect(alice)
    assert connected.client, "the connect reply carries a client id"

    channel = uniq("general")
    s = sdk.subscription(alice, channel)
    await subscribe(s)

    data = {"text": "hello", "n": 1}
    since = s.log.mark()
    await within(s.sub.publish(data), 5, "publish reply")
    pub = (await s.log.wait_for("publication", since=since, what="own publication")).pub
    assert pub.data == data
    assert pub.info is not None, "a client publication carries the publisher info"
    assert pub.info.user == user
    assert pub.info.client == connected.client
    assert pub.info.conn_info == info
    assert pub.offset > 0, "history channel publication has an offset"

    presence = await within(s.sub.presence(), 5, "presence reply")
    assert list(presence.clients) == [connected.client], "presence lists exactly this client"
    me = presence.clients[connected.client]
    assert (me.client, me.user, me.conn_info) == (connected.client, user, info)

    stats = await within(s.sub.presence_stats(), 5, "presence_stats reply")
    assert (stats.num_clients, stats.num_users) == (1, 1)

    hist = await within(s.sub.history(limit=10), 5, "history reply")
    assert [p.data for p in hist.publications] == [data]
    assert hist.publications[0].offset == pub.offset
    assert hist.publications[0].info is not None and hist.publications[0].info.user == user
    assert hist.offset == pub.offset, "stream top is the last offset"
    assert isinstance(hist.epoch, str) and hist.epoch, "history has an epoch"


async def test_recovery_after_reconnect(sdk):
    channel = f"stream:{uniq('feed')}"
    reader = sdk.client("reader", token=connection_token(uniq("reader")))
    writer = sdk.client("writer", token=connection_token(uniq("writer")))
    await connect(reader)
    await connect(writer)

    s = sdk.subscription(reader, channel)
    first = await subscribe(s)
    assert first.recoverable, "force_recovery makes the subscription recoverable"

    since = s.log.mark()
    await within(writer.client.publish(channel, {"n": 0}), 5, "publish n=0")
    p0 = (await s.log.wait_for("publication", since=since, what="live n=0")).pub
    assert p0.data == {"n": 0}

    down = reader.log.mark()
    await within(reader.client.disconnect(), 5, "disconnect()")
    await reader.log.wait_for("disconnected", since=down, what="disconnect()")
    assert s.sub.state == SubscriptionState.SUBSCRIBING, "the SDK keeps the subscription"

    for n in range(1, 6):
        await within(writer.client.publish(channel, {"n": n}), 5, f"publish n={n}")

    since = s.log.mark()
    await within(reader.client.connect(), 10, "reconnect")
    again = await s.log.wait_for("subscribed", since=since, timeout=10, what="resubscribe")
    assert again.was_recovering, "the SDK resubscribed with recover"
    assert again.recovered, "subscribed context: recovered"

    await s.log.wait_count("publication", 5, since=since)
    await asyncio.sleep(0.3)  # nothing more may arrive
    recovered = [ctx.pub for ctx in s.log.all("publication", since)]
    assert [p.data for p in recovered] == [{"n": n} for n in range(1, 6)], "missed ones, in order, once"
    assert [p.offset for p in recovered] == [p0.offset + i for i in range(1, 6)]

    since = s.log.mark()
    await within(writer.client.publish(channel, {"n": 6}), 5, "publish n=6")
    p6 = (await s.log.wait_for("publication", since=since, what="live after recovery")).pub
    assert (p6.data, p6.offset) == ({"n": 6}, p0.offset + 6)


async def test_invalid_token_is_terminal_3500(sdk):
    bad = connection_token(uniq("mallory"), secret="not-the-server-secret-but-32-bytes-long")
    h = sdk.client("mallory", token=bad)
    since = h.log.mark()
    await within(h.client.connect(), 10, "connect attempt")
    d = await h.log.wait_for("disconnected", since=since, what="terminal disconnect")
    assert d.code == 3500, f"disconnected with 3500 (invalid token), got {d.code} {d.reason}"

    mark = h.log.mark()
    await asyncio.sleep(2)
    assert h.log.all("connecting", mark) == [], "no reconnect attempt"
    assert h.log.all("connected", since) == [], "never connected"
    assert h.client.state == ClientState.DISCONNECTED
