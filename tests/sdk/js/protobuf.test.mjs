// The protobuf client protocol with the real centrifuge-js protobuf build
// (`centrifuge/build/protobuf`, what the mobile and .NET SDKs speak): the JSON suite's
// scenarios, JSON and protobuf clients on one channel, the server API's b64data, and bad
// input on raw sockets (docs/protocol.md, "Protobuf").
//
// In protobuf mode the SDK takes and gives payloads as bytes; herald carries JSON, so the
// tests put JSON text in those bytes.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import WebSocket from 'ws';

import {
  apiCall,
  connect,
  connectionToken,
  nowSec,
  serverSuite,
  signHs256,
  sleep,
  subscribe,
  subscriptionToken,
  testConfig,
  uniq,
  within,
} from './harness.mjs';

const API_KEY = `api-key-${randomBytes(16).toString('hex')}`;
const history = { history_size: 100, history_ttl: '300s' };
const MESSAGE_SIZE_LIMIT = 4096;

const suite = serverSuite(
  testConfig({
    http_api: { key: API_KEY },
    client: {
      ping_interval: '1s',
      pong_timeout: '500ms',
      expired_close_delay: '1s',
      presence_update_interval: '1s',
      message_size_limit: MESSAGE_SIZE_LIMIT,
    },
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
        { name: 'secret', allow_publish_for_client: true },
        { name: 'stream', ...history, force_recovery: true, allow_subscribe_for_client: true, allow_publish_for_client: true },
        {
          // Binary data: protobuf clients only.
          name: 'bin',
          ...history,
          force_recovery: true,
          publication_data_format: 'binary',
          allow_subscribe_for_client: true,
          allow_publish_for_client: true,
          allow_history_for_client: true,
        },
        {
          name: 'rooms',
          presence: true,
          join_leave: true,
          force_push_join_leave: true,
          allow_subscribe_for_client: true,
          allow_publish_for_client: true,
          allow_presence_for_client: true,
        },
      ],
    },
  }),
  { label: 'herald (protobuf)' },
);

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** A value as the protobuf SDK sends it: its JSON text in bytes. */
const bytes = (value) => encoder.encode(JSON.stringify(value));
/** A payload the protobuf SDK received, parsed (it must be JSON). */
const parsed = (data) => {
  assert.ok(data instanceof Uint8Array, `a protobuf payload arrives as bytes, got ${typeof data}`);
  return JSON.parse(decoder.decode(data));
};

/** POST /api/<method> with the suite's key; the parsed reply (HTTP 200 required). */
const api = (method, body) => apiCall(suite.server.apiUrl, API_KEY, method, body);

/** One series of /metrics, 0 when absent. */
async function metric(name, labels) {
  const res = await within(fetch(`${suite.server.apiUrl}/metrics`), 5_000, 'GET /metrics');
  const text = await res.text();
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(want));
  return line ? Number(line.split(' ').pop()) : 0;
}

const binaryFrames = (frames, dir, hex) => frames.filter((f) => f.dir === dir && f.binary && f.text === `<binary 1 bytes: ${hex}>`);

suite.test('connect with a token, publish and receive with info, presence, presence_stats, history', async () => {
  const user = uniq('alice');
  const info = { name: 'Alice' };
  const alice = suite.client({ label: 'alice', protobuf: true, token: connectionToken({ sub: user, info }) });
  const connected = await connect(alice);
  assert.ok(connected.client, 'the connect reply carries a client id');
  assert.equal(alice.client._transport?._transport?.protocol, 'centrifuge-protobuf', 'herald echoed the protobuf subprotocol');
  assert.ok(alice.frames.some((f) => f.binary && f.dir === 'in'), 'replies come in binary messages');
  assert.ok(!alice.frames.some((f) => f.dir === 'in' && !f.binary), 'no text message reaches a protobuf client');

  const channel = uniq('general');
  const s = suite.subscription(alice, channel);
  await subscribe(s);

  const data = { text: 'hello', n: 1 };
  const since = s.log.mark();
  await within(s.sub.publish(bytes(data)), 5_000, 'publish reply');
  const pub = await s.log.waitFor('publication', { since, what: 'own publication' });
  assert.equal(pub.channel, channel);
  assert.deepEqual(parsed(pub.data), data);
  assert.equal(pub.info?.user, user, 'info.user is the token sub');
  assert.equal(pub.info.client, connected.client);
  assert.deepEqual(parsed(pub.info.connInfo), info, 'info.conn_info is the token info claim, as JSON bytes');
  assert.ok(Number(pub.offset) > 0, `history channel publication has an offset, got ${pub.offset}`);

  const presence = await within(s.sub.presence(), 5_000, 'presence reply');
  assert.deepEqual(Object.keys(presence.clients), [connected.client], 'presence lists exactly this client');
  assert.equal(presence.clients[connected.client].user, user);

  const stats = await within(s.sub.presenceStats(), 5_000, 'presence_stats reply');
  assert.deepEqual(stats, { numClients: 1, numUsers: 1 });

  const hist = await within(s.sub.history({ limit: 10 }), 5_000, 'history reply');
  assert.equal(hist.publications.length, 1, 'history holds the one publication');
  assert.deepEqual(parsed(hist.publications[0].data), data);
  assert.equal(Number(hist.publications[0].offset), Number(pub.offset));
  assert.equal(Number(hist.offset), Number(pub.offset), 'stream top is the last offset');
  assert.ok(hist.epoch, 'history has an epoch');
});

