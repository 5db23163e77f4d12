// Delta compression (`delta: 'fossil'`, docs/protocol.md "Delta compression") with the
// real centrifuge-js: herald's fossil encoder round-trips through the SDK's own decoder
// on a seeded random document stream, the wire shows first the full payload and then
// deltas in fewer bytes, recovery sends a chain whose first element is full, and the
// negotiation answers as Centrifugo does (3501 for an unknown type, `delta: false`
// where the namespace does not allow it). The protobuf build of the SDK too.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import WebSocket from 'ws';

import {
  apiCall,
  connect,
  connectionToken,
  incomingReplies,
  serverSuite,
  sleep,
  subscribe,
  testConfig,
  uniq,
  within,
} from './harness.mjs';

const API_KEY = `api-key-${randomBytes(16).toString('hex')}`;
const history = { history_size: 1000, history_ttl: '300s' };
const open = { allow_subscribe_for_client: true, allow_history_for_client: true };

const suite = serverSuite(
  testConfig({
    http_api: { key: API_KEY },
    client: { message_size_limit: 1 << 20 },
    channel: {
      namespaces: [
        { name: 'doc', ...history, ...open, force_recovery: true, allowed_delta_types: ['fossil'] },
        { name: 'nodelta', ...history, ...open, force_recovery: true },
        { name: 'plain', ...open, allowed_delta_types: ['fossil'] },
        { name: 'auto', ...history, ...open, force_recovery: true, allowed_delta_types: ['fossil'], delta_publish: true },
      ],
    },
  }),
  { label: 'herald (delta)' },
);

const api = (method, body) => apiCall(suite.server.apiUrl, API_KEY, method, body);

// ---------------------------------------------------------------------------
// A seeded random document: a JSON string mutated in many ways

/** mulberry32: a small seeded PRNG, so a failure replays. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ASCII, JSON's escapes and multi-byte characters (a delta may split one: herald then
// sends the full payload, which the test cannot tell from a delta but the SDK must decode).
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789{}[]":,\\\n\té日本語€😀';
const chars = [...ALPHABET];

function randomText(next, length) {
  let s = '';
  for (let i = 0; i < length; i++) s += chars[Math.floor(next() * chars.length)];
  return s;
}

/** The next version of `text`: a small edit mostly, sometimes an edge case. */
function mutate(next, text) {
  const r = next();
  const at = Math.floor(next() * (text.length + 1));
  if (r < 0.04) return ''; // empty
  if (r < 0.1) return text; // identical
  if (r < 0.14) return randomText(next, Math.floor(next() * 10_000)); // totally different, up to ~10 KB
  if (r < 0.5) return text.slice(0, at) + randomText(next, 1 + Math.floor(next() * 20)) + text.slice(at); // insert
  if (r < 0.75) return text.slice(0, at) + text.slice(at + 1 + Math.floor(next() * 30)); // delete
  if (r < 0.95) {
    // replace
    const len = 1 + Math.floor(next() * 10);
    return text.slice(0, at) + randomText(next, len) + text.slice(at + len);
  }
  return text + text.slice(0, Math.min(text.length, 2_000)); // repeat a chunk
}

/** `count` documents (as the app publishes them: JSON values), seeded. */
function documentStream(seed, count) {
  const next = rng(seed);
  let text = randomText(next, 2_000);
  const docs = [];
  for (let i = 0; i < count; i++) {
    text = mutate(next, text);
    // Sometimes a bare string, sometimes an object holding it.
    docs.push(i % 3 === 0 ? text : { i, text });
  }
  return docs;
}

/** The publication pushes of `channel` in the recorded JSON frames, with their sizes. */
function publicationPushes(frames, channel) {
  const out = [];
  for (const f of frames) {
    if (f.dir !== 'in') continue;
    for (const line of f.text.trim().split('\n')) {
      if (!line.includes('"pub"')) continue;
      const reply = JSON.parse(line);
      if (reply.push?.channel === channel && reply.push.pub) out.push({ pub: reply.push.pub, bytes: Buffer.byteLength(line) });
    }
  }
  return out;
}

/** The subscribe result (raw) for `channel` in the recorded JSON frames. */
function subscribeResult(frames, channel, nth = 0) {
  const results = incomingReplies(frames)
    .map((r) => r.reply)
    .filter((r) => r.subscribe !== undefined);
  const found = results[nth];
  assert.ok(found, `subscribe reply #${nth} for ${channel}`);
  return found.subscribe;
}

async function waitCount(list, n, what, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  while (list.length < n && Date.now() < deadline) await sleep(20);
  assert.equal(list.length, n, what);
}

// ---------------------------------------------------------------------------

