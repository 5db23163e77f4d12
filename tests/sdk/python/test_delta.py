"""Delta compression (`delta=DeltaType.FOSSIL`, docs/protocol.md "Delta compression")
with the real centrifuge-python: herald's fossil encoder round-trips through the SDK's own
decoder (`centrifuge.fossil`) on a seeded random document stream, in the JSON and the
protobuf format, and recovery sends a chain whose first element is full."""

from __future__ import annotations

import json
import random
import secrets

import pytest
import requests

from centrifuge import DeltaType

from harness import connection_token, server_config, uniq, within

pytestmark = pytest.mark.anyio

API_KEY = f"api-key-{secrets.token_hex(16)}"
HISTORY = {"history_size": 1000, "history_ttl": "300s"}


@pytest.fixture(scope="module")
def herald_config():
    return server_config(
        {
            "http_api": {"key": API_KEY},
            "channel": {
                "namespaces": [
                    {
                        "name": "doc",
                        **HISTORY,
                        "force_recovery": True,
                        "allow_subscribe_for_client": True,
                        "allowed_delta_types": ["fossil"],
                    }
                ],
            },
        }
    )


def publish(herald, channel: str, data) -> None:
    r = requests.post(
        f"{herald.api_url}/api/publish",
        data=json.dumps({"channel": channel, "data": data, "delta": True}),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 200 and "error" not in r.json(), r.text


ALPHABET = list('abcdefghij KLMNOP 0123 {}[]":,\\\n\té日本€😀')


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def documents(seed: int, count: int) -> list:
    """A JSON document mutated `count` times: small edits mostly, and the edge cases
    (empty, identical, totally different up to ~10 KB)."""
    rng = random.Random(seed)
    text = random_text(rng, 2000)
    out = []
    for i in range(count):
        r = rng.random()
        at = rng.randint(0, len(text))
        if r < 0.04:
            text = ""
        elif r < 0.1:
            pass
        elif r < 0.14:
            text = random_text(rng, rng.randint(0, 10_000))
        elif r < 0.55:
            text = text[:at] + random_text(rng, rng.randint(1, 20)) + text[at:]
        elif r < 0.8:
            text = text[:at] + text[at + rng.randint(1, 30) :]
        else:
            n = rng.randint(1, 10)
            text = text[:at] + random_text(rng, n) + text[at + n :]
        out.append({"i": i, "text": text} if i % 2 else text)
    return out


async def connect(handle):
    since = handle.log.mark()
    await within(handle.client.connect(), 5, f"{handle.label} connect()")
    await handle.log.wait_for("connected", since=since, timeout=5, what="connect")


async def subscribe(s):
    since = s.log.mark()
    await within(s.sub.subscribe(), 5, "subscribe()")
    return await s.log.wait_for("subscribed", since=since, timeout=5, what="subscribe")


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_random_document_stream_decodes_through_the_sdk(sdk, herald, protobuf):
    channel = f"doc:{uniq('stream')}"
    c = sdk.client("delta", token=connection_token(uniq("d")), use_protobuf=protobuf)
    await connect(c)
    s = sdk.subscription(c, channel, delta=DeltaType.FOSSIL)
    await subscribe(s)
    assert s.sub._delta_negotiated, "the namespace allows fossil: the result says delta"
    docs = documents(0x5EED + int(protobuf), 250)
    for doc in docs:
        publish(herald, channel, doc)
    pubs = await s.log.wait_count("publication", len(docs), timeout=30)
    for i, (ctx, doc) in enumerate(zip(pubs, docs)):
        data = json.loads(ctx.pub.data) if protobuf else ctx.pub.data
        assert data == doc, f"publication {i}"
    deltas = [ctx.pub.delta for ctx in pubs]
    assert not deltas[0], "the first publication is the full payload"
    assert sum(deltas) > len(docs) // 2, f"most went as deltas: {sum(deltas)} of {len(docs)}"


async def test_recovery_chain_starts_full(sdk, herald):
    channel = f"doc:{uniq('recover')}"
    c = sdk.client("recovering", token=connection_token(uniq("r")))
    await connect(c)
    s = sdk.subscription(c, channel, delta=DeltaType.FOSSIL)
    await subscribe(s)
    docs = [{"i": i, "text": t if isinstance(t, str) else t["text"]} for i, t in enumerate(documents(99, 30))]
    for doc in docs[:5]:
        publish(herald, channel, doc)
    await s.log.wait_count("publication", 5, timeout=10)
    await within(c.client.disconnect(), 5, "disconnect")
    for doc in docs[5:25]:
        publish(herald, channel, doc)
    since = s.log.mark()
    await connect(c)
    subscribed = await s.log.wait_for("subscribed", since=since, timeout=10, what="resubscribe")
    assert subscribed.was_recovering and subscribed.recovered
    for doc in docs[25:]:
        publish(herald, channel, doc)
    pubs = await s.log.wait_count("publication", len(docs), timeout=10)
    assert [ctx.pub.data for ctx in pubs] == docs
    recovered = [ctx.pub for ctx in pubs[5:25]]
    assert not recovered[0].delta, "the recovered chain starts with the full payload"
    assert any(p.delta for p in recovered[1:]), "then deltas"
    assert any(ctx.pub.delta for ctx in pubs[25:]), "live deltas go on from the last recovered"