suite.test('private $ channel: subscription token from getToken; without one, 103', async () => {
  const user = uniq('bob');
  const bob = suite.client({ label: 'bob', protobuf: true, token: connectionToken({ sub: user }) });
  await connect(bob);

  const channel = `$secret:${uniq('room')}`;
  const requested = [];
  const s = suite.subscription(bob, channel, {
    getToken: async (ctx) => {
      requested.push(ctx.channel);
      return subscriptionToken({ sub: user, channel: ctx.channel });
    },
  });
  await subscribe(s);
  assert.deepEqual(requested, [channel]);

  const since = s.log.mark();
  await within(s.sub.publish(bytes({ secret: 42 })), 5_000, 'publish reply');
  const pub = await s.log.waitFor('publication', { since, what: 'publication on the private channel' });
  assert.deepEqual(parsed(pub.data), { secret: 42 });

  const noToken = suite.subscription(bob, `$secret:${uniq('room')}`);
  const mark = noToken.log.mark();
  noToken.sub.subscribe();
  const refused = await noToken.log.waitFor('unsubscribed', { since: mark, what: 'subscribe without token refused' });
  assert.equal(refused.code, 103);
  assert.equal(bob.client.state, 'connected');
});

suite.test('recovery: missed publications arrive in order after reconnect, recovered=true', async () => {
  const channel = `stream:${uniq('feed')}`;
  const reader = suite.client({ label: 'reader', protobuf: true, token: connectionToken({ sub: uniq('reader') }) });
  const writer = suite.client({ label: 'writer', protobuf: true, token: connectionToken({ sub: uniq('writer') }) });
  await connect(reader);
  await connect(writer);

  const s = suite.subscription(reader, channel);
  const first = await subscribe(s);
  assert.equal(first.recoverable, true, 'force_recovery makes the subscription recoverable');
  assert.ok(first.streamPosition?.epoch, 'a recoverable subscription has an epoch');

  let since = s.log.mark();
  await within(writer.client.publish(channel, bytes({ n: 0 })), 5_000, 'publish n=0');
  const p0 = await s.log.waitFor('publication', { since, what: 'live publication n=0' });

  const down = reader.log.mark();
  reader.client.disconnect();
  await reader.log.waitFor('disconnected', { since: down, what: 'client.disconnect()' });
  for (let n = 1; n <= 5; n++) {
    await within(writer.client.publish(channel, bytes({ n })), 5_000, `publish n=${n}`);
  }

  since = s.log.mark();
  reader.client.connect();
  const resubscribed = await s.log.waitFor('subscribed', { since, timeout: 10_000, what: 'resubscribe after reconnect' });
  assert.equal(resubscribed.wasRecovering, true, 'subscribed context: wasRecovering');
  assert.equal(resubscribed.recovered, true, 'subscribed context: recovered');
  await s.log.waitFor('publication', {
    since,
    pred: () => s.log.all('publication', since).length >= 5,
    what: '5 recovered publications',
  });
  await sleep(300);
  const recovered = s.log.all('publication', since);
  assert.deepEqual(
    recovered.map((p) => parsed(p.data)),
    [1, 2, 3, 4, 5].map((n) => ({ n })),
    'exactly the missed publications, in order, once',
  );
  assert.deepEqual(
    recovered.map((p) => Number(p.offset)),
    [1, 2, 3, 4, 5].map((i) => Number(p0.offset) + i),
  );
});

