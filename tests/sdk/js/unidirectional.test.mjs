// Unidirectional transports (docs/protocol.md, "Unidirectional transports"): the
// server only pushes. uni_sse and uni_http_stream are read with a plain `curl -N` child
// process, uni_websocket with the `ws` package. Channels come from the connection token's
// `channels` claim (server-side subscriptions); the connect request's `subs` recovers
// them after a reconnect. Also: failed connects, bad input, CORS, the access log, and
// the disconnect push on a server shutdown.
//
// A failing test prints what each stream received, curl's stderr and exit status, and
// herald's log tail.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

import WebSocket from 'ws';

import { apiCall, nowSec, serverSuite, signHs256, sleep, startHerald, testConfig, uniq, within } from './harness.mjs';
import { diagnosedTest, metricLines, metricSample, metricsText as harnessMetricsText } from './harness.mjs';

const API_KEY = `api-key-${randomBytes(16).toString('hex')}`;
const BODY_LIMIT = 8192;
const GOOD_ORIGIN = 'http://good.example';
const EVIL_ORIGIN = 'http://evil.example';
const history = { history_size: 100, history_ttl: '300s' };
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function uniConfig(extra = {}) {
  return testConfig({
    http_api: { key: API_KEY },
    client: { allowed_origins: [GOOD_ORIGIN] },
    uni_websocket: { enabled: true, message_size_limit: 65536 },
    uni_sse: { enabled: true, max_request_body_size: BODY_LIMIT },
    uni_http_stream: { enabled: true, max_request_body_size: BODY_LIMIT },
    channel: {
      without_namespace: { presence: true, allow_subscribe_for_client: true },
      namespaces: [{ name: 'feed', ...history, force_recovery: true }],
    },
    ...extra,
  });
}

const suite = serverSuite(uniConfig(), { label: 'herald (unidirectional)' });

const httpBase = (server) => server.wsUrl.replace(/^ws/, 'http').replace(/\/connection\/websocket.*$/, '');
const wsBase = (server) => server.wsUrl.replace(/\/connection\/websocket.*$/, '');
const api = (method, body, server = suite.server) => apiCall(server.apiUrl, API_KEY, method, body);

/** A connection token whose `channels` claim subscribes the connection server-side. */
const channelsToken = (sub, channels) => signHs256({ sub, exp: nowSec() + 3_600, channels });

// ---------------------------------------------------------------------------
// Metrics

const metricsText = (server = suite.server) => harnessMetricsText(server.apiUrl);
const sample = metricSample;

// ---------------------------------------------------------------------------
// Streams: curl children and ws clients, tracked and dumped on failure

const tracked = { streams: [], servers: [] };

let curlChecked = false;
function requireCurl() {
  if (curlChecked) return;
  try {
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error("the curl CLI is missing: install it (e.g. 'apt-get install -y curl')");
  }
  curlChecked = true;
}

/** Splits a stream body into Push objects: `data:` lines (SSE) or plain lines. */
function parseFrames(text, sse) {
  const out = [];
  for (let line of text.split(/\r?\n/)) {
    if (sse) {
      if (!line.startsWith('data:')) continue;
      line = line.slice(5).trimStart();
    }
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      out.push({ unparsable: line });
    }
  }
  return out;
}

const isPing = (p) => p && typeof p === 'object' && Object.keys(p).length === 0;

class Stream {
  constructor(label) {
    this.label = label;
    this.ended = false;
    tracked.streams.push(this);
  }

  /** The received Push objects, pings (`{}`) left out. */
  pushes() {
    return this.frames().filter((p) => !isPing(p));
  }

  async waitPush(pred, what, ms = 5_000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.pushes().find((p) => {
        try {
          return pred(p);
        } catch {
          return false;
        }
      });
      if (hit) return hit;
      if (Date.now() >= deadline) throw new Error(`${this.label}: timed out after ${ms} ms waiting for ${what}; received:\n${this.describe()}`);
      await sleep(20);
    }
  }

  async waitEnd(what, ms = 5_000) {
    const deadline = Date.now() + ms;
    while (!this.ended && Date.now() < deadline) await sleep(20);
    assert.ok(this.ended, `${this.label}: ${what}: the stream did not end within ${ms} ms; received:\n${this.describe()}`);
  }
}