suite.test('several hundred random publications: the app sees each as published, the wire carries deltas in fewer bytes', async () => {
  const channel = `doc:${uniq('stream')}`;
  const delta = suite.client({ label: 'delta', token: connectionToken({ sub: uniq('d') }) });
  const full = suite.client({ label: 'full', token: connectionToken({ sub: uniq('f') }) });
  await connect(delta);
  await connect(full);
  const ds = suite.subscription(delta, channel, { delta: 'fossil' });
  const fs = suite.subscription(full, channel);
  await subscribe(ds);
  await subscribe(fs);
  assert.equal(subscribeResult(delta.frames, channel).delta, true, 'the namespace allows fossil: delta negotiated');
  assert.equal(subscribeResult(full.frames, channel).delta, undefined, 'no delta asked, none negotiated');

  const seen = [];
  const seenFull = [];
  ds.sub.on('publication', (ctx) => seen.push(ctx.data));
  fs.sub.on('publication', (ctx) => seenFull.push(ctx.data));

  const docs = documentStream(0x5eed, 400);
  for (const doc of docs) await api('publish', { channel, data: doc, delta: true });
  await waitCount(seen, docs.length, 'every publication reached the delta subscriber');
  await waitCount(seenFull, docs.length, 'every publication reached the plain subscriber');
  for (let i = 0; i < docs.length; i++) {
    assert.deepEqual(seen[i], docs[i], `publication ${i} decoded by the SDK equals what was published`);
    assert.deepEqual(seenFull[i], docs[i], `publication ${i} (plain)`);
  }

  const pushes = publicationPushes(delta.frames, channel);
  assert.equal(pushes.length, docs.length);
  assert.equal(typeof pushes[0].pub.data, 'string', 'the first publication: the full payload as a JSON string');
  assert.equal(pushes[0].pub.delta, undefined, 'the first publication is not a delta');
  assert.deepEqual(JSON.parse(pushes[0].pub.data), docs[0]);
  assert.ok(pushes.every((p) => typeof p.pub.data === 'string'), 'a delta subscriber always gets data as a string');
  const deltas = pushes.filter((p) => p.pub.delta === true).length;
  assert.ok(deltas > docs.length / 2, `most publications went as deltas (${deltas} of ${docs.length})`);

  const plainPushes = publicationPushes(full.frames, channel);
  assert.ok(plainPushes.every((p) => p.pub.delta === undefined && typeof p.pub.data !== 'undefined'));
  const deltaBytes = pushes.reduce((n, p) => n + p.bytes, 0);
  const plainBytes = plainPushes.reduce((n, p) => n + p.bytes, 0);
  assert.ok(deltaBytes * 3 < plainBytes, `deltas take fewer bytes on the wire: ${deltaBytes} vs ${plainBytes}`);

  const stats = ds.sub.deltaStats();
  assert.equal(stats.numPublications, docs.length);
  assert.equal(stats.numDeltaPayloads, deltas, "the SDK's statistics count the same deltas");
  assert.ok(stats.numFullPayloads >= 1);
  assert.ok(stats.bytesReceived < stats.bytesDecoded, `fewer bytes received than decoded: ${JSON.stringify(stats)}`);
}, { timeout: 120_000 });

suite.test('recovery with deltas: a chain whose first element is full, and live delivery goes on from it', async () => {
  const channel = `doc:${uniq('recover')}`;
  const c = suite.client({ label: 'recovering', token: connectionToken({ sub: uniq('r') }) });
  await connect(c);
  const s = suite.subscription(c, channel, { delta: 'fossil' });
  const seen = [];
  s.sub.on('publication', (ctx) => seen.push(ctx.data));
  await subscribe(s);
  const docs = documentStream(0xc0ffee, 40).map((d, i) => ({ i, text: typeof d === 'string' ? d : d.text }));
  for (const doc of docs.slice(0, 5)) await api('publish', { channel, data: doc, delta: true });
  await waitCount(seen, 5, 'live before the disconnect');

  c.client.disconnect();
  await sleep(100);
  for (const doc of docs.slice(5, 30)) await api('publish', { channel, data: doc, delta: true });
  const resubscribed = s.log.mark();
  c.client.connect();
  const ctx = await s.log.waitFor('subscribed', { since: resubscribed, what: 'resubscribe with recovery' });
  assert.equal(ctx.wasRecovering, true);
  assert.equal(ctx.recovered, true);
  const result = subscribeResult(c.frames, channel, 1);
  assert.equal(result.delta, true);
  assert.equal(result.publications.length, 25, 'the 25 missed publications');
  assert.equal(typeof result.publications[0].data, 'string');
  assert.equal(result.publications[0].delta, undefined, 'the chain starts with the full payload');
  assert.deepEqual(JSON.parse(result.publications[0].data), docs[5]);
  assert.ok(result.publications.slice(1).some((p) => p.delta === true), 'then deltas');

  for (const doc of docs.slice(30)) await api('publish', { channel, data: doc, delta: true });
  await waitCount(seen, docs.length, 'recovered and live publications');
  for (let i = 0; i < docs.length; i++) assert.deepEqual(seen[i], docs[i], `publication ${i}`);
  const live = publicationPushes(c.frames, channel).slice(-10);
  assert.ok(live.some((p) => p.pub.delta === true), 'live deltas continue from the last recovered publication');

  // History is never delta-compressed.
  const hist = await s.sub.history({ limit: 3, reverse: true });
  assert.deepEqual(hist.publications.map((p) => p.data), docs.slice(-3).reverse());
  const historyReply = incomingReplies(c.frames).map((r) => r.reply).find((r) => r.history);
  assert.ok(historyReply.history.publications.every((p) => p.delta === undefined && typeof p.data === 'object'));
}, { timeout: 60_000 });

