"""herald's unidirectional gRPC transport (`uni_grpc`) driven by a real grpcio client.

The client stubs are generated at test time from herald's own proto file
(crates/protocol/proto/unistream.proto) with grpcio-tools' bundled protoc, so the test
speaks exactly the schema herald ships:
`centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume(ConnectRequest) returns
(stream Push)`.

Covered (docs/protocol.md, "Unidirectional transports"): the `uni_grpc=127.0.0.1:PORT`
ready line; the connect push with the token's server-side subscription (recoverable,
epoch, offset); API publications as `Push{channel, pub}`; recovery of a missed
publication through `ConnectRequest.subs` (exactly once), and a failed recovery (another
epoch); a bad token as a disconnect
push 3500 and then the end of the stream; a server API disconnect (3503) and a shutdown
(3001) likewise; TLS with a test CA.

Every stream read has its own deadline (a reader thread feeds a queue), every call has
an overall deadline, and a failed assertion shows every push received so far and the
gRPC status; the conftest hook adds herald's log tail."""

from __future__ import annotations

import json
import queue
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import grpc
import pytest
import requests

from harness import (
    REPO_ROOT,
    GrpcStubs,
    Herald,
    generate_grpc_stubs,
    ready_line_addr,
    server_config,
    sign_hs256,
    uniq,
)

PROTO = REPO_ROOT / "crates" / "protocol" / "proto" / "unistream.proto"
API_KEY = f"api-key-{secrets.token_hex(16)}"
NS = "uni"
HISTORY = {"history_size": 100, "history_ttl": "300s"}

# Loopback only: never through an http_proxy/grpc_proxy of the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
READ_TIMEOUT_S = 5.0  # one push
CALL_TIMEOUT_S = 15.0  # the whole stream


def uni_config(extra: Optional[dict] = None) -> dict:
    base = server_config(
        {
            "http_api": {"key": API_KEY},
            "uni_grpc": {"enabled": True, "address": "127.0.0.1", "port": 0},
            "channel": {
                "namespaces": [{"name": NS, **HISTORY, "force_recovery": True}],
            },
        }
    )
    if extra:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                base[k] = {**base[k], **v}
            else:
                base[k] = v
    return base


@pytest.fixture(scope="module")
def herald_config():
    return uni_config()


# ---------------------------------------------------------------------------
# Stubs generated at test time


Stubs = GrpcStubs


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Stubs:
    return generate_grpc_stubs(PROTO, tmp_path_factory.mktemp("unistream_stubs"))


# ---------------------------------------------------------------------------
# Helpers


def uni_grpc_addr(server: Herald) -> str:
    """The `uni_grpc=127.0.0.1:PORT` address of the ready line (stdout)."""
    return ready_line_addr(server, "uni_grpc")


def uni_token(user: str, channels: list[str], **claims: Any) -> str:
    return sign_hs256({"sub": user, "channels": channels, **claims})


