// Bidirectional emulation (docs/protocol.md, "Bidirectional emulation"):
// the real centrifuge-js SDK in Node over its `http_stream` and `sse` transports (and
// `http_stream` with the protobuf build), commands after connect travelling through
// POST /emulation; then bad input, CORS and the access log on raw requests.
//
// Node 20 has fetch and ReadableStream; SSE uses the `eventsource` package. The SDK gets
// a recording fetch (and an EventSource built on it), so a failing test prints every
// request, its status and what the stream carried.

import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';

import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';
import { EventSource } from 'eventsource';

import {
  EventLog,
  apiCall,
  connect,
  connectionToken,
  nowSec,
  serverSuite,
  sleep,
  subscribe,
  subscriptionToken,
  testConfig,
  uniq,
  within,
} from './harness.mjs';
import { diagnosedTest, metricLines, metricSample, metricsText as harnessMetricsText } from './harness.mjs';

const API_KEY = `api-key-${randomBytes(16).toString('hex')}`;
const BODY_LIMIT = 8192;
const GOOD_ORIGIN = 'http://good.example';
const EVIL_ORIGIN = 'http://evil.example';
const history = { history_size: 100, history_ttl: '300s' };
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NO_CACHE = 'private, no-cache, no-store, must-revalidate, max-age=0';

const suite = serverSuite(
  testConfig({
    http_api: { key: API_KEY },
    client: {
      allowed_origins: [GOOD_ORIGIN],
      expired_close_delay: '1s',
      presence_update_interval: '1s',
    },
    http_stream: { enabled: true, max_request_body_size: BODY_LIMIT },
    sse: { enabled: true, max_request_body_size: BODY_LIMIT },
    emulation: { max_request_body_size: BODY_LIMIT },
    channel: {
      without_namespace: {
        presence: true,
        ...history,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_presence_for_client: true,
        allow_history_for_client: true,
      },
      namespaces: [
        // `$secret:...` channels: a subscription token is the only way in.
        { name: 'secret', allow_publish_for_client: true },
        { name: 'stream', ...history, force_recovery: true, allow_subscribe_for_client: true },
      ],
    },
  }),
  { label: 'herald (emulation)' },
);

/** The public listener's base URL, from the ready line's ws URL. */
const base = () => suite.server.wsUrl.replace(/^ws/, 'http').replace(/\/connection\/websocket.*$/, '');
const api = (method, body) => apiCall(suite.server.apiUrl, API_KEY, method, body);

// ---------------------------------------------------------------------------
// Metrics

const metricsText = () => harnessMetricsText(suite.server.apiUrl);
const sample = metricSample;

// ---------------------------------------------------------------------------
// Recording fetch and EventSource for the SDK

let requestSeq = 0;

function safeDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

function bodyText(body) {
  if (body === undefined || body === null) return '';
  if (typeof body === 'string') return body;
  const bytes = Buffer.from(body);
  return `<binary ${bytes.length} bytes: ${bytes.subarray(0, 48).toString('hex')}${bytes.length > 48 ? '…' : ''}>`;
}

/**
 * A fetch that records each request, its status and headers, and (for 200 answers of
 * the stream endpoints) every chunk of the response body, in `frames`.
 */
