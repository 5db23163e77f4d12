// Core client flows with the real centrifuge-js SDK: connect, subscribe, publish,
// presence, history, private channels, recovery, join/leave.

import assert from 'node:assert/strict';

import {
  connect,
  connectionToken,
  outgoingCommands,
  serverSuite,
  sleep,
  subscribe,
  subscriptionToken,
  testConfig,
  uniq,
  within,
} from './harness.mjs';

const history = { history_size: 100, history_ttl: '300s' };

const suite = serverSuite(
  testConfig({
    client: { presence_update_interval: '1s' },
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
        {
          name: 'stream',
          ...history,
          force_recovery: true,
          allow_subscribe_for_client: true,
          allow_publish_for_client: true,
        },
        {
          name: 'rooms',
          presence: true,
          join_leave: true,
          force_push_join_leave: true,
          allow_subscribe_for_client: true,
        },
      ],
    },
  }),
  { label: 'herald (core)' },
);

suite.test('connect with a token, publish and receive with info, presence, presence_stats, history', async () => {
  const user = uniq('alice');
  const info = { name: 'Alice' };
  const alice = suite.client({ label: 'alice', token: connectionToken({ sub: user, info }) });
  const connected = await connect(alice);
  assert.ok(connected.client, 'the connect reply carries a client id');

  const channel = uniq('general');
  const s = suite.subscription(alice, channel);
  await subscribe(s);

  const data = { text: 'hello', n: 1 };
  const since = s.log.mark();
  await within(s.sub.publish(data), 5_000, 'publish reply');
  const pub = await s.log.waitFor('publication', { since, what: 'own publication' });
  assert.equal(pub.channel, channel);
  assert.deepEqual(pub.data, data);
  assert.ok(pub.info, 'a client publication carries the publisher info');
  assert.equal(pub.info.user, user, 'info.user is the token sub');
  assert.equal(pub.info.client, connected.client, 'info.client is the publisher client id');
  assert.deepEqual(pub.info.connInfo, info, 'info.conn_info is the token info claim');
  assert.ok(Number.isInteger(pub.offset) && pub.offset > 0, `history channel publication has an offset, got ${pub.offset}`);

  const presence = await within(s.sub.presence(), 5_000, 'presence reply');
  assert.deepEqual(Object.keys(presence.clients), [connected.client], 'presence lists exactly this client');
  const me = presence.clients[connected.client];
  assert.equal(me.client, connected.client);
  assert.equal(me.user, user);
  assert.deepEqual(me.connInfo, info);

  const stats = await within(s.sub.presenceStats(), 5_000, 'presence_stats reply');
  assert.deepEqual(stats, { numClients: 1, numUsers: 1 });

  const hist = await within(s.sub.history({ limit: 10 }), 5_000, 'history reply');
  assert.equal(hist.publications.length, 1, 'history holds the one publication');
  const [stored] = hist.publications;
  assert.deepEqual(stored.data, data);
  assert.equal(stored.offset, pub.offset, 'history offset equals the delivered offset');
  assert.equal(stored.info?.user, user, 'history keeps the publisher info');
  assert.equal(hist.offset, pub.offset, 'stream top is the last offset');
  assert.ok(typeof hist.epoch === 'string' && hist.epoch.length > 0, `history has an epoch, got ${JSON.stringify(hist.epoch)}`);
});

suite.test('private $ channel: subscription token from getToken, publication delivered', async () => {
  const user = uniq('bob');
  const bob = suite.client({ label: 'bob', token: connectionToken({ sub: user }) });
  await connect(bob);

  const channel = `$secret:${uniq('room')}`;
  const requested = [];
  const s = suite.subscription(bob, channel, {
    getToken: async (ctx) => {
      requested.push(ctx.channel);
      return subscriptionToken({ sub: user, channel: ctx.channel });
    },
  });
  const subscribed = await subscribe(s);
  assert.equal(subscribed.channel, channel);
  assert.deepEqual(requested, [channel], 'getToken is asked once, for this channel');
  const cmd = outgoingCommands(bob.frames).find((c) => c.command.subscribe?.channel === channel);
  assert.ok(cmd?.command.subscribe.token, 'the subscribe command carried the token');

  const since = s.log.mark();
  await within(s.sub.publish({ secret: 42 }), 5_000, 'publish reply');
  const pub = await s.log.waitFor('publication', { since, what: 'publication on the private channel' });
  assert.deepEqual(pub.data, { secret: 42 });
  assert.equal(pub.info?.user, user);

  // No token: the server refuses with 103 (permission denied), a terminal subscribe error.
  const noToken = suite.subscription(bob, `$secret:${uniq('room')}`);
  let mark = noToken.log.mark();
  noToken.sub.subscribe();
  const refused = await noToken.log.waitFor('unsubscribed', { since: mark, what: 'subscribe without token refused' });
  assert.equal(refused.code, 103);

  // A token signed with another key: also 103, and the connection stays up.
  const forged = suite.subscription(bob, `$secret:${uniq('room')}`, {
    token: subscriptionToken({ sub: user, channel: 'unused' }, 'another-secret-that-is-32-bytes-long!!'),
  });
  mark = forged.log.mark();
  forged.sub.subscribe();
  const refusedForged = await forged.log.waitFor('unsubscribed', { since: mark, what: 'forged token refused' });
  assert.equal(refusedForged.code, 103);
  assert.equal(bob.client.state, 'connected', 'an invalid subscription token does not disconnect');
});