suite.test('JSON and protobuf clients share a channel: publications, join/leave, presence', async () => {
  const channel = `rooms:${uniq('mixed')}`;
  const json = suite.client({ label: 'json', token: connectionToken({ sub: uniq('json'), info: { kind: 'json' } }) });
  const proto = suite.client({ label: 'proto', protobuf: true, token: connectionToken({ sub: uniq('proto'), info: { kind: 'proto' } }) });
  const jsonConnected = await connect(json);
  const protoConnected = await connect(proto);
  const js = suite.subscription(json, channel);
  await subscribe(js);
  const ps = suite.subscription(proto, channel);
  await subscribe(ps);

  const join = await js.log.waitFor('join', {
    pred: (ctx) => ctx.info.client === protoConnected.client,
    what: "the protobuf client's join, seen by the JSON client",
  });
  assert.deepEqual(join.info.connInfo, { kind: 'proto' });

  const since = { json: js.log.mark(), proto: ps.log.mark() };
  await within(js.sub.publish({ from: 'json' }), 5_000, 'JSON publish');
  await within(ps.sub.publish(bytes({ from: 'proto' })), 5_000, 'protobuf publish');
  const apiReply = await api('publish', { channel, data: { from: 'api' } });
  assert.ok(apiReply.result, JSON.stringify(apiReply));
  const apiB64 = await api('publish', { channel, b64data: Buffer.from(JSON.stringify({ from: 'api-b64' })).toString('base64') });
  assert.ok(apiB64.result, `b64data of JSON is accepted: ${JSON.stringify(apiB64)}`);

  const want = [{ from: 'json' }, { from: 'proto' }, { from: 'api' }, { from: 'api-b64' }];
  for (const [log, mark, read] of [
    [js.log, since.json, (d) => d],
    [ps.log, since.proto, parsed],
  ]) {
    await log.waitFor('publication', { since: mark, pred: () => log.all('publication', mark).length >= 4, what: '4 publications' });
    assert.deepEqual(log.all('publication', mark).map((p) => read(p.data)), want, `${log.label}: all four, in order`);
  }
  assert.ok(!json.frames.some((f) => f.dir === 'in' && f.binary), 'the JSON client never got a binary message');

  const presence = await within(js.sub.presence(), 5_000, 'presence');
  assert.deepEqual(Object.keys(presence.clients).sort(), [jsonConnected.client, protoConnected.client].sort(), 'presence lists both kinds');

  const leaveMark = js.log.mark();
  ps.sub.unsubscribe();
  const leave = await js.log.waitFor('leave', { since: leaveMark, pred: (ctx) => ctx.info.client === protoConnected.client, what: 'leave' });
  assert.equal(leave.channel, channel);
});

suite.test('a payload that is not JSON: publish gets 107 and the connection stays; API b64data the same', async () => {
  const h = suite.client({ label: 'binary', protobuf: true, token: connectionToken({ sub: uniq('binary') }) });
  await connect(h);
  const channel = uniq('binary');
  const s = suite.subscription(h, channel);
  await subscribe(s);
  const before = await metric('herald_client_bad_messages_total', { format: 'protobuf', reason: 'payload_not_json' });

  let refused = null;
  try {
    await within(s.sub.publish(new Uint8Array([0x01, 0xff, 0x7b])), 5_000, 'publish of non-JSON bytes');
  } catch (err) {
    refused = err;
  }
  assert.equal(refused?.code, 107, `publish of bytes that are not JSON: error 107, got ${JSON.stringify(refused)}`);
  assert.equal(h.client.state, 'connected', 'the connection stays');
  const since = s.log.mark();
  await within(s.sub.publish(bytes({ ok: true })), 5_000, 'a valid publish afterwards');
  const pub = await s.log.waitFor('publication', { since, what: 'the valid publication' });
  assert.deepEqual(parsed(pub.data), { ok: true });
  assert.equal(s.log.all('publication', since).length, 1, 'nothing of the refused publish was delivered');
  const after = await metric('herald_client_bad_messages_total', { format: 'protobuf', reason: 'payload_not_json' });
  assert.equal(after - before, 1, 'counted in herald_client_bad_messages_total{reason="payload_not_json"}');

  const notJson = await api('publish', { channel, b64data: Buffer.from([0x01, 0x02]).toString('base64') });
  assert.equal(notJson.error?.code, 107, `API b64data that is not JSON: 107, got ${JSON.stringify(notJson)}`);
  const notBase64 = await api('publish', { channel, b64data: '!!!' });
  assert.equal(notBase64.error?.code, 107, `API b64data that is not base64: 107, got ${JSON.stringify(notBase64)}`);
});