function recordingFetch(frames) {
  return async (input, init = {}) => {
    const url = new URL(String(input));
    const method = init.method ?? 'GET';
    const id = ++requestSeq;
    const path = url.pathname;
    const headers = new Headers(init.headers ?? {});
    const binary = (headers.get('content-type') ?? '').includes('octet-stream');
    frames.push({ dir: 'out', at: Date.now(), id, path, method, query: url.search, body: init.body, text: `#${id} ${method} ${path}${url.search ? ' ' + safeDecode(url.search) : ''} ${bodyText(init.body)}` });
    let res;
    try {
      res = await fetch(input, init);
    } catch (err) {
      frames.push({ dir: 'fail', at: Date.now(), id, path, text: `#${id} ${method} ${path}: ${err.name}: ${err.message}${err.cause ? ` (${err.cause.message ?? err.cause})` : ''}` });
      throw err;
    }
    const resHeaders = Object.fromEntries(res.headers);
    frames.push({ dir: 'status', at: Date.now(), id, path, method, status: res.status, headers: resHeaders, text: `#${id} ${method} ${path} -> HTTP ${res.status} ${JSON.stringify(resHeaders)}` });
    if (res.status !== 200 || !res.body || path.endsWith('/emulation')) return res;
    const decoder = new TextDecoder();
    const tap = new TransformStream({
      transform(chunk, controller) {
        const text = binary ? bodyText(chunk) : decoder.decode(chunk, { stream: true });
        frames.push({ dir: 'in', at: Date.now(), id, path, binary, raw: Buffer.from(chunk), text: `#${id} ${text}` });
        controller.enqueue(chunk);
      },
      flush() {
        frames.push({ dir: 'end', at: Date.now(), id, path, text: `#${id} the response ended` });
      },
    });
    return new Response(res.body.pipeThrough(tap), { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** An EventSource class (the SDK's `eventsource` option) whose requests are recorded. */
function recordingEventSource(frames) {
  const f = recordingFetch(frames);
  return class RecordingEventSource extends EventSource {
    constructor(url, init = {}) {
      super(url, { ...init, fetch: f });
    }
  };
}

/** The text a response carried, by request id. */
function streamTexts(frames) {
  const texts = new Map();
  for (const f of frames) {
    if (f.dir !== 'in' || f.binary) continue;
    texts.set(f.id, (texts.get(f.id) ?? '') + f.raw.toString('utf8'));
  }
  return texts;
}

/** The JSON replies of JSON streams (http_stream lines or SSE `data:` lines), in order. */
function incoming(frames) {
  const replies = [];
  for (const [id, text] of streamTexts(frames)) {
    for (let line of text.split(/\r?\n/)) {
      if (line.startsWith('data:')) line = line.slice(5).trimStart();
      if (!line.trim()) continue;
      try {
        replies.push({ id, reply: JSON.parse(line) });
      } catch {
        replies.push({ id, reply: { unparsable: line } });
      }
    }
  }
  return replies;
}

/** The JSON commands the client sent (stream bodies, cf_connect, /emulation data), in order. */
function outgoing(frames) {
  const commands = [];
  const add = (text) => {
    for (const line of String(text).split('\n')) {
      if (!line.trim()) continue;
      try {
        commands.push(JSON.parse(line));
      } catch {
        commands.push({ unparsable: line });
      }
    }
  };
  for (const f of frames) {
    if (f.dir !== 'out') continue;
    if (f.path.endsWith('/emulation')) {
      if (typeof f.body === 'string') add(JSON.parse(f.body).data);
    } else if (typeof f.body === 'string') add(f.body);
    else if (f.query) {
      const q = new URLSearchParams(f.query).get('cf_connect');
      if (q) add(q);
    }
  }
  return commands;
}

// ---------------------------------------------------------------------------
// SDK clients over emulation, tracked and dumped on failure

const KINDS = [
  { name: 'http_stream', transport: 'http_stream', path: '/connection/http_stream', protobuf: false },
  { name: 'sse', transport: 'sse', path: '/connection/sse', protobuf: false },
  { name: 'http_stream protobuf', transport: 'http_stream', path: '/connection/http_stream', protobuf: true },
];

const CLIENT_EVENTS = ['state', 'connecting', 'connected', 'disconnected', 'error'];
const SUB_EVENTS = ['state', 'subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error'];
const tracked = { clients: [], notes: [] };

function emuClient(kind, { label = 'client', ...options } = {}) {
  const frames = [];
  const Sdk = kind.protobuf ? CentrifugeProtobuf : Centrifuge;
  const client = new Sdk([{ transport: kind.transport, endpoint: `${base()}${kind.path}` }], {
    emulationEndpoint: `${base()}/emulation`,
    fetch: recordingFetch(frames),
    eventsource: recordingEventSource(frames),
    minReconnectDelay: 200,
    maxReconnectDelay: 1_000,
    ...options,
  });
  const log = new EventLog(client, CLIENT_EVENTS, label);
  const handle = { client, log, frames, label, subs: [] };
  tracked.clients.push(handle);
  return handle;
}

function emuSubscription(handle, channel, options = {}) {
  const sub = handle.client.newSubscription(channel, options);
  const log = new EventLog(sub, SUB_EVENTS, `${handle.label} sub ${channel}`);
  handle.subs.push(log);
  return { sub, log };
}

function diagnostics() {
  const parts = [...tracked.notes];
  for (const h of tracked.clients) {
    parts.push(`--- ${h.label}: events ---\n${h.log.summary()}`);
    for (const s of h.subs) parts.push(`--- ${s.label}: events ---\n${s.summary()}`);
    parts.push(`--- ${h.label}: last requests and stream chunks ---\n${h.frames.slice(-50).map((f) => `  ${f.dir} ${f.text.slice(0, 600)}`).join('\n')}`);
  }
  parts.push(suite.server ? suite.server.logTail(150) : '(herald not running)');
  return parts.join('\n');
}

/** Closes what the test opened. */
async function closeTracked() {
  for (const h of tracked.clients) {
    try {
      h.client.disconnect();
    } catch {
      // nothing to do
    }
  }
  tracked.clients = [];
  tracked.notes = [];
  await sleep(50);
}

function etest(name, fn, { timeout = 20_000 } = {}) {
  diagnosedTest(name, fn, { timeout, diagnostics, cleanup: closeTracked });
}

/** Every /emulation POST of a client was answered 204 (waits for answers still on their way). */
async function assertEmulationAnswered(h) {
  const posts = () => h.frames.filter((f) => f.dir === 'out' && f.path === '/emulation');
  const settled = () => h.frames.filter((f) => (f.dir === 'status' || f.dir === 'fail') && f.path === '/emulation');
  const deadline = Date.now() + 2_000;
  while (settled().length < posts().length && Date.now() < deadline) await sleep(20);
  const bad = settled().filter((f) => f.dir === 'status' && f.status !== 204);
  assert.deepEqual(bad.map((f) => f.text), [], 'every POST /emulation answered 204');
  const failed = settled().filter((f) => f.dir === 'fail' && !/abort/i.test(f.text));
  assert.deepEqual(failed.map((f) => f.text), [], 'no POST /emulation failed');
  return posts().length;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** A payload as the kind's SDK takes it: JSON bytes for protobuf. */
const enc = (kind, value) => (kind.protobuf ? encoder.encode(JSON.stringify(value)) : value);
/** A payload the kind's SDK delivered, as a value. */
const dec = (kind, data) => (kind.protobuf ? JSON.parse(decoder.decode(data)) : data);

// ---------------------------------------------------------------------------
// SDK flows, per transport

for (const kind of KINDS) {
  etest(`${kind.name}: connect: ctx.transport, session and node in the connect result, stream headers, transport metrics`, async () => {
    const before = await metricsText();
    const connectsBefore = sample(before, 'herald_transport_connects_total', { transport: kind.transport }) ?? 0;
    const h = emuClient(kind, { label: kind.name, token: connectionToken({ sub: uniq('conn') }) });
    const ctx = await connect(h);
    assert.equal(ctx.transport, kind.transport, `connected over ${kind.transport}`);
    assert.ok(ctx.client, 'a client id');
    assert.match(String(h.client._session), UUID_RE, `the connect result carries session (a UUID), got ${JSON.stringify(h.client._session)}`);
    assert.ok(typeof h.client._node === 'string' && h.client._node.length > 0, `the connect result carries node, got ${JSON.stringify(h.client._node)}`);

    const opened = h.frames.find((f) => f.dir === 'status' && f.path === kind.path);
    assert.equal(opened?.status, 200, 'the stream request answered 200');
    const headers = opened.headers;
    assert.equal(headers['cache-control'], NO_CACHE, 'Cache-Control');
    assert.equal(headers.pragma, 'no-cache', 'Pragma');
    assert.equal(headers.expire, '0', 'Expire');
    const request = h.frames.find((f) => f.dir === 'out' && f.path === kind.path);
    if (kind.transport === 'http_stream') {
      assert.equal(request.method, 'POST');
      assert.equal(headers['x-accel-buffering'], 'no', 'X-Accel-Buffering');
    } else {
      assert.equal(request.method, 'GET');
      assert.ok(new URLSearchParams(request.query).get('cf_connect'), 'the SSE connect went in cf_connect');
      assert.equal(headers['content-type'], 'text/event-stream; charset=utf-8', 'Content-Type');
      const text = streamTexts(h.frames).get(opened.id) ?? '';
      assert.ok(text.startsWith('\r\n'), `the SSE stream starts with \\r\\n, got ${JSON.stringify(text.slice(0, 40))}`);
    }
    if (kind.protobuf) {
      assert.ok(typeof request.body !== 'string', 'the protobuf client posted binary commands');
      const chunk = h.frames.find((f) => f.dir === 'in' && f.id === opened.id);
      assert.ok(chunk && chunk.raw[0] !== 0x7b, 'the protobuf stream is not JSON');
    } else {
      const reply = incoming(h.frames).find((r) => r.reply.connect)?.reply.connect;
      assert.ok(reply, 'a connect reply on the stream');
      assert.equal(reply.session, h.client._session);
      assert.equal(reply.node, h.client._node);
      assert.equal(reply.client, ctx.client);
    }

    const during = await metricsText();
    const gauge = sample(during, 'herald_transport_connections', { transport: kind.transport });
    assert.ok(gauge >= 1, `herald_transport_connections{transport="${kind.transport}"} >= 1 while connected:\n${metricLines(during, 'herald_transport_connections')}`);
    const connects = sample(during, 'herald_transport_connects_total', { transport: kind.transport });
    assert.ok(connects >= connectsBefore + 1, `herald_transport_connects_total{transport="${kind.transport}"} counted the connection:\n${metricLines(during, 'herald_transport_connects_total')}`);

    h.client.disconnect();
    const deadline = Date.now() + 3_000;
    let now = gauge;
    while (Date.now() < deadline) {
      now = sample(await metricsText(), 'herald_transport_connections', { transport: kind.transport });
      if (now <= gauge - 1) break;
      await sleep(100);
    }
    assert.ok(now <= gauge - 1, `the gauge drops once the client went away (was ${gauge}, now ${now})`);
  });

  etest(`${kind.name}: subscribe with a subscription token, publish from the client, API publication`, async () => {
    const user = uniq('bob');
    const h = emuClient(kind, { label: kind.name, token: connectionToken({ sub: user, info: { name: 'Bob' } }) });
    const connected = await connect(h);
    const channel = `$secret:${uniq('room')}`;
    const requested = [];
    const s = emuSubscription(h, channel, {
      getToken: async (ctx) => {
        requested.push(ctx.channel);
        return subscriptionToken({ sub: user, channel: ctx.channel });
      },
    });
    const subscribed = await subscribe(s);
    assert.equal(subscribed.channel, channel);
    assert.deepEqual(requested, [channel], 'getToken asked once');
    if (!kind.protobuf) {
      const cmd = outgoing(h.frames).find((c) => c.subscribe?.channel === channel);
      assert.ok(cmd?.subscribe.token, 'the subscribe command (through /emulation) carried the token');
    }

    let since = s.log.mark();
    await within(s.sub.publish(enc(kind, { text: 'hello' })), 5_000, 'publish reply');
    const own = await s.log.waitFor('publication', { since, what: 'own publication' });
    assert.deepEqual(dec(kind, own.data), { text: 'hello' });
    assert.equal(own.info?.user, user);
    assert.equal(own.info.client, connected.client);

    since = s.log.mark();
    const reply = await api('publish', { channel, data: { from: 'api' } });
    assert.ok(reply.result, JSON.stringify(reply));
    const fromApi = await s.log.waitFor('publication', { since, what: 'API publication' });
    assert.deepEqual(dec(kind, fromApi.data), { from: 'api' });

    // Without a token: 103, terminal for the subscription; the connection stays.
    const noToken = emuSubscription(h, `$secret:${uniq('room')}`);
    const mark = noToken.log.mark();
    noToken.sub.subscribe();
    const refused = await noToken.log.waitFor('unsubscribed', { since: mark, what: 'subscribe without a token refused' });
    assert.equal(refused.code, 103);
    assert.equal(h.client.state, 'connected');
    const posts = await assertEmulationAnswered(h);
    assert.ok(posts >= 3, `the commands after connect went through POST /emulation (${posts} requests)`);
  });

  etest(`${kind.name}: presence, presence_stats and history`, async () => {
    const user = uniq('carol');
    const h = emuClient(kind, { label: kind.name, token: connectionToken({ sub: user }) });
    const connected = await connect(h);
    const channel = uniq('general');
    const s = emuSubscription(h, channel);
    await subscribe(s);
    const since = s.log.mark();
    await within(s.sub.publish(enc(kind, { n: 1 })), 5_000, 'publish n=1');
    await within(s.sub.publish(enc(kind, { n: 2 })), 5_000, 'publish n=2');
    await s.log.waitFor('publication', { since, pred: () => s.log.all('publication', since).length >= 2, what: 'both publications' });

    const presence = await within(s.sub.presence(), 5_000, 'presence');
    assert.deepEqual(Object.keys(presence.clients), [connected.client], 'presence lists exactly this client');
    assert.equal(presence.clients[connected.client].user, user);
    const stats = await within(s.sub.presenceStats(), 5_000, 'presence_stats');
    assert.deepEqual(stats, { numClients: 1, numUsers: 1 });

    const hist = await within(s.sub.history({ limit: 10 }), 5_000, 'history');
    assert.deepEqual(hist.publications.map((p) => dec(kind, p.data)), [{ n: 1 }, { n: 2 }]);
    assert.deepEqual(hist.publications.map((p) => Number(p.offset)), [1, 2]);
    assert.equal(Number(hist.offset), 2);
    assert.ok(hist.epoch, 'history has an epoch');
    await assertEmulationAnswered(h);
  });

  etest(`${kind.name}: recovery after a reconnect: wasRecovering, recovered, the missed publications`, async () => {
    const channel = `stream:${uniq('feed')}`;
    const reader = emuClient(kind, { label: `${kind.name} reader`, token: connectionToken({ sub: uniq('reader') }) });
    await connect(reader);
    const s = emuSubscription(reader, channel);
    const first = await subscribe(s);
    assert.equal(first.recoverable, true, 'force_recovery makes the subscription recoverable');
    assert.ok(first.streamPosition?.epoch, 'a recoverable subscription has an epoch');

    let since = s.log.mark();
    await api('publish', { channel, data: { n: 0 } });
    const p0 = await s.log.waitFor('publication', { since, what: 'live publication n=0' });

    const down = reader.log.mark();
    reader.client.disconnect();
    await reader.log.waitFor('disconnected', { since: down, what: 'client.disconnect()' });
    for (const n of [1, 2]) await api('publish', { channel, data: { n } });

    since = s.log.mark();
    reader.client.connect();
    const resubscribed = await s.log.waitFor('subscribed', { since, timeout: 10_000, what: 'resubscribe after reconnect' });
    assert.equal(resubscribed.wasRecovering, true, 'wasRecovering');
    assert.equal(resubscribed.recovered, true, 'recovered');
    await s.log.waitFor('publication', { since, pred: () => s.log.all('publication', since).length >= 2, what: '2 recovered publications' });
    await sleep(200);
    const got = s.log.all('publication', since);
    assert.deepEqual(got.map((p) => dec(kind, p.data)), [{ n: 1 }, { n: 2 }], 'exactly the missed publications, in order');
    assert.deepEqual(got.map((p) => Number(p.offset)), [Number(p0.offset) + 1, Number(p0.offset) + 2]);
    if (!kind.protobuf) {
      const resub = outgoing(reader.frames).filter((c) => c.subscribe?.channel === channel).pop();
      assert.equal(resub?.subscribe.recover, true, 'the SDK resubscribed with recover:true');
    }

    since = s.log.mark();
    await api('publish', { channel, data: { n: 3 } });
    const live = await s.log.waitFor('publication', { since, what: 'live publication after recovery' });
    assert.deepEqual(dec(kind, live.data), { n: 3 });
    await assertEmulationAnswered(reader);
  });

  etest(`${kind.name}: rpc is refused with 108, the connection stays; an API disconnect reaches the client`, async () => {
    const user = uniq('dave');
    const h = emuClient(kind, { label: kind.name, token: connectionToken({ sub: user }) });
    await connect(h);
    let refused = null;
    try {
      await within(h.client.rpc('some.method', enc(kind, { q: 1 })), 5_000, 'rpc reply');
    } catch (err) {
      refused = err;
    }
    assert.equal(refused?.code, 108, `rpc: error 108, got ${JSON.stringify(refused)} ${refused?.message ?? ''}`);
    assert.equal(h.client.state, 'connected');

    const mark = h.log.mark();
    const reply = await api('disconnect', { user, disconnect: { code: 4107, reason: 'bye from the API' } });
    assert.ok(reply.result, JSON.stringify(reply));
    const closed = await h.log.waitFor(['disconnected', 'connecting'], { since: mark, pred: (c) => c.code >= 3000, what: 'API disconnect' });
    assert.equal(closed.code, 4107, `the API disconnect code, got ${closed.code} ${closed.reason}`);
    assert.equal(closed.reason, 'bye from the API');
    if (!kind.protobuf) {
      const push = incoming(h.frames).find((r) => r.reply.push?.disconnect);
      assert.deepEqual(push?.reply.push.disconnect, { code: 4107, reason: 'bye from the API' }, 'a disconnect push on the stream');
    }
  });

  etest(
    `${kind.name}: connection token refresh through /emulation keeps the connection past the first token's expiry`,
    async () => {
      const user = uniq('refresher');
      const exp = nowSec() + 2;
      let calls = 0;
      const h = emuClient(kind, {
        label: kind.name,
        token: connectionToken({ sub: user, exp }),
        getToken: async () => {
          calls++;
          return connectionToken({ sub: user, exp: nowSec() + 2 });
        },
      });
      const since = h.log.mark();
      await connect(h);
      // Past the first token's expiry plus expired_close_delay (1 s), with margin.
      await sleep(Math.max(0, exp * 1000 + 2_500 - Date.now()));
      assert.equal(h.client.state, 'connected');
      assert.deepEqual(h.log.all('disconnected', since), [], 'no disconnect');
      assert.equal(h.log.all('connected', since).length, 1, 'one connection all along');
      assert.deepEqual(h.log.all('error', since), [], 'no SDK error');
      assert.ok(calls >= 1, `getToken called, got ${calls}`);
      if (!kind.protobuf) {
        const refreshes = outgoing(h.frames).filter((c) => c.refresh);
        assert.ok(refreshes.length >= 1, 'refresh commands were sent');
        const ids = new Set(refreshes.map((c) => c.id));
        const answers = incoming(h.frames).filter((r) => ids.has(r.reply.id));
        assert.equal(answers.length, ids.size, 'every refresh answered on the stream');
        for (const { reply } of answers) assert.equal(reply.refresh?.expires, true, JSON.stringify(reply));
      }
      await assertEmulationAnswered(h);
    },
    { timeout: 20_000 },
  );
}

// ---------------------------------------------------------------------------
// Raw requests

/** Opens a streaming request; the body is collected as text in the background. */
async function openStream(url, init = {}) {
  const ac = new AbortController();
  const res = await within(fetch(url, { ...init, signal: ac.signal }), 5_000, `${init.method ?? 'GET'} ${new URL(url).pathname}`);
  const st = { res, status: res.status, headers: res.headers, text: '', ended: false };
  st.close = () => ac.abort();
  st.done = (async () => {
    if (!res.body) return;
    const d = new TextDecoder();
    try {
      for await (const chunk of res.body) st.text += d.decode(chunk, { stream: true });
    } catch {
      // aborted
    }
    st.ended = true;
  })();
  tracked.notes.push({
    toString: () => `--- raw ${init.method ?? 'GET'} ${new URL(url).pathname}: HTTP ${st.status}${st.ended ? ', ended' : ''} ---\n${JSON.stringify(st.text.slice(-2000))}`,
  });
  return st;
}

/** The JSON objects of a stream's text (lines, or SSE `data:` lines). */
function jsonLines(text) {
  const out = [];
  for (let line of text.split(/\r?\n/)) {
    if (line.startsWith('data:')) line = line.slice(5).trimStart();
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      out.push({ unparsable: line });
    }
  }
  return out;
}

async function waitUntil(pred, what, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pred()) return;
    await sleep(20);
  }
  if (!pred()) throw new Error(`timed out after ${ms} ms: ${what}`);
}

/** A raw http_stream connection: resolves with the stream and its connect result. */
async function rawHttpStream(token, extraHeaders = {}) {
  const st = await openStream(`${base()}/connection/http_stream`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...extraHeaders },
    body: JSON.stringify({ id: 1, connect: { token } }),
  });
  assert.equal(st.status, 200, `POST /connection/http_stream: HTTP ${st.status} ${st.text}`);
  await waitUntil(() => jsonLines(st.text).some((r) => r.id === 1), 'the connect reply on the raw stream');
  const reply = jsonLines(st.text).find((r) => r.id === 1);
  assert.ok(reply.connect, `a connect result: ${JSON.stringify(reply)}`);
  return { st, result: reply.connect };
}

async function request(path, init = {}) {
  const res = await within(fetch(`${base()}${path}`, init), 5_000, `${init.method ?? 'GET'} ${path}`);
  const text = await res.text();
  return { status: res.status, headers: res.headers, text };
}

/** Runs each case; the list of cases whose status was not the expected one. */
async function wrongStatuses(cases) {
  const wrong = [];
  for (const c of cases) {
    const got = await c.run();
    if (got.status !== c.want) wrong.push(`${c.what}: want HTTP ${c.want}, got ${got.status} ${JSON.stringify(got.text.slice(0, 300))}`);
  }
  return wrong;
}

etest('http_stream bad input: GET 405, empty or undecodable body 400, body over max_request_body_size 413; refusals counted', async () => {
  const before = await metricsText();
  const refusal = (text, reason) => sample(text, 'herald_transport_refusals_total', { transport: 'http_stream', reason }) ?? 0;
  const path = '/connection/http_stream';
  const json = { 'Content-Type': 'application/json' };
  const big = JSON.stringify({ id: 1, connect: { token: connectionToken({ sub: uniq('big') }), data: { pad: 'x'.repeat(BODY_LIMIT) } } });
  const wrong = await wrongStatuses([
    { what: 'GET', want: 405, run: () => request(path) },
    { what: 'PUT', want: 405, run: () => request(path, { method: 'PUT', headers: json, body: '{}' }) },
    { what: 'empty JSON body', want: 400, run: () => request(path, { method: 'POST', headers: json, body: '' }) },
    { what: 'invalid JSON body', want: 400, run: () => request(path, { method: 'POST', headers: json, body: '{"id":1,"connect":' }) },
    { what: 'a JSON body that is no command', want: 400, run: () => request(path, { method: 'POST', headers: json, body: '[1,2,3]' }) },
    { what: 'undecodable protobuf body', want: 400, run: () => request(path, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: Buffer.from([0x80]) }) },
    { what: `a body of ${big.length} bytes over ${BODY_LIMIT}`, want: 413, run: () => request(path, { method: 'POST', headers: json, body: big }) },
  ]);

  const after = await metricsText();
  for (const [reason, n] of [['method', 2], ['bad_request', 4], ['too_large', 1]]) {
    const diff = refusal(after, reason) - refusal(before, reason);
    if (diff < n) wrong.push(`herald_transport_refusals_total{transport="http_stream",reason="${reason}"} rose by ${diff}, want ${n}`);
  }
  const series = after.split('\n').filter((l) => l.startsWith('herald_transport_refusals_total') && l.includes('transport="http_stream"'));
  assert.deepEqual(wrong, [], `${wrong.join('\n')}\n${series.join('\n')}`);

  // The server still serves.
  const { st } = await rawHttpStream(connectionToken({ sub: uniq('after') }));
  st.close();
});