def api(server: Herald, method: str, body: dict) -> dict:
    r = requests.post(
        f"{server.api_url}/api/{method}",
        data=json.dumps(body),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 200, f"POST /api/{method} {body!r}: HTTP {r.status_code} {r.text!r}"
    reply = r.json()
    assert "error" not in reply, f"POST /api/{method} {body!r}: {reply!r}"
    return reply.get("result", {})


def publish(server: Herald, channel: str, data: Any) -> dict:
    return api(server, "publish", {"channel": channel, "data": data})


def short(msg: Any) -> str:
    """A one-line text form of a protobuf message (bytes fields as JSON text where they are)."""
    from google.protobuf import text_format

    text = text_format.MessageToString(msg, as_one_line=True, as_utf8=True)
    return "{" + text + "}" if text else "{} (ping)"


_END = object()


class UniStream:
    """One Consume call: a reader thread puts each Push (or the end / the error) in a
    queue, so every read has a deadline and a wrong server never hangs the suite."""

    def __init__(self, stub: Any, request: Any, label: str, timeout: float = CALL_TIMEOUT_S) -> None:
        self.label = label
        self.received: list[Any] = []
        self.ended = False
        self.error: Optional[grpc.RpcError] = None
        self._q: "queue.Queue[Any]" = queue.Queue()
        self.call = stub.Consume(request, timeout=timeout, wait_for_ready=False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for push in self.call:
                self._q.put(push)
            self._q.put(_END)
        except grpc.RpcError as e:  # also what cancel() ends in
            self._q.put(e)
        except Exception as e:  # noqa: BLE001 - reported by the reading side
            self._q.put(e)

    def status(self) -> str:
        if self.error is not None:
            return f"gRPC error {self.error.code()} {self.error.details()!r}"
        if self.ended:
            try:
                return f"ended, status {self.call.code()} {self.call.details()!r}"
            except Exception:  # noqa: BLE001
                return "ended"
        return "open"

    def summary(self) -> str:
        pushes = "\n".join(f"  #{i} {short(p)}" for i, p in enumerate(self.received)) or "  (none)"
        return f"[{self.label}] pushes received:\n{pushes}\n[{self.label}] stream: {self.status()}"

    def _take(self, timeout: float, what: str) -> Any:
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.summary()}") from None
        if item is _END:
            self.ended = True
        elif isinstance(item, grpc.RpcError):
            self.error = item
        elif isinstance(item, Exception):
            raise AssertionError(f"reading the stream failed: {item!r}\n{self.summary()}")
        else:
            self.received.append(item)
        return item

    def next_push(self, what: str, timeout: float = READ_TIMEOUT_S, skip_pings: bool = True) -> Any:
        """The next push (pings skipped); fails when the stream ends or errors first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.summary()}")
            item = self._take(left, what)
            if item is _END or isinstance(item, grpc.RpcError):
                raise AssertionError(f"the stream ended while waiting for {what}\n{self.summary()}")
            if skip_pings and item.ByteSize() == 0:
                continue
            return item

    def expect_end(self, what: str, timeout: float = READ_TIMEOUT_S) -> None:
        """The stream ends cleanly (status OK) with no further push but pings."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.summary()}")
            item = self._take(left, what)
            if item is _END:
                code = self.call.code()
                assert code == grpc.StatusCode.OK, f"{what}: status {code}\n{self.summary()}"
                return
            if isinstance(item, grpc.RpcError):
                raise AssertionError(f"{what}: the stream failed instead of ending\n{self.summary()}")
            if item.ByteSize() != 0:
                raise AssertionError(f"{what}: another push came instead\n{self.summary()}")

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(2)


@pytest.fixture
def streams():
    opened: list[UniStream] = []
    yield opened
    for s in opened:
        s.close()


def consume(stubs: Stubs, channel_: grpc.Channel, streams: list, label: str, **request: Any) -> UniStream:
    stub = stubs.grpc.CentrifugoUniStreamStub(channel_)
    s = UniStream(stub, stubs.pb.ConnectRequest(**request), label)
    streams.append(s)
    return s


@pytest.fixture
def chan(herald):
    ch = grpc.insecure_channel(uni_grpc_addr(herald), options=CHANNEL_OPTIONS)
    yield ch
    ch.close()


def expect_connect(s: UniStream, channel: str) -> Any:
    push = s.next_push("the connect push")
    assert push.HasField("connect"), f"the first push is the connect push\n{s.summary()}"
    c = push.connect
    assert c.client, f"the connect push carries a client id\n{s.summary()}"
    assert c.ping > 0, f"the connect push carries the ping interval\n{s.summary()}"
    assert channel in c.subs, f"connect.subs holds the token's channel {channel!r}\n{s.summary()}"
    return push


def data_of(pub: Any) -> Any:
    return json.loads(pub.data)


# ---------------------------------------------------------------------------
# Tests


def test_ready_line_and_stubs(herald, stubs):
    addr = uni_grpc_addr(herald)
    assert addr.startswith("127.0.0.1:")
    descriptor = stubs.pb.DESCRIPTOR.services_by_name["CentrifugoUniStream"]
    assert descriptor.full_name == "centrifugal.centrifugo.unistream.CentrifugoUniStream"


def test_connect_push_then_api_publication(herald, stubs, chan, streams):
    channel = f"{NS}:{uniq('feed')}"
    user = uniq("uni-alice")
    s = consume(stubs, chan, streams, "alice", token=uni_token(user, [channel]))

    connect = expect_connect(s, channel)
    assert connect.channel == "", f"the connect push has no channel\n{s.summary()}"
    sub = connect.connect.subs[channel]
    assert sub.recoverable, f"force_recovery: the subscription is recoverable\n{s.summary()}"
    assert sub.epoch, f"a history channel has an epoch\n{s.summary()}"
    assert sub.positioned, f"a recoverable subscription is positioned\n{s.summary()}"
    assert sub.offset == 0, f"a fresh channel's stream top is 0\n{s.summary()}"

    res = publish(herald, channel, {"text": "hello", "n": 1})
    assert res.get("offset") == 1 and res.get("epoch") == sub.epoch, f"publish result {res!r}, connect {short(connect)}"

    push = s.next_push("the API publication")
    assert push.channel == channel and push.HasField("pub"), f"a pub push on {channel}\n{s.summary()}"
    assert data_of(push.pub) == {"text": "hello", "n": 1}, f"data is the published JSON\n{s.summary()}"
    assert push.pub.offset == 1, f"the publication's offset\n{s.summary()}"

    # A second one, in order; a publication elsewhere does not arrive.
    publish(herald, f"{NS}:{uniq('other')}", {"elsewhere": True})
    publish(herald, channel, {"n": 2})
    push = s.next_push("the second API publication")
    assert (push.channel, data_of(push.pub), push.pub.offset) == (channel, {"n": 2}, 2), s.summary()