suite.test('token refresh and pings: the connection lives across expiries, pings are one 0x00 byte answered by 0x00', async () => {
  const user = uniq('refresher');
  let calls = 0;
  const h = suite.client({
    label: 'refresher',
    protobuf: true,
    token: connectionToken({ sub: user, exp: nowSec() + 2 }),
    getToken: async () => {
      calls++;
      return connectionToken({ sub: user, exp: nowSec() + 2 });
    },
    maxServerPingDelay: 1_000,
  });
  const since = h.log.mark();
  await connect(h);
  const connectedAt = Date.now();
  await sleep(6_500);
  assert.equal(h.client.state, 'connected');
  assert.deepEqual(h.log.all('disconnected', since), [], 'no disconnect');
  assert.equal(h.log.all('connected', since).length, 1, 'one connection all along');
  assert.ok(calls >= 2, `getToken called at least twice, got ${calls}`);
  const pings = binaryFrames(h.frames, 'in', '00').filter((f) => f.at >= connectedAt);
  const pongs = binaryFrames(h.frames, 'out', '00').filter((f) => f.at >= connectedAt);
  assert.ok(pings.length >= 4, `at least 4 pings (0x00) in 6.5 s, got ${pings.length}`);
  assert.ok(pongs.length >= pings.length - 1, `the SDK answered the pings (${pongs.length} pongs)`);
});

suite.test('server-side subscriptions from the token channels claim; disconnect codes from the API', async () => {
  const user = uniq('server-side');
  const channel = uniq('server-side');
  // The connection token's `channels` claim: herald subscribes the connection at connect.
  const h = suite.client({
    label: 'server-side',
    protobuf: true,
    token: signHs256({ sub: user, exp: nowSec() + 3_600, channels: [channel] }),
  });
  const publications = [];
  h.client.on('publication', (ctx) => publications.push(ctx));
  const subscribed = [];
  h.client.on('subscribed', (ctx) => subscribed.push(ctx.channel));
  await connect(h);
  assert.deepEqual(subscribed, [channel], 'subscribed server-side to the claimed channel');
  await api('publish', { channel, data: { server: 'side' } });
  const deadline = Date.now() + 5_000;
  while (publications.length === 0 && Date.now() < deadline) await sleep(50);
  assert.equal(publications.length, 1, 'the server-side subscription delivered the publication');
  assert.equal(publications[0].channel, channel);
  assert.deepEqual(parsed(publications[0].data), { server: 'side' });

  // A disconnect from the API reaches the protobuf client as the same close code.
  const mark = h.log.mark();
  const reply = await api('disconnect', { user, disconnect: { code: 4107, reason: 'bye from the API' } });
  assert.ok(reply.result, JSON.stringify(reply));
  const closed = await h.log.waitFor(['disconnected', 'connecting'], { since: mark, what: 'API disconnect' });
  assert.equal(closed.code, 4107, `the close code of the API disconnect, got ${closed.code} ${closed.reason}`);
  assert.equal(closed.reason, 'bye from the API');

  // An invalid token: 3500, terminal, as in JSON.
  const forged = suite.client({
    label: 'forged',
    protobuf: true,
    token: connectionToken({ sub: uniq('forged') }, 'another-secret-that-is-32-bytes-long!!'),
  });
  const forgedMark = forged.log.mark();
  forged.client.connect();
  const refused = await forged.log.waitFor('disconnected', { since: forgedMark, what: 'invalid token' });
  assert.equal(refused.code, 3500);
});