etest('sse raw: GET without cf_connect 400; POST with the commands as body streams text/event-stream', async () => {
  const missing = await request('/connection/sse');
  assert.equal(missing.status, 400, `GET without cf_connect: ${missing.status} ${missing.text}`);

  const st = await openStream(`${base()}/connection/sse`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ id: 1, connect: { token: connectionToken({ sub: uniq('sse-post') }) } }),
  });
  assert.equal(st.status, 200, `POST /connection/sse: ${st.status} ${st.text}`);
  assert.equal(st.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  await waitUntil(() => jsonLines(st.text).some((r) => r.id === 1), 'the connect reply as an SSE event');
  assert.ok(st.text.startsWith('\r\n'), `first write \\r\\n, got ${JSON.stringify(st.text.slice(0, 30))}`);
  assert.match(st.text, /\r\ndata: \{"id":1,"connect":\{.*\}\}\n\n/, 'the reply as `data: <json>\\n\\n`');
  const result = jsonLines(st.text).find((r) => r.id === 1).connect;
  assert.match(String(result?.session), UUID_RE, `session in the connect result: ${JSON.stringify(result)}`);
  assert.ok(result.node, 'node in the connect result');
  st.close();
});

etest('/emulation: raw routing to the session, GET 405, invalid body 400, over the limit 413, unknown node 404, unknown session 204', async () => {
  const before = await metricsText();
  const emu = (text, result) => sample(text, 'herald_emulation_requests_total', { result }) ?? 0;
  const { st, result } = await rawHttpStream(connectionToken({ sub: uniq('raw') }));
  assert.match(String(result.session), UUID_RE, `session: ${JSON.stringify(result)}`);
  assert.ok(result.node, `node: ${JSON.stringify(result)}`);
  const post = (body, headers = { 'Content-Type': 'application/json' }) =>
    request('/emulation', { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });

  // Commands for the session come out on its stream, in order.
  const data = [{ id: 2, rpc: { method: 'm', data: {} } }, { id: 3, unsubscribe: { channel: uniq('nobody') } }].map((c) => JSON.stringify(c)).join('\n');
  const routed = await post({ session: result.session, node: result.node, data });
  assert.equal(routed.status, 204, `a valid emulation request: ${routed.status} ${routed.text}`);
  await waitUntil(() => jsonLines(st.text).some((r) => r.id === 3), 'the replies of the emulated commands on the stream');
  const replies = jsonLines(st.text).filter((r) => r.id === 2 || r.id === 3);
  assert.deepEqual(replies.map((r) => r.id), [2, 3], 'in order');
  assert.equal(replies[0].error?.code, 108, `rpc over emulation: 108, got ${JSON.stringify(replies[0])}`);
  assert.deepEqual(replies[1], { id: 3, unsubscribe: {} }, 'the second command answered');

  const get = await request('/emulation');
  assert.equal(get.status, 405, `GET /emulation: ${get.status} ${get.text}`);
  const invalid = await post('{"session":');
  assert.equal(invalid.status, 400, `invalid JSON: ${invalid.status} ${invalid.text}`);
  const big = await post({ session: result.session, node: result.node, data: 'x'.repeat(BODY_LIMIT + 100) });
  assert.equal(big.status, 413, `over emulation.max_request_body_size: ${big.status} ${big.text}`);
  const unknownNode = await post({ session: randomUUID(), node: `no-such-node-${randomUUID()}`, data: '{"id":9,"presence_stats":{"channel":"x"}}' });
  assert.equal(unknownNode.status, 404, `unknown node: ${unknownNode.status} ${unknownNode.text}`);
  const unknownSession = await post({ session: randomUUID(), node: result.node, data: '{"id":9,"presence_stats":{"channel":"x"}}' });
  assert.equal(unknownSession.status, 204, `unknown session on a known node: ${unknownSession.status} ${unknownSession.text}`);
  assert.equal(st.ended, false, 'the live stream is untouched');
  assert.ok(!jsonLines(st.text).some((r) => r.id === 9), 'nothing of the other requests reached this stream');

  const after = await metricsText();
  const lines = metricLines(after, 'herald_emulation_requests_total');
  assert.ok(emu(after, 'local') >= emu(before, 'local') + 1, `emulation_requests{result="local"}:\n${lines}`);
  assert.ok(emu(after, 'unknown_node') >= emu(before, 'unknown_node') + 1, `emulation_requests{result="unknown_node"}:\n${lines}`);
  assert.ok(emu(after, 'bad_request') >= emu(before, 'bad_request') + 1, `emulation_requests{result="bad_request"}:\n${lines}`);
  assert.ok(emu(after, 'too_large') >= emu(before, 'too_large') + 1, `emulation_requests{result="too_large"}:\n${lines}`);
  st.close();
});