def test_recovery_on_reconnect(herald, stubs, chan, streams):
    channel = f"{NS}:{uniq('feed')}"
    user = uniq("uni-bob")
    token = uni_token(user, [channel])

    first = consume(stubs, chan, streams, "bob-1", token=token)
    epoch = expect_connect(first, channel).connect.subs[channel].epoch
    publish(herald, channel, {"n": 1})
    p1 = first.next_push("publication 1")
    assert p1.channel == channel and data_of(p1.pub) == {"n": 1}, first.summary()
    last = p1.pub.offset
    first.close()

    missed = publish(herald, channel, {"n": 2})
    assert missed.get("offset") == last + 1, f"publish result {missed!r}"

    second = consume(
        stubs, chan, streams, "bob-2", token=token,
        subs={channel: stubs.pb.SubscribeRequest(recover=True, offset=last, epoch=epoch)},
    )
    connect = expect_connect(second, channel)
    sub = connect.connect.subs[channel]
    assert sub.was_recovering, f"subs[{channel}].was_recovering\n{second.summary()}"
    assert sub.recovered, f"subs[{channel}].recovered\n{second.summary()}"
    assert sub.epoch == epoch, f"same epoch\n{second.summary()}"
    # docs/protocol.md: a recovered result's offset is the requested one (as Centrifugo).
    assert sub.offset == last, f"a recovered result carries the requested offset\n{second.summary()}"

    # A live one after the reconnect bounds the wait: everything recovered comes before it.
    publish(herald, channel, {"n": 3})
    pubs = [(p.offset, data_of(p)) for p in sub.publications]
    while True:
        push = second.next_push("publication 3 (live after recovery)")
        if push.HasField("pub"):
            assert push.channel == channel, second.summary()
            pubs.append((push.pub.offset, data_of(push.pub)))
            if data_of(push.pub) == {"n": 3}:
                break
    assert pubs == [(last + 1, {"n": 2}), (last + 2, {"n": 3})], (
        f"the missed publication exactly once (in connect.subs[ch].publications or as a pub push), "
        f"then the live one: got {pubs}\n{second.summary()}"
    )


def test_failed_recovery_wrong_epoch(herald, stubs, chan, streams):
    channel = f"{NS}:{uniq('feed')}"
    token = uni_token(uniq("uni-carl"), [channel])
    top = publish(herald, channel, {"n": 1})
    publish(herald, channel, {"n": 2})
    s = consume(
        stubs, chan, streams, "carl", token=token,
        subs={channel: stubs.pb.SubscribeRequest(recover=True, offset=1, epoch="not-the-epoch")},
    )
    sub = expect_connect(s, channel).connect.subs[channel]
    assert sub.was_recovering and not sub.recovered, f"a failed recovery\n{s.summary()}"
    assert list(sub.publications) == [], f"a failed recovery carries no publications\n{s.summary()}"
    assert (sub.epoch, sub.offset) == (top["epoch"], 2), f"the current epoch and the top offset\n{s.summary()}"
    # Still subscribed: live publications arrive.
    publish(herald, channel, {"n": 3})
    push = s.next_push("a live publication after the failed recovery")
    assert (push.channel, data_of(push.pub), push.pub.offset) == (channel, {"n": 3}, 3), s.summary()


def test_bad_token_disconnect_push_then_end(herald, stubs, chan, streams):
    channel = f"{NS}:{uniq('feed')}"
    bad = sign_hs256({"sub": "mallory", "channels": [channel]}, secret="not-the-server-secret-" + "x" * 16)
    s = consume(stubs, chan, streams, "mallory", token=bad)
    push = s.next_push("the disconnect push for a bad token")
    assert push.HasField("disconnect"), f"a disconnect push, not a connect\n{s.summary()}"
    assert (push.disconnect.code, push.disconnect.reason) == (3500, "invalid token"), s.summary()
    s.expect_end("the end of the stream after the disconnect push")