/** `curl -sS -N -i ...`: the response (headers and body) collected as text. */
class CurlStream extends Stream {
  constructor(label, args, { sse }) {
    super(label);
    requireCurl();
    this.sse = sse;
    this.args = args;
    this.out = '';
    this.err = '';
    this.exit = null;
    this.child = spawn('curl', ['-sS', '-N', '-i', '-H', 'Expect:', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d) => (this.out += d));
    this.child.stderr.on('data', (d) => (this.err += d));
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        this.ended = true;
        resolve(this.exit);
      }),
    );
    this.child.on('error', (err) => {
      this.err += `spawn error: ${err.message}`;
    });
  }

  get headerEnd() {
    return this.out.indexOf('\r\n\r\n');
  }

  get status() {
    const m = /^HTTP\/\S+ (\d+)/.exec(this.out);
    return m ? Number(m[1]) : null;
  }

  header(name) {
    const block = this.headerEnd >= 0 ? this.out.slice(0, this.headerEnd) : '';
    const re = new RegExp(`^${name}:\\s*(.*)$`, 'im');
    const m = re.exec(block);
    return m ? m[1].trim() : null;
  }

  get body() {
    return this.headerEnd >= 0 ? this.out.slice(this.headerEnd + 4) : '';
  }

  frames() {
    return parseFrames(this.body, this.sse);
  }

  async close() {
    if (this.exit === null) this.child.kill('SIGTERM');
    await within(this.exited, 5_000, `${this.label}: curl exit`);
  }

  describe() {
    const shownArgs = this.args.map((a) => (a.length > 120 ? `${a.slice(0, 120)}…` : a)).join(' ');
    return (
      `  curl ${shownArgs}\n  exit: ${JSON.stringify(this.exit)}\n  stderr: ${JSON.stringify(this.err.slice(-500))}\n` +
      `  stdout (last 3000 chars): ${JSON.stringify(this.out.slice(-3000))}`
    );
  }
}

/** A `ws` client of uni_websocket; `first`: a message sent once open. */
class WsStream extends Stream {
  constructor(label, url, { first = null, origin } = {}) {
    super(label);
    this.url = url;
    this.messages = [];
    this.closeInfo = null;
    this.error = null;
    this.httpStatus = null;
    this.ws = new WebSocket(url, origin ? { origin } : {});
    this.ws.on('open', () => {
      if (first !== null) this.ws.send(first);
    });
    this.ws.on('message', (data, isBinary) => this.messages.push(isBinary ? `<binary ${data.length} bytes>` : data.toString('utf8')));
    this.ws.on('unexpected-response', (_req, res) => {
      this.httpStatus = res.statusCode;
      res.resume();
      this.ended = true;
      try {
        this.ws.terminate();
      } catch {
        // already gone
      }
    });
    this.ws.on('error', (err) => {
      this.error = err.message;
    });
    this.closed = new Promise((resolve) =>
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        this.ended = true;
        resolve(this.closeInfo);
      }),
    );
  }

  frames() {
    return this.messages.flatMap((m) => parseFrames(m, false));
  }

  async close() {
    if (!this.ended) {
      this.ws.close(1000);
      await within(this.closed, 5_000, `${this.label}: close`).catch(() => this.ws.terminate());
    }
  }

  describe() {
    const url = this.url.length > 160 ? `${this.url.slice(0, 160)}…` : this.url;
    return (
      `  ws ${url}\n  http status: ${this.httpStatus} error: ${this.error} close: ${JSON.stringify(this.closeInfo)}\n` +
      `  messages (last 30):\n${this.messages.slice(-30).map((m) => `    ${m.slice(0, 600)}`).join('\n')}`
    );
  }
}