etest('CORS: an Origin outside allowed_origins gets 403; an allowed one is echoed; OPTIONS preflight 204', async () => {
  const before = await metricsText();
  const token = connectionToken({ sub: uniq('cors') });
  const connectBody = JSON.stringify({ id: 1, connect: { token } });
  const cfConnect = `cf_connect=${encodeURIComponent(connectBody)}`;

  for (const path of ['/connection/http_stream', '/emulation', '/connection/sse']) {
    const pre = await request(path, {
      method: 'OPTIONS',
      headers: { Origin: GOOD_ORIGIN, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type, x-custom' },
    });
    assert.equal(pre.status, 204, `OPTIONS ${path}: ${pre.status} ${pre.text}`);
    assert.equal(pre.headers.get('access-control-allow-origin'), GOOD_ORIGIN, `OPTIONS ${path}: Access-Control-Allow-Origin`);
    assert.equal(pre.headers.get('access-control-allow-credentials'), 'true', `OPTIONS ${path}: Access-Control-Allow-Credentials`);
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /content-type, x-custom/i, `OPTIONS ${path}: Access-Control-Allow-Headers echoes the request`);
    assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/, `OPTIONS ${path}: Access-Control-Allow-Methods`);
    assert.equal(pre.headers.get('access-control-max-age'), '300', `OPTIONS ${path}: Access-Control-Max-Age`);
  }

  const evil = { Origin: EVIL_ORIGIN, 'Content-Type': 'application/json' };
  const refusedStream = await request('/connection/http_stream', { method: 'POST', headers: evil, body: connectBody });
  assert.equal(refusedStream.status, 403, `POST /connection/http_stream from ${EVIL_ORIGIN}: ${refusedStream.status} ${refusedStream.text}`);
  const refusedEmu = await request('/emulation', { method: 'POST', headers: evil, body: JSON.stringify({ session: randomUUID(), node: 'x', data: '{}' }) });
  assert.equal(refusedEmu.status, 403, `POST /emulation from ${EVIL_ORIGIN}: ${refusedEmu.status} ${refusedEmu.text}`);
  const refusedSse = await request(`/connection/sse?${cfConnect}`, { headers: { Origin: EVIL_ORIGIN } });
  assert.equal(refusedSse.status, 403, `GET /connection/sse from ${EVIL_ORIGIN}: ${refusedSse.status} ${refusedSse.text}`);
  const refusedPre = await request('/connection/http_stream', { method: 'OPTIONS', headers: { Origin: EVIL_ORIGIN, 'Access-Control-Request-Method': 'POST' } });
  assert.equal(refusedPre.status, 403, `OPTIONS from ${EVIL_ORIGIN}: ${refusedPre.status} ${refusedPre.text}`);
  assert.equal(refusedPre.headers.get('access-control-allow-origin'), null, 'no CORS headers for a refused origin');

  const { st } = await rawHttpStream(connectionToken({ sub: uniq('good') }), { Origin: GOOD_ORIGIN });
  assert.equal(st.headers.get('access-control-allow-origin'), GOOD_ORIGIN, 'the allowed origin is echoed');
  assert.equal(st.headers.get('access-control-allow-credentials'), 'true');
  st.close();
  const sse = await openStream(`${base()}/connection/sse?${cfConnect}`, { headers: { Origin: GOOD_ORIGIN } });
  assert.equal(sse.status, 200, `GET /connection/sse from ${GOOD_ORIGIN}: ${sse.status}`);
  assert.equal(sse.headers.get('access-control-allow-origin'), GOOD_ORIGIN);
  sse.close();

  const after = await metricsText();
  const origin = (text, transport) => sample(text, 'herald_transport_refusals_total', { transport, reason: 'origin' }) ?? 0;
  const lines = metricLines(after, 'herald_transport_refusals_total');
  assert.ok(origin(after, 'http_stream') >= origin(before, 'http_stream') + 1, `refusals{transport="http_stream",reason="origin"}:\n${lines}`);
  assert.ok(origin(after, 'sse') >= origin(before, 'sse') + 1, `refusals{transport="sse",reason="origin"}:\n${lines}`);
});