suite.test('API subscribe and unsubscribe reach a protobuf client as subscribe and unsubscribe pushes', async () => {
  const user = uniq('pushed');
  const h = suite.client({ label: 'pushed', protobuf: true, token: connectionToken({ sub: user }) });
  const serverSubscribed = [];
  h.client.on('subscribed', (ctx) => serverSubscribed.push(ctx));
  const publications = [];
  h.client.on('publication', (ctx) => publications.push(ctx));
  await connect(h);

  // subscribe push: a server-side subscription added to a live connection.
  const serverChannel = uniq('server-added');
  const added = await api('subscribe', { user, channel: serverChannel, data: { welcome: true } });
  assert.ok(added.result, JSON.stringify(added));
  const deadline = Date.now() + 5_000;
  while (serverSubscribed.length === 0 && Date.now() < deadline) await sleep(50);
  assert.deepEqual(serverSubscribed.map((c) => c.channel), [serverChannel], 'the subscribe push arrived');
  assert.deepEqual(parsed(serverSubscribed[0].data), { welcome: true }, 'with its data, as JSON bytes');
  await api('publish', { channel: serverChannel, data: { after: 'subscribe push' } });
  while (publications.length === 0 && Date.now() < deadline + 5_000) await sleep(50);
  assert.deepEqual(parsed(publications[0]?.data), { after: 'subscribe push' });

  // unsubscribe push on a client-side subscription: code 2000, terminal.
  const channel = uniq('client-side');
  const s = suite.subscription(h, channel);
  await subscribe(s);
  const since = s.log.mark();
  const removed = await api('unsubscribe', { user, channel });
  assert.ok(removed.result, JSON.stringify(removed));
  const unsubscribed = await s.log.waitFor('unsubscribed', { since, what: 'API unsubscribe' });
  assert.equal(unsubscribed.code, 2000, `server unsubscribe code 2000, got ${unsubscribed.code} ${unsubscribed.reason}`);
  assert.equal(h.client.state, 'connected');
});

suite.test('sub_refresh: a subscription whose token is refreshed stays across expiries', async () => {
  const user = uniq('sub-refresher');
  const h = suite.client({ label: 'sub-refresher', protobuf: true, token: connectionToken({ sub: user }) });
  await connect(h);
  const channel = `$secret:${uniq('refreshed')}`;
  let calls = 0;
  const s = suite.subscription(h, channel, {
    token: subscriptionToken({ sub: user, channel, exp: nowSec() + 2 }),
    getToken: async () => {
      calls++;
      return subscriptionToken({ sub: user, channel, exp: nowSec() + 2 });
    },
  });
  await subscribe(s);
  const since = s.log.mark();
  await sleep(5_000);
  assert.equal(s.sub.state, 'subscribed', 'still subscribed');
  assert.deepEqual(s.log.all('unsubscribed', since), [], 'never unsubscribed');
  assert.deepEqual(s.log.all('subscribing', since), [], 'never resubscribing');
  assert.ok(calls >= 2, `getToken called at least twice (sub_refresh), got ${calls}`);
  await within(s.sub.publish(bytes({ still: 'here' })), 5_000, 'publish after the refreshes');
  const pub = await s.log.waitFor('publication', { since, what: 'publication after the refreshes' });
  assert.deepEqual(parsed(pub.data), { still: 'here' });
});

