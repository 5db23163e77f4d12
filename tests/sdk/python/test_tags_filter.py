"""Publication filtering by tags with the real centrifuge-python SDK and its `Filter`
builder (`tags_filter=`), JSON and protobuf: live and recovered publications reach
a filtered subscriber only when their tags match, tags arrive with publications,
and a filter where the namespace does not allow one is refused with 107.
Publications with tags come from the server API through the real `cent` client."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from cent import AsyncClient, PublishRequest
from centrifuge.filter import Filter

from harness import connection_token, server_config, uniq, within

pytestmark = pytest.mark.anyio

API_KEY = f"api-key-{secrets.token_hex(16)}"
HISTORY = {"history_size": 100, "history_ttl": "300s"}


@pytest.fixture(scope="module")
def herald_config():
    return server_config(
        {
            "http_api": {"key": API_KEY},
            "channel": {
                "namespaces": [
                    {
                        "name": "match",
                        **HISTORY,
                        "force_recovery": True,
                        "allow_subscribe_for_client": True,
                        "allow_tags_filter": True,
                    },
                    {
                        "name": "plain",
                        **HISTORY,
                        "force_recovery": True,
                        "allow_subscribe_for_client": True,
                    },
                ]
            },
        }
    )


@pytest.fixture
async def api(herald):
    client = AsyncClient(f"{herald.api_url}/api", API_KEY, timeout=5)
    yield client
    await client.close()


# Goals, and shots with an expected-goals value of at least 0.8.
GOALS_AND_GOOD_SHOTS = Filter.any(
    Filter.eq("event", "goal"),
    Filter.all(Filter.eq("event", "shot"), Filter.gte("xg", "0.8")),
)

# (data, tags, passes GOALS_AND_GOOD_SHOTS)
MATCH = [
    ({"n": 1}, {"event": "goal", "team": "home"}, True),
    ({"n": 2}, {"event": "shot", "xg": "0.35"}, False),
    ({"n": 3}, {"event": "corner"}, False),
    ({"n": 4}, {"event": "shot", "xg": "0.85"}, True),
    ({"n": 5}, {"event": "shot", "xg": "high"}, False),
    ({"n": 6}, {"event": "goal", "team": "away"}, True),
]


def decoded(data, protobuf: bool):
    # In protobuf mode the SDK hands publication data back as bytes.
    return json.loads(data) if protobuf else data


async def connect(handle):
    since = handle.log.mark()
    await within(handle.client.connect(), 5, f"{handle.label} connect()")
    return await handle.log.wait_for("connected", since=since, what="connect")


async def subscribe(s):
    since = s.log.mark()
    await within(s.sub.subscribe(), 5, "subscribe()")
    return await s.log.wait_for("subscribed", since=since, what="subscribe")


async def publish_all(api, channel, events=MATCH):
    for data, tags, _ in events:
        await api.publish(PublishRequest(channel=channel, data=data, tags=tags))


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_live_publications_are_filtered_and_carry_tags(sdk, api, protobuf):
    channel = f"match:{uniq('live')}"
    fan = sdk.client("fan", token=connection_token(uniq("fan")), use_protobuf=protobuf)
    everyone = sdk.client("all", token=connection_token(uniq("all")), use_protobuf=protobuf)
    await connect(fan)
    await connect(everyone)
    filtered = sdk.subscription(fan, channel, tags_filter=GOALS_AND_GOOD_SHOTS)
    unfiltered = sdk.subscription(everyone, channel)
    await subscribe(filtered)
    await subscribe(unfiltered)

    since_f, since_u = filtered.log.mark(), unfiltered.log.mark()
    await publish_all(api, channel)

    want = [(d, t) for d, t, passes in MATCH if passes]
    await filtered.log.wait_count("publication", len(want), since=since_f)
    await unfiltered.log.wait_count("publication", len(MATCH), since=since_u)
    await asyncio.sleep(0.3)  # nothing more may arrive
    got = [ctx.pub for ctx in filtered.log.all("publication", since_f)]
    assert [decoded(p.data, protobuf) for p in got] == [d for d, _ in want], "only matching, in order"
    assert [p.tags for p in got] == [t for _, t in want], "with their tags"
    every = [ctx.pub for ctx in unfiltered.log.all("publication", since_u)]
    assert [p.tags for p in every] == [t for _, t, _ in MATCH], "tags arrive with every publication"


async def test_recovery_returns_only_matching_missed_publications(sdk, api):
    channel = f"match:{uniq('recover')}"
    fan = sdk.client("fan", token=connection_token(uniq("fan")))
    await connect(fan)
    s = sdk.subscription(fan, channel, tags_filter=GOALS_AND_GOOD_SHOTS)
    first = await subscribe(s)
    assert first.recoverable

    since = s.log.mark()
    await api.publish(PublishRequest(channel=channel, data={"n": 0}, tags={"event": "goal"}))
    p0 = (await s.log.wait_for("publication", since=since, what="n=0")).pub

    down = fan.log.mark()
    await within(fan.client.disconnect(), 5, "disconnect()")
    await fan.log.wait_for("disconnected", since=down, what="disconnect()")
    await publish_all(api, channel)

    since = s.log.mark()
    await within(fan.client.connect(), 10, "reconnect")
    again = await s.log.wait_for("subscribed", since=since, timeout=10, what="resubscribe")
    assert again.was_recovering and again.recovered, "recovered"

    want = [(p0.offset + 1 + i, d) for i, (d, _, passes) in enumerate(MATCH) if passes]
    await s.log.wait_count("publication", len(want), since=since)
    await asyncio.sleep(0.3)
    recovered = [ctx.pub for ctx in s.log.all("publication", since)]
    assert [(p.offset, p.data) for p in recovered] == want, "matching missed ones, in order, once"

    # Live again after a held-back one, with no gap.
    since = s.log.mark()
    await api.publish(PublishRequest(channel=channel, data={"n": "c"}, tags={"event": "corner"}))
    await api.publish(PublishRequest(channel=channel, data={"n": "g"}, tags={"event": "goal"}))
    late = (await s.log.wait_for("publication", since=since, what="live after recovery")).pub
    assert (late.data, late.offset) == ({"n": "g"}, p0.offset + len(MATCH) + 2)


async def test_filter_where_not_allowed_is_107(sdk):
    fan = sdk.client("fan", token=connection_token(uniq("fan")))
    await connect(fan)
    s = sdk.subscription(fan, f"plain:{uniq('x')}", tags_filter=Filter.eq("event", "goal"))
    since = s.log.mark()
    await within(s.sub.subscribe(), 5, "subscribe()")
    ctx = await s.log.wait_for("unsubscribed", since=since, what="107")
    assert ctx.code == 107, ctx
