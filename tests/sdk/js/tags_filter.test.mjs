// Publication filtering by tags with the real centrifuge-js SDK (its
// `tagsFilter` subscription option, sent as the subscribe's `tf`): live and
// recovered publications reach a filtered subscriber only when their tags
// match, in both protocol formats; a filter where the namespace does not
// allow one, or an invalid one, is refused with 107; publications carry their
// tags to every client.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import WebSocket from 'ws';

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
      without_namespace: { allow_subscribe_for_client: true },
      namespaces: [
        // Filters allowed, every subscription recoverable.
        { name: 'match', ...history, force_recovery: true, allow_subscribe_for_client: true, allow_tags_filter: true },
        // History and recovery, but no filters.
        { name: 'plain', ...history, force_recovery: true, allow_subscribe_for_client: true },
      ],
    },
  }),
);

const publish = (channel, data, tags) =>
  apiCall(suite.server.apiUrl, API_KEY, 'publish', { channel, data, tags });

// Goals, and shots with an expected-goals value of at least 0.8.
const goalsAndGoodShots = {
  op: 'or',
  nodes: [
    { key: 'event', cmp: 'eq', val: 'goal' },
    {
      op: 'and',
      nodes: [
        { key: 'event', cmp: 'eq', val: 'shot' },
        { key: 'xg', cmp: 'gte', val: '0.8' },
      ],
    },
  ],
};

// [data, tags, passes goalsAndGoodShots]
const match = [
  [{ n: 1 }, { event: 'goal', team: 'home' }, true],
  [{ n: 2 }, { event: 'shot', xg: '0.35' }, false],
  [{ n: 3 }, { event: 'corner' }, false],
  [{ n: 4 }, { event: 'shot', xg: '0.85' }, true],
  [{ n: 5 }, { event: 'shot', xg: 'high' }, false], // not a number: gte is false
  [{ n: 6 }, {}, false],
  [{ n: 7 }, { event: 'goal', team: 'away' }, true],
];

/** Publication data as JSON: the protobuf build hands it over as bytes. */
const json = (data) => (data instanceof Uint8Array ? JSON.parse(Buffer.from(data).toString('utf8')) : data);

/** Publishes `match` to `channel`; resolves once the API accepted all. */
async function publishMatch(channel, events = match) {
  for (const [data, tags] of events) await publish(channel, data, tags);
}

/** Waits until `log` has `count` publications since `since`, then a little longer; returns them. */
async function publicationsAfter(log, since, count, what) {
  await log.waitFor('publication', {
    since,
    pred: () => log.all('publication', since).length >= count,
    what,
  });
  await sleep(300); // nothing more may arrive
  return log.all('publication', since);
}

for (const protobuf of [false, true]) {
  const format = protobuf ? 'protobuf' : 'JSON';

  suite.test(`${format}: live publications reach a filtered subscriber only when their tags match; tags arrive`, async () => {
    const channel = `match:${uniq('live')}`;
    const fan = suite.client({ label: 'fan', protobuf, token: connectionToken({ sub: uniq('fan') }) });
    const all = suite.client({ label: 'all', protobuf, token: connectionToken({ sub: uniq('all') }) });
    await connect(fan);
    await connect(all);
    const filtered = suite.subscription(fan, channel, { tagsFilter: goalsAndGoodShots });
    const unfiltered = suite.subscription(all, channel);
    await subscribe(filtered);
    await subscribe(unfiltered);
    if (!protobuf) {
      const sent = outgoingCommands(fan.frames).find((c) => c.command.subscribe?.channel === channel);
      assert.deepEqual(sent?.command.subscribe.tf, goalsAndGoodShots, 'the SDK sent the filter as tf');
    }

    const sinceF = filtered.log.mark();
    const sinceU = unfiltered.log.mark();
    await publishMatch(channel);

    const got = await publicationsAfter(filtered.log, sinceF, 3, 'the three matching publications');
    const want = match.filter(([, , passes]) => passes);
    assert.deepEqual(got.map((p) => json(p.data)), want.map(([data]) => data), 'only matching ones, in order');
    assert.deepEqual(got.map((p) => p.tags), want.map(([, tags]) => tags), 'with their tags');

    const every = await publicationsAfter(unfiltered.log, sinceU, match.length, 'every publication');
    assert.deepEqual(every.map((p) => json(p.data)), match.map(([data]) => data));
    // An empty tag map is not sent at all.
    assert.deepEqual(every.map((p) => p.tags ?? {}), match.map(([, tags]) => tags), 'tags arrive with every publication');

    // Offsets the filter held back are no gap: the subscription stays and
    // the next matching publication arrives live.
    assert.equal(filtered.sub.state, 'subscribed');
    const since = filtered.log.mark();
    await publish(channel, { n: 8 }, { event: 'corner' });
    await publish(channel, { n: 9 }, { event: 'goal' });
    const next = await filtered.log.waitFor('publication', { since, what: 'n=9' });
    assert.deepEqual(json(next.data), { n: 9 });
    assert.equal(next.offset, got[2].offset + 2, 'offsets count the held-back publications');
    assert.equal(filtered.log.all('subscribing', since).length, 0, 'no resubscribe on the way');
  });
}