suite.test('a binary channel carries bytes between protobuf clients; JSON clients get 108 there', async () => {
  const channel = `bin:${uniq('blob')}`;
  const reader = suite.client({ label: 'bin-reader', protobuf: true, token: connectionToken({ sub: uniq('reader') }) });
  const writer = suite.client({ label: 'bin-writer', protobuf: true, token: connectionToken({ sub: uniq('writer') }) });
  await connect(reader);
  await connect(writer);
  const s = suite.subscription(reader, channel);
  const first = await subscribe(s);
  assert.equal(first.recoverable, true, 'force_recovery in the bin namespace');

  // Bytes that are not JSON, bytes that look like JSON, pretty JSON with newlines: each
  // arrives exactly as sent.
  const blobs = [
    new Uint8Array([0x00, 0x01, 0xfe, 0xff]),
    encoder.encode('{"a":1}'),
    encoder.encode('{\n  "a": 1\n}\n'),
    new Uint8Array(3000).map((_, i) => i % 256),
  ];
  let since = s.log.mark();
  for (const blob of blobs) await within(writer.client.publish(channel, blob), 5_000, 'publish bytes');
  const apiBytes = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
  const viaApi = await api('publish', { channel, b64data: apiBytes.toString('base64') });
  assert.ok(viaApi.result, `API b64data on a binary channel: ${JSON.stringify(viaApi)}`);
  const want = [...blobs.map((b) => Buffer.from(b)), apiBytes];
  await s.log.waitFor('publication', { since, pred: () => s.log.all('publication', since).length >= want.length, what: 'the bytes' });
  const got = s.log.all('publication', since).map((p) => Buffer.from(p.data));
  assert.deepEqual(got.map((b) => b.toString('hex')), want.map((b) => b.toString('hex')), 'every blob byte for byte, in order');

  // History and recovery give the bytes back too.
  const hist = await within(s.sub.history({ limit: 10 }), 5_000, 'history');
  assert.deepEqual(hist.publications.map((p) => Buffer.from(p.data).toString('hex')), want.map((b) => b.toString('hex')));
  const down = reader.log.mark();
  reader.client.disconnect();
  await reader.log.waitFor('disconnected', { since: down, what: 'disconnect' });
  const missed = new Uint8Array([0x7f, 0x00, 0x80]);
  await within(writer.client.publish(channel, missed), 5_000, 'publish while the reader is away');
  since = s.log.mark();
  reader.client.connect();
  const resubscribed = await s.log.waitFor('subscribed', { since, timeout: 10_000, what: 'resubscribe' });
  assert.equal(resubscribed.recovered, true, 'recovered');
  const recovered = await s.log.waitFor('publication', { since, what: 'the missed blob' });
  assert.equal(Buffer.from(recovered.data).toString('hex'), '7f0080');

  // A JSON client: subscribe, publish and history all refused with 108, the connection stays.
  const json = suite.client({ label: 'bin-json', token: connectionToken({ sub: uniq('json') }) });
  await connect(json);
  const js = suite.subscription(json, channel);
  const mark = js.log.mark();
  js.sub.subscribe();
  const refused = await js.log.waitFor('unsubscribed', { since: mark, what: 'JSON subscribe refused' });
  assert.equal(refused.code, 108, `a JSON client cannot subscribe to a binary channel: ${refused.code} ${refused.reason}`);
  let publishError = null;
  try {
    await within(json.client.publish(channel, { a: 1 }), 5_000, 'JSON publish');
  } catch (err) {
    publishError = err;
  }
  assert.equal(publishError?.code, 108, `a JSON client cannot publish there: ${JSON.stringify(publishError)}`);
  assert.ok(!json.frames.some((f) => f.dir === 'in' && f.binary), 'the JSON client never got a binary message');
  assert.equal(json.client.state, 'connected');
});

// ---------------------------------------------------------------------------
// Raw sockets: negotiation and bad input

/** A varint-delimited Command{id, connect{}}: what a protobuf client sends first. */
const CONNECT = Buffer.from([4, 0x08, 0x01, 0x22, 0x00]);

/** An unsigned LEB128 varint. */
function varint(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** A length-delimited field (wire type 2) of `field` holding `body`. */
const field = (number, body) => Buffer.concat([varint((number << 3) | 2), varint(body.length), body]);

/** A varint-delimited Command{id=1, <prefix fields>, connect={token}}. */
function connectCommand(token, prefix = Buffer.alloc(0)) {
  const body = Buffer.concat([Buffer.from([0x08, 0x01]), prefix, field(4, field(1, Buffer.from(token)))]);
  return Buffer.concat([varint(body.length), body]);
}

/** The body of the first reply of a binary message (its length prefix skipped). */
function firstReplyBody(data) {
  let i = 0;
  while (data[i] & 0x80) i++;
  return data.subarray(i + 1);
}

/** Opens a raw WebSocket; resolves once open. */
function rawSocket(url, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const messages = [];
    const closed = new Promise((res) => ws.once('close', (code, reason) => res({ code, reason: reason.toString() })));
    ws.on('message', (data, isBinary) => messages.push({ data: Buffer.from(data), isBinary }));
    ws.once('open', () => resolve({ ws, messages, closed }));
    ws.once('error', reject);
  });
}

async function firstMessage(socket) {
  const deadline = Date.now() + 5_000;
  while (socket.messages.length === 0 && Date.now() < deadline) await sleep(20);
  assert.ok(socket.messages.length > 0, 'a reply arrived');
  return socket.messages[0];
}