const UNI = [
  {
    name: 'uni_sse',
    transport: 'uni_sse',
    open: (server, req, label) =>
      new CurlStream(label, [`${httpBase(server)}/connection/uni_sse?cf_connect=${encodeURIComponent(JSON.stringify(req))}`], { sse: true }),
  },
  {
    name: 'uni_http_stream',
    transport: 'uni_http_stream',
    open: (server, req, label) =>
      new CurlStream(
        label,
        ['-X', 'POST', '-H', 'Content-Type: application/json', '--data', JSON.stringify(req), `${httpBase(server)}/connection/uni_http_stream`],
        { sse: false },
      ),
  },
  {
    name: 'uni_websocket',
    transport: 'uni_websocket',
    open: (server, req, label) => new WsStream(label, `${wsBase(server)}/connection/uni_websocket`, { first: JSON.stringify(req) }),
  },
];

function diagnostics() {
  const parts = [];
  for (const s of tracked.streams) parts.push(`--- ${s.label} ---\n${s.describe()}`);
  for (const server of tracked.servers) parts.push(`--- the second herald ---\n${server.logTail(100)}`);
  parts.push(suite.server ? suite.server.logTail(150) : '(herald not running)');
  return parts.join('\n');
}

/** Closes what the test opened. */
async function closeTracked() {
  for (const s of tracked.streams) {
    try {
      await s.close();
    } catch {
      // nothing to do
    }
  }
  for (const server of tracked.servers) await server.stop().catch(() => {});
  tracked.streams = [];
  tracked.servers = [];
}

function utest(name, fn, { timeout = 20_000 } = {}) {
  diagnosedTest(name, fn, { timeout, diagnostics, cleanup: closeTracked });
}

function assertConnectFirst(stream, channel) {
  const pushes = stream.pushes();
  const connect = pushes[0]?.connect;
  assert.ok(connect, `the first push is the connect push, got ${JSON.stringify(pushes[0])}`);
  assert.ok(typeof connect.client === 'string' && connect.client.length > 0, `connect.client: ${JSON.stringify(connect)}`);
  assert.ok(typeof connect.version === 'string', `connect.version: ${JSON.stringify(connect)}`);
  assert.match(String(connect.session), UUID_RE, `connect.session is a UUID: ${JSON.stringify(connect)}`);
  const sub = connect.subs?.[channel];
  assert.ok(sub, `connect.subs has ${channel}: ${JSON.stringify(connect)}`);
  return connect;
}

// ---------------------------------------------------------------------------
// Flows per transport