etest('a token in the cf_connect query never appears in the logs (debug level), the access log has the path', async () => {
  const good = connectionToken({ sub: uniq('secret-user') });
  const bad = connectionToken({ sub: uniq('forged-user') }, 'not-the-server-secret-but-32-bytes-long');
  const expired = connectionToken({ sub: uniq('expired-user'), exp: nowSec() - 60 });
  const tokens = [good, bad, expired];
  for (const token of tokens) {
    const q = encodeURIComponent(JSON.stringify({ id: 1, connect: { token } }));
    const st = await openStream(`${base()}/connection/sse?cf_connect=${q}`);
    assert.equal(st.status, 200, `GET /connection/sse: ${st.status} ${st.text}`);
    await waitUntil(() => jsonLines(st.text).length > 0 || st.ended, 'a reply on the SSE stream');
    st.close();
  }
  // The same tokens in a query the SSE handler refuses.
  const refused = await request(`/connection/http_stream?cf_connect=${encodeURIComponent(good)}`);
  assert.equal(refused.status, 405);
  await sleep(300);
  const logs = suite.server.logs();
  for (const token of tokens) {
    const [, payload, signature] = token.split('.');
    assert.ok(!logs.includes(signature), `a token signature is in the logs: ${signature}`);
    assert.ok(!logs.includes(payload), `a token payload is in the logs: ${payload}`);
    assert.ok(!logs.includes(encodeURIComponent(token).slice(-20)), 'a url-encoded token is in the logs');
  }
  assert.ok(!logs.includes('cf_connect='), 'no query string with cf_connect in the logs');
  assert.ok(logs.includes('/connection/sse'), 'the access log names the path');
});