suite.test('format=protobuf in the query (and the legacy cf_protocol) selects protobuf without a subprotocol', async () => {
  for (const query of ['format=protobuf', 'cf_protocol=protobuf']) {
    const url = `${suite.server.wsUrl}?${query}`;
    const socket = await rawSocket(url);
    assert.equal(socket.ws.protocol, '', `${query}: no subprotocol echoed`);
    socket.ws.send(connectCommand(connectionToken({ sub: uniq('query') })));
    const reply = await firstMessage(socket);
    assert.equal(reply.isBinary, true, `${query}: a binary reply`);
    // Reply{id=1 (0x08 0x01), connect=5 (0x2a ...)}.
    const body = firstReplyBody(reply.data);
    assert.deepEqual([...body.subarray(0, 3)], [0x08, 0x01, 0x2a], `${query}: the connect result, got ${reply.data.toString('hex')}`);
    socket.ws.close();
  }
  const upgrades = await metric('herald_client_upgrades_total', { format: 'protobuf' });
  assert.ok(upgrades >= 2, `herald_client_upgrades_total{format="protobuf"} counts them, got ${upgrades}`);
});

suite.test('bad input on raw sockets: each its close code and a metric, never a crash', async () => {
  const url = suite.server.wsUrl;
  const cases = [
    {
      what: 'a text message on a protobuf connection',
      protocols: ['centrifuge-protobuf'],
      send: (ws) => ws.send('{"id":1,"connect":{}}'),
      code: 3501,
      metric: { format: 'protobuf', reason: 'wrong_type' },
    },
    {
      what: 'a binary message on a JSON connection',
      protocols: ['centrifuge-json'],
      send: (ws) => ws.send(CONNECT),
      code: 3501,
      metric: { format: 'json', reason: 'wrong_type' },
    },
    {
      what: 'a truncated varint',
      protocols: ['centrifuge-protobuf'],
      send: (ws) => ws.send(Buffer.from([0x80])),
      code: 3501,
      metric: { format: 'protobuf', reason: 'undecodable' },
    },
    {
      what: 'a varint of 11 bytes',
      protocols: ['centrifuge-protobuf'],
      send: (ws) => ws.send(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
      code: 3501,
      metric: { format: 'protobuf', reason: 'undecodable' },
    },
    {
      what: 'a length beyond the message',
      protocols: ['centrifuge-protobuf'],
      send: (ws) => ws.send(Buffer.from([0x20, 0x08, 0x01])),
      code: 3501,
      metric: { format: 'protobuf', reason: 'undecodable' },
    },
    {
      what: 'nested garbage (field 4 holding bytes that are no ConnectRequest)',
      protocols: ['centrifuge-protobuf'],
      send: (ws) => ws.send(Buffer.from([6, 0x08, 0x01, 0x22, 0x02, 0xff, 0xff])),
      code: 3501,
      metric: { format: 'protobuf', reason: 'undecodable' },
    },
    {
      what: 'a message over client.message_size_limit',
      protocols: ['centrifuge-protobuf'],
      send: (ws) => ws.send(Buffer.alloc(MESSAGE_SIZE_LIMIT + 1, 0)),
      code: 1009,
      metric: null,
    },
  ];
  for (const c of cases) {
    const before = c.metric ? await metric('herald_client_bad_messages_total', c.metric) : 0;
    const socket = await rawSocket(url, c.protocols);
    c.send(socket.ws);
    const closed = await within(socket.closed, 5_000, `${c.what}: the close`);
    assert.equal(closed.code, c.code, `${c.what}: close ${c.code}, got ${closed.code} ${closed.reason}`);
    if (c.metric) {
      const after = await metric('herald_client_bad_messages_total', c.metric);
      assert.equal(after - before, 1, `${c.what}: herald_client_bad_messages_total${JSON.stringify(c.metric)} counted it`);
    }
  }
  // Unknown fields are skipped: Command{id=1, field 99 = 5, connect={token}} connects.
  const socket = await rawSocket(url, ['centrifuge-protobuf']);
  socket.ws.send(connectCommand(connectionToken({ sub: uniq('unknown-fields') }), Buffer.from([0x98, 0x06, 0x05])));
  const reply = await firstMessage(socket);
  assert.equal(reply.isBinary, true);
  const body = firstReplyBody(reply.data);
  assert.equal(body.subarray(0, 3).toString('hex'), '08012a', `a connect result, got ${reply.data.toString('hex')}`);
  socket.ws.close();
  // The server is still serving.
  const h = suite.client({ label: 'after', protobuf: true, token: connectionToken({ sub: uniq('after') }) });
  await connect(h);
});