for (const kind of UNI) {
  utest(`${kind.name}: connect push with the token's channels, API publications, recovery after a reconnect`, async () => {
    const server = suite.server;
    const user = uniq('uni');
    const channel = `feed:${uniq('news')}`;
    const token = channelsToken(user, [channel]);
    const before = await metricsText();

    const first = kind.open(server, { token }, `${kind.name} first`);
    await first.waitPush((p) => p.connect, 'the connect push');
    const connect = assertConnectFirst(first, channel);
    const sub = connect.subs[channel];
    assert.equal(sub.recoverable, true, `force_recovery: recoverable: ${JSON.stringify(sub)}`);
    assert.ok(typeof sub.epoch === 'string' && sub.epoch.length > 0, `an epoch: ${JSON.stringify(sub)}`);
    const startOffset = Number(sub.offset ?? 0);
    if (first instanceof CurlStream) {
      assert.equal(first.status, 200, `HTTP status`);
      if (kind.name === 'uni_sse') {
        assert.equal(first.header('content-type'), 'text/event-stream; charset=utf-8');
        assert.ok(first.body.startsWith('\r\n'), `the body starts with \\r\\n: ${JSON.stringify(first.body.slice(0, 30))}`);
      }
    }

    const during = await metricsText();
    const gauge = sample(during, 'herald_transport_connections', { transport: kind.transport });
    assert.ok(gauge >= 1, `herald_transport_connections{transport="${kind.transport}"} >= 1:\n${metricLines(during, 'herald_transport_connections')}`);
    const connects = (text) => sample(text, 'herald_transport_connects_total', { transport: kind.transport }) ?? 0;
    assert.ok(connects(during) >= connects(before) + 1, `herald_transport_connects_total{transport="${kind.transport}"}:\n${metricLines(during, 'herald_transport_connects_total')}`);

    await api('publish', { channel, data: { n: 1 } });
    const p1 = await first.waitPush((p) => p.channel === channel && p.pub, 'publication n=1');
    assert.deepEqual(p1.pub.data, { n: 1 });
    assert.equal(p1.pub.offset, startOffset + 1, 'the offset follows the connect position');
    await api('publish', { channel, data: { n: 2 } });
    const p2 = await first.waitPush((p) => p.channel === channel && p.pub?.data?.n === 2, 'publication n=2');
    assert.equal(p2.pub.offset, startOffset + 2);
    assert.deepEqual(
      first.pushes().map((p) => Object.keys(p).sort().join(',')),
      ['connect', 'channel,pub', 'channel,pub'],
      'nothing else was pushed',
    );
    await first.close();

    // Missed while away.
    await api('publish', { channel, data: { n: 3 } });
    const second = kind.open(server, { token, subs: { [channel]: { recover: true, offset: p2.pub.offset, epoch: sub.epoch } } }, `${kind.name} recovering`);
    await second.waitPush((p) => p.connect, 'the connect push after the reconnect');
    const again = assertConnectFirst(second, channel);
    const resub = again.subs[channel];
    assert.equal(resub.recovered, true, `recovered: ${JSON.stringify(resub)}`);
    assert.equal(resub.epoch, sub.epoch, 'same epoch');
    // The missed publication: in the connect push's subs (as Centrifugo does) or as a pub push.
    const missed = () => [...(resub.publications ?? []), ...second.pushes().filter((p) => p.channel === channel && p.pub).map((p) => p.pub)];
    const deadline = Date.now() + 3_000;
    while (missed().length < 1 && Date.now() < deadline) await sleep(20);
    assert.deepEqual(missed().map((p) => p.data), [{ n: 3 }], 'exactly the missed publication');
    assert.equal(missed()[0].offset, p2.pub.offset + 1);

    await api('publish', { channel, data: { n: 4 } });
    const live = await second.waitPush((p) => p.channel === channel && p.pub?.data?.n === 4, 'live publication after recovery');
    assert.equal(live.pub.offset, p2.pub.offset + 2);
  });
}

utest('a client that goes away (curl killed, socket dropped) ends its connection: the gauge drops, presence forgets it', async () => {
  const channel = uniq('gone');
  const before = await metricsText();
  const streams = UNI.map((kind) => kind.open(suite.server, { token: channelsToken(uniq(kind.name), [channel]) }, `${kind.name} going away`));
  for (const s of streams) await s.waitPush((p) => p.connect, 'the connect push');
  const presence = async () => Object.keys((await api('presence', { channel })).result?.presence ?? {}).length;
  assert.equal(await presence(), 3, 'presence lists the three connections');
  const during = await metricsText();
  const gauges = (text) => Object.fromEntries(UNI.map((k) => [k.transport, sample(text, 'herald_transport_connections', { transport: k.transport })]));
  for (const k of UNI) assert.ok(gauges(during)[k.transport] >= 1, `herald_transport_connections{transport="${k.transport}"} >= 1:\n${metricLines(during, 'herald_transport_connections')}`);

  // Gone without a goodbye: SIGKILL for curl, a dropped TCP connection for ws.
  for (const s of streams) {
    if (s instanceof CurlStream) s.child.kill('SIGKILL');
    else s.ws.terminate();
  }
  const deadline = Date.now() + 3_000;
  let left = 3;
  let now = {};
  while (Date.now() < deadline) {
    left = await presence();
    now = gauges(await metricsText());
    if (left === 0 && UNI.every((k) => now[k.transport] <= gauges(during)[k.transport] - 1)) break;
    await sleep(200);
  }
  const report = `before: ${JSON.stringify(gauges(before))} connected: ${JSON.stringify(gauges(during))} 3 s after the clients went away: ${JSON.stringify(now)}, presence ${left}`;
  for (const k of UNI) assert.ok(now[k.transport] <= gauges(during)[k.transport] - 1, `${k.transport}: the gauge drops within 3 s (${report})`);
  assert.equal(left, 0, `presence forgets the connections within 3 s (${report})`);
});

