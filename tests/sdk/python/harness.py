"""Test harness for the centrifuge-python compatibility suite.

Starts the real ``herald serve`` binary on OS-chosen ports, mints HS256 tokens and
records the SDK's events so tests can wait on them with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar

from centrifuge import ClientEventHandler, SubscriptionEventHandler

REPO_ROOT = Path(__file__).resolve().parents[3]

#: A fresh 32-byte secret per test session.
SECRET = secrets.token_hex(32)

LISTENING_RE = re.compile(r"herald listening ws=(ws://\S+) api=(https?://\S+)")
START_TIMEOUT_S = 20.0

T = TypeVar("T")


# ---------------------------------------------------------------------------
# Small utilities


def now_sec() -> int:
    return int(time.time())


def uniq(prefix: str) -> str:
    """A name unique to this run, so tests never share channels or users by accident."""
    return f"{prefix}-{secrets.token_hex(4)}"


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """Awaits with a timeout whose error names what was awaited."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {seconds} s: {what}") from None


# ---------------------------------------------------------------------------
# Tokens (HS256, no library)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_hs256(claims: dict, secret: str = SECRET) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def connection_token(
    sub: str, exp: Optional[int] = None, info: Any = None, secret: str = SECRET
) -> str:
    claims: dict = {"sub": sub}
    if exp is not None:
        claims["exp"] = exp
    if info is not None:
        claims["info"] = info
    return sign_hs256(claims, secret)


def subscription_token(
    sub: str, channel: str, exp: Optional[int] = None, secret: str = SECRET
) -> str:
    claims: dict = {"sub": sub, "channel": channel}
    if exp is not None:
        claims["exp"] = exp
    return sign_hs256(claims, secret)


# ---------------------------------------------------------------------------
# Config


def to_toml(obj: dict) -> str:
    """Serialises scalars, arrays of scalars, tables and arrays of tables to TOML."""
    lines: list[str] = []

    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(i) for i in v) + "]"
        raise TypeError(f"cannot write {v!r} as a TOML value")

    def emit(table: dict, prefix: str) -> None:
        for k, v in table.items():
            if v is None or isinstance(v, dict) or is_table_array(v):
                continue
            lines.append(f"{k} = {scalar(v)}")
        for k, v in table.items():
            if isinstance(v, dict):
                name = f"{prefix}.{k}" if prefix else k
                lines.extend(["", f"[{name}]"])
                emit(v, name)
        for k, v in table.items():
            if is_table_array(v):
                name = f"{prefix}.{k}" if prefix else k
                for item in v:
                    lines.extend(["", f"[[{name}]]"])
                    emit(item, name)

    emit(obj, "")
    return "\n".join(lines).strip() + "\n"


def _merge(base: dict, extra: dict) -> dict:
    result = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(result.get(k), dict):
            result[k] = _merge(result[k], v)
        else:
            result[k] = v
    return result


def server_config(extra: Optional[dict] = None) -> dict:
    """The config every test server starts from: loopback, OS-chosen port, the test secret."""
    base = {
        "http_server": {"address": "127.0.0.1", "port": 0, "internal_port": 0},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "log": {"level": "debug"},
        "shutdown": {"timeout": "1s"},
    }
    return _merge(base, extra or {})


# ---------------------------------------------------------------------------
# The server process


def herald_bin() -> str:
    path = os.environ.get("HERALD_BIN") or str(REPO_ROOT / "target" / "debug" / "herald")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"herald binary not found or not executable at {path}: build it with "
            "'cargo build --locked -p herald' or point HERALD_BIN at it"
        )
    return path