suite.test('an unknown delta type closes with 3501; a type the namespace does not allow gets delta false', async () => {
  const token = connectionToken({ sub: uniq('raw') });
  const ws = new WebSocket(suite.server.wsUrl);
  const messages = [];
  ws.on('message', (data) => messages.push(data.toString('utf8')));
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ id: 1, connect: { token } }));
  ws.send(JSON.stringify({ id: 2, subscribe: { channel: `doc:${uniq('x')}`, delta: 'zstd' } }));
  assert.equal(await within(closed, 5_000, 'close'), 3501);

  const c = suite.client({ label: 'not-allowed', token: connectionToken({ sub: uniq('n') }) });
  await connect(c);
  const channel = `nodelta:${uniq('n')}`;
  const s = suite.subscription(c, channel, { delta: 'fossil' });
  const seen = [];
  s.sub.on('publication', (ctx) => seen.push(ctx.data));
  await subscribe(s);
  assert.equal(subscribeResult(c.frames, channel).delta, undefined, 'not negotiated, no error');
  const docs = documentStream(7, 5);
  for (const doc of docs) await api('publish', { channel, data: doc, delta: true });
  await waitCount(seen, docs.length, 'publications');
  assert.deepEqual(seen, docs);
  assert.ok(publicationPushes(c.frames, channel).every((p) => p.pub.delta === undefined));
});

suite.test('without history or positioning delta is negotiated too; delta_publish asks for deltas without the flag', async () => {
  for (const [ns, flag] of [['plain', true], ['auto', false]]) {
    const channel = `${ns}:${uniq('ns')}`;
    const c = suite.client({ label: ns, token: connectionToken({ sub: uniq(ns) }) });
    await connect(c);
    const s = suite.subscription(c, channel, { delta: 'fossil' });
    const seen = [];
    s.sub.on('publication', (ctx) => seen.push(ctx.data));
    await subscribe(s);
    assert.equal(subscribeResult(c.frames, channel).delta, true, `${ns}: negotiated`);
    const docs = documentStream(11, 30);
    for (const doc of docs) await api('publish', flag ? { channel, data: doc, delta: true } : { channel, data: doc });
    await waitCount(seen, docs.length, `${ns}: publications`);
    assert.deepEqual(seen, docs, `${ns}: decoded`);
    assert.ok(publicationPushes(c.frames, channel).some((p) => p.pub.delta === true), `${ns}: deltas on the wire`);
    c.client.disconnect();
  }
});

suite.test('the protobuf SDK decodes the same random stream (raw bytes, the delta flag in field 8)', async () => {
  const channel = `doc:${uniq('pb')}`;
  const c = suite.client({ label: 'protobuf', protobuf: true, token: connectionToken({ sub: uniq('pb') }) });
  await connect(c);
  const s = suite.subscription(c, channel, { delta: 'fossil' });
  const seen = [];
  s.sub.on('publication', (ctx) => seen.push(new TextDecoder().decode(ctx.data)));
  await subscribe(s);
  const docs = documentStream(0xb0b, 150);
  for (const doc of docs) await api('publish', { channel, data: doc, delta: true });
  await waitCount(seen, docs.length, 'publications');
  for (let i = 0; i < docs.length; i++) assert.deepEqual(JSON.parse(seen[i]), docs[i], `publication ${i}`);
  const stats = s.sub.deltaStats();
  assert.ok(stats.numDeltaPayloads > docs.length / 2, `deltas: ${JSON.stringify(stats)}`);
  assert.ok(stats.bytesReceived * 3 < stats.bytesDecoded, `fewer bytes: ${JSON.stringify(stats)}`);
}, { timeout: 60_000 });