utest('uni_websocket: the connect request in the cf_connect query', async () => {
  const channel = `feed:${uniq('query')}`;
  const token = channelsToken(uniq('query'), [channel]);
  const s = new WsStream('uni_websocket cf_connect', `${wsBase(suite.server)}/connection/uni_websocket?cf_connect=${encodeURIComponent(JSON.stringify({ token }))}`);
  await s.waitPush((p) => p.connect, 'the connect push (no message sent)');
  assertConnectFirst(s, channel);
  await api('publish', { channel, data: { via: 'query' } });
  const pub = await s.waitPush((p) => p.channel === channel && p.pub, 'the publication');
  assert.deepEqual(pub.pub.data, { via: 'query' });
});

utest('a failed connect (invalid token): a disconnect push with 3500, then the end', async () => {
  const bad = signHs256({ sub: uniq('forged'), channels: ['feed:x'] }, 'not-the-server-secret-but-32-bytes-long');
  for (const kind of UNI) {
    const s = kind.open(suite.server, { token: bad }, `${kind.name} invalid token`);
    const d = await s.waitPush((p) => p.disconnect, 'the disconnect push');
    assert.equal(d.disconnect.code, 3500, `${kind.name}: code 3500, got ${JSON.stringify(d)}`);
    assert.equal(typeof d.disconnect.reason, 'string');
    await s.waitEnd('after the disconnect push');
    assert.deepEqual(s.pushes().map((p) => Object.keys(p)[0]), ['disconnect'], `${kind.name}: only the disconnect push`);
    if (s instanceof WsStream) assert.equal(s.closeInfo?.code, 3500, `${kind.name}: the close frame carries 3500`);
  }
});

utest('uni bad input: uni_http_stream GET 405, invalid JSON 400, over the limit 413; uni_sse POST over the limit 413', async () => {
  const b = httpBase(suite.server);
  const req = async (path, init) => {
    const res = await within(fetch(`${b}${path}`, init), 5_000, `${init?.method ?? 'GET'} ${path}`);
    return { status: res.status, text: await res.text() };
  };
  const json = { 'Content-Type': 'application/json' };
  const get = await req('/connection/uni_http_stream');
  assert.equal(get.status, 405, `GET /connection/uni_http_stream: ${get.status} ${get.text}`);
  const invalid = await req('/connection/uni_http_stream', { method: 'POST', headers: json, body: '{"token":' });
  assert.equal(invalid.status, 400, `invalid JSON: ${invalid.status} ${invalid.text}`);
  const big = JSON.stringify({ token: 'x', data: { pad: 'x'.repeat(BODY_LIMIT) } });
  const tooLarge = await req('/connection/uni_http_stream', { method: 'POST', headers: json, body: big });
  assert.equal(tooLarge.status, 413, `uni_http_stream body over ${BODY_LIMIT}: ${tooLarge.status} ${tooLarge.text}`);
  const sseLarge = await req('/connection/uni_sse', { method: 'POST', headers: json, body: big });
  assert.equal(sseLarge.status, 413, `uni_sse body over ${BODY_LIMIT}: ${sseLarge.status} ${sseLarge.text}`);
  const sseInvalid = await req(`/connection/uni_sse?cf_connect=${encodeURIComponent('{"token":')}`);
  assert.equal(sseInvalid.status, 400, `uni_sse invalid cf_connect: ${sseInvalid.status} ${sseInvalid.text}`);
});