def child_env() -> dict:
    """Our environment without any HERALD_* variable (herald's config env layer)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("HERALD_")}


class Herald:
    """A running ``herald serve`` child process."""

    def __init__(self, config: dict, label: str = "herald") -> None:
        self.label = label
        self.bin = herald_bin()
        self.dir = tempfile.mkdtemp(prefix="herald-sdk-py-")
        config_path = os.path.join(self.dir, "herald.toml")
        with open(config_path, "w", encoding="utf-8") as f:
            f.write(to_toml(config))
        self._stderr_path = os.path.join(self.dir, "stderr.log")
        self._stderr = open(self._stderr_path, "wb")
        self._stdout_lines: list[str] = []
        self._listening = threading.Event()
        self.ws_url: str = ""
        self.api_url: str = ""
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--config", config_path],
            cwd=self.dir,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            # Its own process group, so a wrapper script given as HERALD_BIN is
            # stopped together with what it started.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stdout_lines.append(line)
            m = LISTENING_RE.search(line)
            if m and not self._listening.is_set():
                self.ws_url, self.api_url = m.group(1), m.group(2)
                self._listening.set()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._listening.wait(0.05):
                return
            code = self.proc.poll()
            if code is not None:
                self._reader.join(1)
                if self._listening.is_set():
                    return
                raise RuntimeError(
                    f"[{self.label}] herald exited before listening (exit code {code})\n"
                    + self.logs()
                )
        raise RuntimeError(
            f"[{self.label}] herald did not print 'herald listening ws=... api=...' on stdout "
            f"within {START_TIMEOUT_S:.0f} s\n" + self.logs()
        )

    def stderr_text(self) -> str:
        try:
            with open(self._stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def logs(self, tail: Optional[int] = None) -> str:
        out = self._stdout_lines
        err = self.stderr_text().splitlines()
        if tail is not None:
            out, err = out[-tail:], err[-tail:]
        return "--- herald stdout ---\n" + "\n".join(out) + "\n--- herald stderr ---\n" + "\n".join(err)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except OSError:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        self._signal(signal.SIGKILL)  # whatever the group still holds
        self._reader.join(2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Recording SDK events


@dataclass
class Entry:
    name: str
    ctx: Any
    at: float = field(default_factory=time.monotonic)


class EventLog:
    """Records events; waits on recorded or future ones. Handlers must never raise:
    an exception in a handler makes the SDK disconnect."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.entries: list[Entry] = []
        self._changed: Optional[asyncio.Condition] = None

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def push(self, name: str, ctx: Any) -> None:
        self.entries.append(Entry(name, ctx))
        cond = self._cond()
        async with cond:
            cond.notify_all()

    def mark(self) -> int:
        return len(self.entries)

    def all(self, name: str, since: int = 0) -> list:
        return [e.ctx for e in self.entries[since:] if e.name == name]

    def _find(self, names: tuple, pred: Callable[[Any], bool], since: int) -> Optional[Entry]:
        for e in self.entries[since:]:
            if e.name in names:
                try:
                    if pred(e.ctx):
                        return e
                except Exception:
                    pass
        return None

    async def wait_for(
        self,
        name: "str | tuple[str, ...]",
        pred: Callable[[Any], bool] = lambda _ctx: True,
        since: int = 0,
        timeout: float = 5.0,
        what: str = "",
    ) -> Any:
        names = name if isinstance(name, tuple) else (name,)
        cond = self._cond()
        found: list[Entry] = []

        def ready() -> bool:
            e = self._find(names, pred, since)
            if e is not None:
                found.append(e)
            return e is not None

        try:
            async with cond:
                await asyncio.wait_for(cond.wait_for(ready), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {self.label} {'/'.join(names)}"
                + (f" ({what})" if what else "")
                + f"; events so far:\n{self.summary()}"
            ) from None
        return found[0].ctx

    async def wait_count(self, name: str, count: int, since: int = 0, timeout: float = 5.0) -> list:
        cond = self._cond()
        try:
            async with cond:
                await asyncio.wait_for(
                    cond.wait_for(lambda: len(self.all(name, since)) >= count), timeout
                )
        except asyncio.TimeoutError:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {count} {self.label} {name} events, "
                f"got {len(self.all(name, since))}; events so far:\n{self.summary()}"
            ) from None
        return self.all(name, since)

    def summary(self, last: int = 30) -> str:
        return "\n".join(f"  {e.name} {e.ctx!r}" for e in self.entries[-last:])


class RecordingClientEvents(ClientEventHandler):
    def __init__(self, log: EventLog) -> None:
        self.log = log

    async def on_connecting(self, ctx):
        await self.log.push("connecting", ctx)

    async def on_connected(self, ctx):
        await self.log.push("connected", ctx)

    async def on_disconnected(self, ctx):
        await self.log.push("disconnected", ctx)

    async def on_error(self, ctx):
        await self.log.push("error", ctx)


class RecordingSubscriptionEvents(SubscriptionEventHandler):
    def __init__(self, log: EventLog) -> None:
        self.log = log

    async def on_subscribing(self, ctx):
        await self.log.push("subscribing", ctx)

    async def on_subscribed(self, ctx):
        await self.log.push("subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        await self.log.push("unsubscribed", ctx)

    async def on_publication(self, ctx):
        await self.log.push("publication", ctx)

    async def on_join(self, ctx):
        await self.log.push("join", ctx)

    async def on_leave(self, ctx):
        await self.log.push("leave", ctx)

    async def on_error(self, ctx):
        await self.log.push("error", ctx)


# ---------------------------------------------------------------------------
# gRPC: stubs generated at test time from herald's proto files, and the
# addresses of the gRPC ports from the ready line


class GrpcStubs:
    """The `<name>_pb2` and `<name>_pb2_grpc` modules of one proto file."""

    def __init__(self, pb2: Any, pb2_grpc: Any) -> None:
        self.pb = pb2
        self.grpc = pb2_grpc


def generate_grpc_stubs(proto: Path, out: Path) -> GrpcStubs:
    """Runs grpcio-tools' protoc on `proto` into `out` and imports the result."""
    import importlib
    import sys

    assert proto.is_file(), f"herald's proto file is missing: {proto}"
    proc = subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{proto.parent}", f"--python_out={out}", f"--grpc_python_out={out}",
            str(proto),
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"grpc_tools.protoc failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    # The generated *_pb2_grpc module imports `<name>_pb2` by its top-level name.
    names = (f"{proto.stem}_pb2", f"{proto.stem}_pb2_grpc")
    sys.path.insert(0, str(out))
    try:
        for name in names:
            sys.modules.pop(name, None)
        pb2, pb2_grpc = (importlib.import_module(name) for name in names)
    finally:
        sys.path.remove(str(out))
    return GrpcStubs(pb2, pb2_grpc)


def ready_line_addr(server: "Herald", listener: str) -> str:
    """The `<listener>=127.0.0.1:PORT` address of the ready line (stdout)."""
    pattern = re.compile(rf"\b{re.escape(listener)}=(127\.0\.0\.1:(\d+))")
    for line in list(server._stdout_lines):
        if "herald listening" in line:
            m = pattern.search(line)
            assert m, f"the ready line lacks {listener}=127.0.0.1:PORT: {line!r}"
            assert int(m.group(2)) > 0, f"{listener} port 0 printed instead of the bound one: {line!r}"
            return m.group(1)
    raise AssertionError("no ready line on stdout:\n" + server.logs(tail=50))