suite.test('recovery: only the missed publications that match come back, and live delivery goes on', async () => {
  const channel = `match:${uniq('recover')}`;
  const fan = suite.client({ label: 'fan', token: connectionToken({ sub: uniq('fan') }) });
  await connect(fan);
  const s = suite.subscription(fan, channel, { tagsFilter: goalsAndGoodShots });
  const first = await subscribe(s);
  assert.equal(first.recoverable, true);

  let since = s.log.mark();
  await publish(channel, { n: 0 }, { event: 'goal' });
  const p0 = await s.log.waitFor('publication', { since, what: 'n=0' });

  const down = fan.log.mark();
  fan.client.disconnect();
  await fan.log.waitFor('disconnected', { since: down, what: 'client.disconnect()' });
  await publishMatch(channel);

  since = s.log.mark();
  const commandsBefore = outgoingCommands(fan.frames).length;
  fan.client.connect();
  const resubscribed = await s.log.waitFor('subscribed', { since, timeout: 10_000, what: 'resubscribe' });
  const resub = outgoingCommands(fan.frames)
    .slice(commandsBefore)
    .find((c) => c.command.subscribe?.channel === channel);
  assert.equal(resub?.command.subscribe.recover, true, 'resubscribed with recover:true');
  assert.equal(resub.command.subscribe.offset, p0.offset);
  assert.deepEqual(resub.command.subscribe.tf, goalsAndGoodShots, 'and with the filter');
  assert.equal(resubscribed.recovered, true, 'recovered');

  const recovered = await publicationsAfter(s.log, since, 3, 'the matching missed publications');
  const want = match.map((m, i) => [...m, p0.offset + 1 + i]).filter(([, , passes]) => passes);
  assert.deepEqual(recovered.map((p) => p.data), want.map(([data]) => data), 'only the matching ones, in order, once');
  assert.deepEqual(recovered.map((p) => p.offset), want.map(([, , , offset]) => offset), 'at their offsets');
  assert.deepEqual(recovered.map((p) => p.tags), want.map(([, tags]) => tags), 'with their tags');

  // Live again: a held-back one, then a match, without a gap.
  since = s.log.mark();
  await publish(channel, { n: 'late corner' }, { event: 'corner' });
  await publish(channel, { n: 'late goal' }, { event: 'goal' });
  const late = await s.log.waitFor('publication', { since, what: 'live after recovery' });
  assert.deepEqual(late.data, { n: 'late goal' });
  assert.equal(late.offset, p0.offset + match.length + 2);

  // A second reconnect with nothing matching missed: recovered, nothing delivered.
  const down2 = fan.log.mark();
  fan.client.disconnect();
  await fan.log.waitFor('disconnected', { since: down2, what: 'second disconnect' });
  await publish(channel, { n: 'quiet' }, { event: 'corner' });
  since = s.log.mark();
  fan.client.connect();
  const again = await s.log.waitFor('subscribed', { since, timeout: 10_000, what: 'second resubscribe' });
  assert.equal(again.recovered, true);
  await sleep(300);
  assert.deepEqual(s.log.all('publication', since), [], 'nothing matching was missed');
});