etest('a slow http_stream reader is cut off with 3008 at client.queue_max_size, like a WebSocket one', async () => {
  const channel = uniq('slow');
  const body = [
    JSON.stringify({ id: 1, connect: { token: connectionToken({ sub: uniq('slow') }) } }),
    JSON.stringify({ id: 2, subscribe: { channel } }),
  ].join('\n');
  const { hostname, port } = new URL(base());
  const socket = net.connect({ host: hostname, port: Number(port) });
  let seen = '';
  const subscribed = new Promise((resolve, reject) => {
    socket.on('data', (chunk) => {
      seen += chunk.toString('latin1');
      if (seen.includes('"id":2,"subscribe"')) resolve();
    });
    socket.on('error', reject);
  });
  socket.write(
    `POST /connection/http_stream HTTP/1.1\r\nHost: ${hostname}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  try {
    await within(subscribed, 5_000, `the subscribe reply (read so far: ${JSON.stringify(seen.slice(0, 400))})`);
    socket.pause(); // reads no more: the kernel buffers fill, then the connection's Outbox
    const before = sample(await metricsText(), 'herald_client_num_server_disconnects_total', { code: '3008' }) ?? 0;
    const payload = { pad: 'x'.repeat(60_000) };
    let published = 0;
    let after = before;
    while (after === before && published < 1_500) {
      for (let i = 0; i < 50; i++, published++) await api('publish', { channel, data: payload });
      after = sample(await metricsText(), 'herald_client_num_server_disconnects_total', { code: '3008' }) ?? 0;
    }
    assert.equal(after, before + 1, `one 3008 disconnect after ${published} publications of 60 kB to a reader that stopped`);
    // The close cannot go out (the reader stopped): after the 10 s linger the
    // connection is dropped and the Session ends, its gauge back at 0.
    let dropped = false;
    for (let i = 0; i < 200 && !dropped; i++) {
      const text = await metricsText();
      dropped = (sample(text, 'herald_transport_connections', { transport: 'http_stream' }) ?? 0) === 0;
      if (!dropped) await sleep(100);
    }
    assert.ok(dropped, `herald_transport_connections{transport="http_stream"} did not drop:\n${metricLines(await metricsText(), 'herald_transport_connections')}`);
    // The server gave the socket up: what was in flight drains, then the end.
    const ended = new Promise((resolve) => socket.once('close', resolve));
    socket.on('data', () => {});
    socket.resume();
    await within(ended, 10_000, 'the server closing the connection of the reader that stopped');
  } finally {
    socket.destroy();
  }
}, { timeout: 60_000 });
