"""Fixtures of the centrifuge-python suite: one herald per test module, SDK clients
disconnected after every test, herald's logs and the recorded SDK events attached to
every failure report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest

from centrifuge import Client, Subscription

from harness import (
    EventLog,
    Herald,
    RecordingClientEvents,
    RecordingSubscriptionEvents,
    within,
)

# The SDK logs every frame at DEBUG (shown on failure); websockets' own DEBUG is noise.
logging.getLogger("websockets").setLevel(logging.INFO)


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def herald(request, herald_config):
    """The module's herald; each test module defines a `herald_config` fixture."""
    try:
        server = Herald(herald_config, label=f"herald ({request.module.__name__})")
        failure = None
    except RuntimeError as e:
        failure = str(e)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    yield server
    server.stop()


@dataclass
class ClientHandle:
    client: Client
    log: EventLog
    label: str
    subs: list = field(default_factory=list)


@dataclass
class SubHandle:
    sub: Subscription
    log: EventLog


class Sdk:
    """Builds tracked SDK clients against the module's herald."""

    def __init__(self, server: Herald) -> None:
        self.server = server
        self.clients: list[ClientHandle] = []

    def client(self, label: str = "client", **options: Any) -> ClientHandle:
        log = EventLog(label)
        options.setdefault("min_reconnect_delay", 0.2)
        options.setdefault("max_reconnect_delay", 1.0)
        client = Client(self.server.ws_url, events=RecordingClientEvents(log), **options)
        handle = ClientHandle(client, log, label)
        self.clients.append(handle)
        return handle

    def subscription(self, handle: ClientHandle, channel: str, **options: Any) -> SubHandle:
        log = EventLog(f"{handle.label} sub {channel}")
        sub = handle.client.new_subscription(
            channel, events=RecordingSubscriptionEvents(log), **options
        )
        handle.subs.append(log)
        return SubHandle(sub, log)

    async def close(self) -> None:
        for h in self.clients:
            try:
                await within(h.client.disconnect(), 5, f"{h.label} disconnect")
            except Exception:  # noqa: BLE001 - cleanup goes on for the others
                pass

    def summary(self) -> str:
        parts = []
        for h in self.clients:
            parts.append(f"--- {h.label}: events ---\n{h.log.summary()}")
            for s in h.subs:
                parts.append(f"--- {s.label}: events ---\n{s.summary()}")
        return "\n".join(parts)


@pytest.fixture
async def sdk(request, herald):
    tracker = Sdk(herald)
    request.node._herald_sdk = tracker
    yield tracker
    await tracker.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tracker: Optional[Sdk] = getattr(item, "_herald_sdk", None)
    if tracker is not None:
        report.sections.append(("SDK events", tracker.summary()))
    server: Optional[Herald] = item.funcargs.get("herald")
    if server is not None:
        report.sections.append(("herald logs (tail)", server.logs(tail=150)))