suite.test('recovery: missed publications are delivered in order after reconnect, recovered=true', async () => {
  const channel = `stream:${uniq('feed')}`;
  const reader = suite.client({ label: 'reader', token: connectionToken({ sub: uniq('reader') }) });
  const writer = suite.client({ label: 'writer', token: connectionToken({ sub: uniq('writer') }) });
  await connect(reader);
  await connect(writer);

  const s = suite.subscription(reader, channel);
  const first = await subscribe(s);
  assert.equal(first.recoverable, true, 'force_recovery makes the subscription recoverable');
  assert.ok(first.streamPosition?.epoch, 'a recoverable subscription has an epoch');

  let since = s.log.mark();
  await within(writer.client.publish(channel, { n: 0 }), 5_000, 'publish n=0');
  const p0 = await s.log.waitFor('publication', { since, what: 'live publication n=0' });
  assert.deepEqual(p0.data, { n: 0 });

  const down = reader.log.mark();
  reader.client.disconnect();
  await reader.log.waitFor('disconnected', { since: down, what: 'client.disconnect()' });
  assert.equal(s.sub.state, 'subscribing', 'the SDK keeps the subscription to resubscribe');

  for (let n = 1; n <= 5; n++) {
    await within(writer.client.publish(channel, { n }), 5_000, `publish n=${n}`);
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
  assert.equal(resub.command.subscribe.epoch, first.streamPosition.epoch, 'with the epoch of the stream');

  assert.equal(resubscribed.wasRecovering, true, 'subscribed context: wasRecovering');
  assert.equal(resubscribed.recovered, true, 'subscribed context: recovered');

  await s.log.waitFor('publication', {
    since,
    pred: () => s.log.all('publication', since).length >= 5,
    what: '5 recovered publications',
  });
  await sleep(300); // nothing more may arrive
  const recovered = s.log.all('publication', since);
  assert.deepEqual(
    recovered.map((p) => p.data),
    [1, 2, 3, 4, 5].map((n) => ({ n })),
    'exactly the missed publications, in order, once',
  );
  assert.deepEqual(
    recovered.map((p) => p.offset),
    [1, 2, 3, 4, 5].map((i) => p0.offset + i),
    'consecutive offsets after the last seen one',
  );

  // Live delivery continues after the recovered ones, without a gap.
  since = s.log.mark();
  await within(writer.client.publish(channel, { n: 6 }), 5_000, 'publish n=6');
  const p6 = await s.log.waitFor('publication', { since, what: 'live publication after recovery' });
  assert.deepEqual(p6.data, { n: 6 });
  assert.equal(p6.offset, p0.offset + 6);
});

suite.test('join and leave are pushed to other subscribers (force_push_join_leave)', async () => {
  const channel = `rooms:${uniq('lobby')}`;
  const watcher = suite.client({ label: 'watcher', token: connectionToken({ sub: uniq('ann') }) });
  await connect(watcher);
  const watch = suite.subscription(watcher, channel);
  await subscribe(watch);

  const benUser = uniq('ben');
  const ben = suite.client({ label: 'ben', token: connectionToken({ sub: benUser, info: { name: 'Ben' } }) });
  const benConnected = await connect(ben);
  const benSub = suite.subscription(ben, channel);
  await subscribe(benSub);

  const join = await watch.log.waitFor('join', {
    pred: (ctx) => ctx.info.client === benConnected.client,
    what: "ben's join",
  });
  assert.equal(join.channel, channel);
  assert.equal(join.info.user, benUser);
  assert.deepEqual(join.info.connInfo, { name: 'Ben' });

  const since = watch.log.mark();
  benSub.sub.unsubscribe();
  const leave = await watch.log.waitFor('leave', {
    since,
    pred: (ctx) => ctx.info.client === benConnected.client,
    what: "ben's leave",
  });
  assert.equal(leave.channel, channel);
  assert.equal(leave.info.user, benUser);
});

suite.test('rpc buffered till connected: answered once connected, 108 without an RPC proxy', async () => {
  // centrifuge-js's own case: an rpc() made before connect waits for the
  // connection, then goes out; herald has no RPC proxy here, so 108.
  const h = suite.client({ label: 'rpc-early', token: connectionToken({ sub: uniq('rpc-early') }) });
  const early = h.client.rpc('anything', { q: 1 });
  h.client.connect();
  await assert.rejects(within(early, 5_000, 'the buffered rpc'), (e) => {
    assert.equal(e.code, 108, JSON.stringify(e));
    return true;
  });
  assert.equal(h.client.state, 'connected');
});