def test_api_disconnect_push_then_end(herald, stubs, chan, streams):
    channel = f"{NS}:{uniq('feed')}"
    user = uniq("uni-dan")
    s = consume(stubs, chan, streams, "dan", token=uni_token(user, [channel]))
    expect_connect(s, channel)
    api(herald, "disconnect", {"user": user})
    push = s.next_push("the disconnect push for an API disconnect")
    assert push.HasField("disconnect"), s.summary()
    assert (push.disconnect.code, push.disconnect.reason) == (3503, "force disconnect"), s.summary()
    s.expect_end("the end of the stream after the disconnect push")


def _with_logs(server: Herald, fn) -> None:
    """Runs fn; a failure carries this herald's log tail (the conftest hook shows only
    the module's herald)."""
    try:
        fn()
    except AssertionError as e:
        raise AssertionError(f"{e}\n{server.logs(tail=80)}") from None


def test_shutdown_disconnect_push_then_end(stubs, streams):
    server = Herald(uni_config(), label="herald (uni_grpc shutdown)")
    ch: Optional[grpc.Channel] = None
    try:
        ch = grpc.insecure_channel(uni_grpc_addr(server), options=CHANNEL_OPTIONS)

        def run() -> None:
            assert ch is not None
            channel = f"{NS}:{uniq('feed')}"
            s = consume(stubs, ch, streams, "erin", token=uni_token(uniq("uni-erin"), [channel]))
            expect_connect(s, channel)
            server._signal(signal.SIGTERM)
            push = s.next_push("the disconnect push at shutdown")
            assert push.HasField("disconnect"), s.summary()
            assert (push.disconnect.code, push.disconnect.reason) == (3001, "shutdown"), s.summary()
            s.expect_end("the end of the stream after the shutdown push")

        _with_logs(server, run)
    finally:
        if ch is not None:
            ch.close()
        server.stop()


def openssl(cwd: Path, *args: str) -> None:
    try:
        proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.fail("the openssl CLI is missing: install it (e.g. 'apt-get install -y openssl')", pytrace=False)
    assert proc.returncode == 0, f"openssl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"


def make_test_certificates(d: Path) -> dict:
    """A test CA and a server certificate for localhost and 127.0.0.1 signed by it, ECDSA
    P-256 (as tests/sdk/js/harness.mjs makeTestCertificates)."""

    def ec_key(out: str) -> None:
        openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out)

    ec_key("ca.key")
    openssl(
        d, "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", "/CN=herald uni_grpc test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.pem",
    )
    ec_key("server.key")
    openssl(d, "req", "-new", "-key", "server.key", "-subj", "/CN=localhost", "-out", "server.csr")
    (d / "server.ext").write_text(
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
    )
    openssl(
        d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2", "-sha256", "-extfile", "server.ext",
        "-out", "server.pem",
    )
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def test_tls(stubs, streams, tmp_path):
    certs = make_test_certificates(tmp_path)
    config = uni_config(
        {
            "uni_grpc": {
                "enabled": True,
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"enabled": True, "cert_pem_file": str(certs["cert"]), "key_pem_file": str(certs["key"])},
            }
        }
    )
    server = Herald(config, label="herald (uni_grpc tls)")
    opened: list[grpc.Channel] = []
    try:
        addr = uni_grpc_addr(server)
        creds = grpc.ssl_channel_credentials(root_certificates=certs["ca"].read_bytes())
        secure = grpc.secure_channel(
            addr, creds, options=[*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", "localhost")]
        )
        plain = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
        opened += [secure, plain]

        def run() -> None:
            channel = f"{NS}:{uniq('feed')}"
            user = uniq("uni-tess")
            s = consume(stubs, secure, streams, "tess (TLS)", token=uni_token(user, [channel]))
            expect_connect(s, channel)
            publish(server, channel, {"tls": True})
            push = s.next_push("a publication over TLS")
            assert (push.channel, data_of(push.pub)) == (channel, {"tls": True}), s.summary()

            # A plaintext client gets no stream from the TLS port.
            p = UniStream(
                stubs.grpc.CentrifugoUniStreamStub(plain),
                stubs.pb.ConnectRequest(token=uni_token(user, [channel])),
                "plaintext to TLS port", timeout=3,
            )
            streams.append(p)
            item = p._take(6, "the plaintext call's failure")
            assert isinstance(item, grpc.RpcError), f"a plaintext call to the TLS port fails\n{p.summary()}"

        _with_logs(server, run)
    finally:
        for c in opened:
            c.close()
        server.stop()