suite.test('a filter where the namespace does not allow one is refused with 107', async () => {
  const channel = `plain:${uniq('nofilter')}`;
  const fan = suite.client({ label: 'fan', token: connectionToken({ sub: uniq('fan') }) });
  await connect(fan);
  const s = suite.subscription(fan, channel, { tagsFilter: { key: 'event', cmp: 'eq', val: 'goal' } });
  const since = s.log.mark();
  s.sub.subscribe();
  const unsubscribed = await s.log.waitFor('unsubscribed', { since, what: 'refusal' });
  assert.equal(unsubscribed.code, 107, 'bad request');
  // Without the filter the same channel subscribes.
  const plain = suite.subscription(fan, `plain:${uniq('ok')}`);
  await subscribe(plain);
});

suite.test('invalid filters are refused with 107', async () => {
  const invalid = [
    { key: 'event', cmp: 'like', val: 'goal' }, // unknown cmp
    { key: 'event', cmp: 'eq' }, // no val
    { cmp: 'eq', val: 'goal' }, // no key
    { key: 'event', cmp: 'in', vals: [] }, // no vals
    { key: 'event', cmp: 'in', val: 'goal', vals: ['goal'] }, // val with in
    { op: 'xor', nodes: [{ key: 'event', cmp: 'ex' }] }, // unknown op
    { op: 'not', nodes: [] }, // not without its node
    { op: 'and', nodes: [{ key: 'event', cmp: 'ex' }, { key: 'x', cmp: 'zz', val: '1' }] }, // bad child
  ];
  let depthFilter = { key: 'k', cmp: 'ex' };
  for (let i = 0; i < 40; i++) depthFilter = { op: 'not', nodes: [depthFilter] };
  invalid.push(depthFilter); // deeper than the limit (32)

  const fan = suite.client({ label: 'fan', token: connectionToken({ sub: uniq('fan') }) });
  await connect(fan);
  for (const tagsFilter of invalid) {
    const s = suite.subscription(fan, `match:${uniq('bad')}`, { tagsFilter });
    const since = s.log.mark();
    s.sub.subscribe();
    const unsubscribed = await s.log.waitFor('unsubscribed', { since, what: JSON.stringify(tagsFilter).slice(0, 80) });
    assert.equal(unsubscribed.code, 107, JSON.stringify(tagsFilter));
  }
  assert.equal(fan.client.state, 'connected', 'the connection stays');
});

suite.test('with delta asked for too (raw client), a filter subscribes and delta is not negotiated', async () => {
  // centrifuge-js refuses to combine them itself; another client may not.
  const channel = `match:${uniq('delta')}`;
  const ws = new WebSocket(suite.server.wsUrl);
  const lines = [];
  ws.on('message', (data) => lines.push(...data.toString('utf8').trim().split('\n').map((l) => JSON.parse(l))));
  await within(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 5_000, 'open');
  try {
    ws.send(JSON.stringify({ id: 1, connect: { token: connectionToken({ sub: uniq('raw') }) } }));
    ws.send(JSON.stringify({ id: 2, subscribe: { channel, delta: 'fossil', tf: { key: 'event', cmp: 'eq', val: 'goal' } } }));
    const waitReply = async (id) => {
      for (let i = 0; i < 100; i++) {
        const r = lines.find((l) => l.id === id);
        if (r) return r;
        await sleep(50);
      }
      throw new Error(`no reply ${id}: ${JSON.stringify(lines)}`);
    };
    const reply = await waitReply(2);
    assert.ok(reply.subscribe, JSON.stringify(reply));
    assert.equal(reply.subscribe.delta, undefined, 'delta is not negotiated');
    await publish(channel, { n: 1 }, { event: 'shot' });
    await publish(channel, { n: 2 }, { event: 'goal' });
    for (let i = 0; i < 100 && !lines.some((l) => l.push?.pub); i++) await sleep(50);
    await sleep(200);
    const pubs = lines.filter((l) => l.push?.pub).map((l) => l.push.pub);
    assert.deepEqual(pubs.map((p) => p.data), [{ n: 2 }], 'filtered, with full data');
  } finally {
    ws.close();
  }
});
