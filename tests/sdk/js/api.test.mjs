// The server HTTP API (POST /api/<method>, centrifugo-compat §4) with the real centrifuge-js
// SDK on the receiving side: recovery of API publications after a reconnect, history through
// the API, idempotent API publish.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import {
  apiCall,
  connect,
  connectionToken,
  outgoingCommands,
  serverSuite,
  sleep,
  subscribe,
  testConfig,
  uniq,
  within,
} from './harness.mjs';

const API_KEY = `api-key-${randomBytes(16).toString('hex')}`;
const history = { history_size: 100, history_ttl: '300s' };

const suite = serverSuite(
  testConfig({
    http_api: { key: API_KEY },
    channel: {
      namespaces: [
        {
          name: 'stream',
          ...history,
          force_recovery: true,
          allow_subscribe_for_client: true,
        },
      ],
    },
  }),
  { label: 'herald (api)' },
);

/** POST /api/<method> with the suite's key; the parsed reply (HTTP 200 required). */
const api = (method, body) => apiCall(suite.server.apiUrl, API_KEY, method, body);

/** An API call that must succeed: its `result`. */
async function apiResult(method, body) {
  const reply = await api(method, body);
  assert.ok(reply.result && !reply.error, `POST /api/${method} ${JSON.stringify(body)}: ${JSON.stringify(reply)}`);
  return reply.result;
}

suite.test('recovery: API publications missed while disconnected are recovered in order; API history matches', async () => {
  const channel = `stream:${uniq('feed')}`;
  const reader = suite.client({ label: 'reader', token: connectionToken({ sub: uniq('reader') }) });
  await connect(reader);
  const s = suite.subscription(reader, channel);
  const first = await subscribe(s);
  assert.equal(first.recoverable, true, 'force_recovery makes the subscription recoverable');
  const epoch = first.streamPosition?.epoch;
  assert.ok(epoch, `a recoverable subscription has an epoch, got ${JSON.stringify(first.streamPosition)}`);

  let since = s.log.mark();
  const r0 = await apiResult('publish', { channel, data: { n: 0 } });
  assert.deepEqual(r0, { offset: 1, epoch }, 'publish result: first offset, the epoch the subscribe reported');
  const p0 = await s.log.waitFor('publication', { since, what: 'live API publication n=0' });
  assert.deepEqual(p0.data, { n: 0 });
  assert.equal(p0.offset, r0.offset);
  assert.equal(p0.info, undefined, 'an API publication carries no ClientInfo');

  const down = reader.log.mark();
  reader.client.disconnect();
  await reader.log.waitFor('disconnected', { since: down, what: 'client.disconnect()' });
  assert.equal(s.sub.state, 'subscribing', 'the SDK keeps the subscription to resubscribe');

  for (let n = 1; n <= 3; n++) {
    const r = await apiResult('publish', { channel, data: { n } });
    assert.deepEqual(r, { offset: r0.offset + n, epoch }, `publish result n=${n}`);
  }

  since = s.log.mark();
  const commandsBefore = outgoingCommands(reader.frames).length;
  reader.client.connect();
  const resubscribed = await s.log.waitFor('subscribed', { since, timeout: 10_000, what: 'resubscribe after reconnect' });
  const resub = outgoingCommands(reader.frames)
    .slice(commandsBefore)
    .find((c) => c.command.subscribe?.channel === channel);
  assert.equal(resub?.command.subscribe.recover, true, 'the SDK resubscribed with recover:true');
  assert.equal(resub.command.subscribe.offset, p0.offset, 'from the offset it had seen');
  assert.equal(resub.command.subscribe.epoch, epoch, 'with the epoch of the stream');
  assert.equal(resubscribed.wasRecovering, true, 'subscribed context: wasRecovering');
  assert.equal(resubscribed.recovered, true, 'subscribed context: recovered');

  await s.log.waitFor('publication', {
    since,
    pred: () => s.log.all('publication', since).length >= 3,
    what: '3 recovered publications',
  });
  await sleep(300); // nothing more may arrive
  const recovered = s.log.all('publication', since);
  assert.deepEqual(
    recovered.map((p) => p.data),
    [1, 2, 3].map((n) => ({ n })),
    'exactly the missed API publications, in order, once',
  );
  assert.deepEqual(
    recovered.map((p) => p.offset),
    [1, 2, 3].map((i) => p0.offset + i),
    'consecutive offsets after the last seen one',
  );

  const hist = await apiResult('history', { channel, limit: 10 });
  assert.deepEqual(
    hist,
    {
      publications: [0, 1, 2, 3].map((n) => ({ data: { n }, offset: p0.offset + n })),
      epoch,
      offset: p0.offset + 3,
    },
    'API history: the publications with their offsets, the stream epoch and top offset',
  );

  // Live delivery continues after the recovered ones, without a gap.
  since = s.log.mark();
  const r4 = await apiResult('publish', { channel, data: { n: 4 } });
  const p4 = await s.log.waitFor('publication', { since, what: 'live API publication after recovery' });
  assert.deepEqual([p4.data, p4.offset], [{ n: 4 }, r4.offset]);
  assert.equal(r4.offset, p0.offset + 4);
});

suite.test('idempotent API publish: the same idempotency_key twice delivers once and returns the same offset', async () => {
  const channel = `stream:${uniq('idem')}`;
  const other = `stream:${uniq('idem-other')}`;
  const reader = suite.client({ label: 'reader', token: connectionToken({ sub: uniq('reader') }) });
  await connect(reader);
  const s = suite.subscription(reader, channel);
  const o = suite.subscription(reader, other);
  const { streamPosition } = await subscribe(s);
  await subscribe(o);

  const key = uniq('key');
  let since = s.log.mark();
  const first = await apiResult('publish', { channel, data: { try: 1 }, idempotency_key: key });
  const again = await apiResult('publish', { channel, data: { try: 1 }, idempotency_key: key });
  assert.deepEqual(first, { offset: 1, epoch: streamPosition.epoch }, 'first publish result');
  assert.deepEqual(again, first, 'the repeated publish returns the first result (same offset and epoch)');

  await s.log.waitFor('publication', { since, what: 'the idempotent publication' });
  await sleep(400); // a duplicate would arrive by now
  assert.deepEqual(
    s.log.all('publication', since).map((p) => [p.data, p.offset]),
    [[{ try: 1 }, 1]],
    'delivered once',
  );
  const hist = await apiResult('history', { channel, limit: 10 });
  assert.deepEqual(hist.publications, [{ data: { try: 1 }, offset: 1 }], 'stored once');

  // The key acts per channel; another key publishes anew.
  const sinceOther = o.log.mark();
  const elsewhere = await apiResult('publish', { channel: other, data: { try: 'other' }, idempotency_key: key });
  assert.equal(elsewhere.offset, 1, 'the same key on another channel publishes');
  const po = await o.log.waitFor('publication', { since: sinceOther, what: 'same key, other channel' });
  assert.deepEqual(po.data, { try: 'other' });

  since = s.log.mark();
  const fresh = await apiResult('publish', { channel, data: { try: 2 }, idempotency_key: uniq('key') });
  assert.deepEqual(fresh, { offset: 2, epoch: streamPosition.epoch }, 'a new key publishes the next offset');
  const p2 = await s.log.waitFor('publication', { since, what: 'publication with a new key' });
  assert.deepEqual([p2.data, p2.offset], [{ try: 2 }, 2]);
});