utest('uni CORS: an Origin outside allowed_origins gets 403 (uni_sse, uni_http_stream, uni_websocket); an allowed one is echoed', async () => {
  const b = httpBase(suite.server);
  const channel = `feed:${uniq('cors')}`;
  const token = channelsToken(uniq('cors'), [channel]);
  const q = `cf_connect=${encodeURIComponent(JSON.stringify({ token }))}`;

  const evilSse = await fetch(`${b}/connection/uni_sse?${q}`, { headers: { Origin: EVIL_ORIGIN } });
  assert.equal(evilSse.status, 403, `uni_sse from ${EVIL_ORIGIN}: ${evilSse.status} ${await evilSse.text()}`);
  const evilStream = await fetch(`${b}/connection/uni_http_stream`, { method: 'POST', headers: { Origin: EVIL_ORIGIN, 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
  assert.equal(evilStream.status, 403, `uni_http_stream from ${EVIL_ORIGIN}: ${evilStream.status} ${await evilStream.text()}`);
  const evilWs = new WsStream('uni_websocket evil origin', `${wsBase(suite.server)}/connection/uni_websocket?${q}`, { origin: EVIL_ORIGIN });
  await evilWs.waitEnd('refused upgrade');
  assert.equal(evilWs.httpStatus, 403, `uni_websocket from ${EVIL_ORIGIN}: HTTP ${evilWs.httpStatus}`);

  const pre = await fetch(`${b}/connection/uni_http_stream`, {
    method: 'OPTIONS',
    headers: { Origin: GOOD_ORIGIN, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
  });
  assert.equal(pre.status, 204, `OPTIONS /connection/uni_http_stream: ${pre.status}`);
  assert.equal(pre.headers.get('access-control-allow-origin'), GOOD_ORIGIN);
  assert.equal(pre.headers.get('access-control-max-age'), '300');

  const s = new CurlStream('uni_sse good origin', ['-H', `Origin: ${GOOD_ORIGIN}`, `${b}/connection/uni_sse?${q}`], { sse: true });
  await s.waitPush((p) => p.connect, 'the connect push');
  assert.equal(s.header('access-control-allow-origin'), GOOD_ORIGIN, 'the allowed origin is echoed');
  assert.equal(s.header('access-control-allow-credentials'), 'true');
});

utest('a token in the cf_connect query (uni_sse, uni_websocket) never appears in the logs, at debug level', async () => {
  const channel = `feed:${uniq('logs')}`;
  const tokens = [channelsToken(uniq('log-sse'), [channel]), channelsToken(uniq('log-ws'), [channel])];
  const bad = signHs256({ sub: uniq('log-bad'), channels: [channel] }, 'not-the-server-secret-but-32-bytes-long');
  tokens.push(bad);
  const q = (token) => `cf_connect=${encodeURIComponent(JSON.stringify({ token }))}`;
  const sse = new CurlStream('uni_sse logs', [`${httpBase(suite.server)}/connection/uni_sse?${q(tokens[0])}`], { sse: true });
  await sse.waitPush((p) => p.connect, 'uni_sse connect push');
  const ws = new WsStream('uni_websocket logs', `${wsBase(suite.server)}/connection/uni_websocket?${q(tokens[1])}`);
  await ws.waitPush((p) => p.connect, 'uni_websocket connect push');
  const refused = new CurlStream('uni_sse bad token', [`${httpBase(suite.server)}/connection/uni_sse?${q(bad)}`], { sse: true });
  await refused.waitPush((p) => p.disconnect, 'uni_sse disconnect push for a bad token');
  await sse.close();
  await ws.close();
  await sleep(300);
  const logs = suite.server.logs();
  for (const token of tokens) {
    const [, payload, signature] = token.split('.');
    assert.ok(!logs.includes(signature), `a token signature is in the logs: ${signature}`);
    assert.ok(!logs.includes(payload), `a token payload is in the logs: ${payload}`);
  }
  assert.ok(!logs.includes('cf_connect='), 'no query string with cf_connect in the logs');
  assert.ok(logs.includes('/connection/uni_sse'), 'the access log names the path');
});

utest(
  'server shutdown (SIGTERM): every uni stream and an http_stream get the disconnect push 3001 "shutdown", then the end',
  async () => {
    const server = await startHerald({
      config: uniConfig({ http_stream: { enabled: true } }),
      label: 'herald (unidirectional shutdown)',
    });
    tracked.servers.push(server);
    const channel = `feed:${uniq('bye')}`;
    const streams = UNI.map((kind) => kind.open(server, { token: channelsToken(uniq('bye'), [channel]) }, `${kind.name} shutdown`));
    for (const s of streams) await s.waitPush((p) => p.connect, 'the connect push');
    const emu = new CurlStream(
      'http_stream shutdown',
      [
        '-X', 'POST', '-H', 'Content-Type: application/json',
        '--data', JSON.stringify({ id: 1, connect: { token: channelsToken(uniq('bye'), [channel]) } }),
        `${httpBase(server)}/connection/http_stream`,
      ],
      { sse: false },
    );
    await emu.waitPush((p) => p.id === 1 && p.connect, 'the http_stream connect reply');

    await server.stop(); // SIGTERM to the process group, waits for the exit
    for (const s of streams) {
      await s.waitEnd('after the shutdown');
      const last = s.pushes().at(-1);
      assert.deepEqual(last, { disconnect: { code: 3001, reason: 'shutdown' } }, `${s.label}: the last push is the shutdown disconnect`);
      if (s instanceof WsStream) assert.equal(s.closeInfo?.code, 3001, `${s.label}: the close frame carries 3001`);
      else assert.equal(s.exit?.code, 0, `${s.label}: curl saw a clean end of the response`);
    }
    await emu.waitEnd('after the shutdown');
    assert.deepEqual(emu.pushes().at(-1), { push: { disconnect: { code: 3001, reason: 'shutdown' } } }, 'http_stream: the last reply is the shutdown disconnect push');
    assert.equal(emu.exit?.code, 0, 'curl saw a clean end of the http_stream response');
  },
  { timeout: 30_000 },
);

utest(
  'connect transforms: connect_code_to_http_response answers a refused uni_sse connect with its status; connect_code_to_unidirectional_disconnect picks the disconnect',
  async () => {
    const server = await startHerald({
      config: uniConfig({
        client: {
          allowed_origins: [GOOD_ORIGIN],
          connect_code_to_unidirectional_disconnect: {
            enabled: true,
            transforms: [{ code: 109, to: { code: 4501, reason: 'token expired, get a new one' } }],
          },
        },
        uni_sse: {
          enabled: true,
          max_request_body_size: BODY_LIMIT,
          connect_code_to_http_response: {
            enabled: true,
            transforms: [{ code: 3500, to: { status_code: 401, body: 'bad token' } }],
          },
        },
      }),
      label: 'herald (unidirectional transforms)',
    });
    tracked.servers.push(server);
    try {
      const forged = signHs256({ sub: uniq('forged'), channels: ['feed:x'] }, 'not-the-server-secret-but-32-bytes-long');
      const url = `${httpBase(server)}/connection/uni_sse?cf_connect=${encodeURIComponent(JSON.stringify({ token: forged }))}`;
      const res = await within(fetch(url), 5_000, 'uni_sse with a forged token');
      const text = await res.text();
      assert.equal(res.status, 401, `uni_sse with a forged token: ${res.status} ${text}`);
      assert.equal(text, 'bad token');

      // uni_http_stream has no HTTP transform: the mapped disconnect arrives in the stream.
      const expired = signHs256({ sub: uniq('late'), exp: nowSec() - 60, channels: ['feed:x'] });
      const s = UNI.find((k) => k.name === 'uni_http_stream').open(server, { token: expired }, 'uni_http_stream expired token');
      const d = await s.waitPush((p) => p.disconnect, 'the disconnect push');
      assert.deepEqual(d, { disconnect: { code: 4501, reason: 'token expired, get a new one' } });
      await s.waitEnd('after the disconnect push');
    } finally {
      await server.stop();
    }
  },
  { timeout: 20_000 },
);
