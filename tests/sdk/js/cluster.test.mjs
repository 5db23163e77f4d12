// Multi-node delivery with the real centrifuge-js SDK: three herald nodes on one Redis
// set-up (standalone, two shards, a 3-master Redis Cluster). Publications, presence,
// join/leave cross nodes; in Cluster mode client-channel publications go out as SPUBLISH.
//
// HERALD_REDIS_MODES=standalone,sharded,cluster (the default) picks the modes.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import {
  connectClient,
  modesFromEnv,
  nodesSuite,
  subscribeSub,
  within,
} from './cluster_support.mjs';
import { apiCall, connectionToken, sleep, uniq } from './harness.mjs';

const modes = modesFromEnv('HERALD_REDIS_MODES', 'standalone,sharded,cluster');

const API_KEY = `api-key-${uniq('cluster')}`;

const channels = {
  client: { presence_update_interval: '1s' },
  http_api: { key: API_KEY },
  channel: {
    namespaces: [
      {
        name: 'bin',
        history_size: 100,
        history_ttl: '600s',
        publication_data_format: 'binary',
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_history_for_client: true,
      },
      {
        name: 'mixed',
        history_size: 1000,
        history_ttl: '600s',
        presence: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_presence_for_client: true,
      },
      {
        name: 'hist',
        history_size: 1000,
        history_ttl: '600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_history_for_client: true,
      },
      {
        name: 'room',
        presence: true,
        join_leave: true,
        force_push_join_leave: true,
        allow_subscribe_for_client: true,
        allow_presence_for_subscriber: true,
        allow_presence_for_client: true,
      },
      {
        name: 'live',
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
      },
    ],
  },
};

/** Polls `fn` until `ok(result)` or `ms` pass; resolves with the last result. */
async function eventually(fn, ok, ms = 5_000, every = 200) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (ok(last) || Date.now() > deadline) return last;
    await sleep(every);
  }
}

for (const mode of modes) {
  describe(`redis ${mode}: 3 herald nodes`, () => {
    const env = nodesSuite({ nodes: 3, mode, config: channels, label: `herald (cluster ${mode})` });

    env.test('50 publications from node 2 reach a subscriber on node 1 in order, once each', async () => {
      const channel = `hist:${uniq('feed')}`;
      const reader = env.client(0, { label: 'reader@node1', token: connectionToken({ sub: uniq('reader') }) });
      const writer = env.client(1, { label: 'writer@node2', token: connectionToken({ sub: uniq('writer') }) });
      await connectClient(reader);
      await connectClient(writer);
      const s = env.subscription(reader, channel);
      const subscribed = await subscribeSub(s);
      assert.equal(subscribed.recoverable, true, 'hist: channels are recoverable');
      const epoch = subscribed.streamPosition?.epoch;
      assert.ok(epoch, 'a recoverable subscription has an epoch');

      const since = s.log.mark();
      for (let n = 1; n <= 50; n++) {
        await within(writer.client.publish(channel, { n }), 5_000, `publish n=${n} on node 2`);
      }
      await s.log.waitFor('publication', {
        since,
        pred: () => s.log.all('publication', since).length >= 50,
        timeout: 10_000,
        what: '50 publications on node 1',
      });
      await sleep(300); // nothing more may arrive
      const pubs = s.log.all('publication', since);
      assert.deepEqual(
        pubs.map((p) => p.data),
        Array.from({ length: 50 }, (_, i) => ({ n: i + 1 })),
        'every publication once, in publish order',
      );
      assert.deepEqual(
        pubs.map((p) => p.offset),
        Array.from({ length: 50 }, (_, i) => i + 1),
        'offsets 1..50 of a fresh stream',
      );

      const hist = await within(writer.client.history(channel, { limit: 0 }), 5_000, 'history on node 2');
      assert.equal(hist.offset, 50, 'the stream top seen from node 2 is 50');
      assert.equal(hist.epoch, epoch, 'both nodes see the same epoch');
    });

    env.test('JSON and protobuf subscribers on 3 nodes get the same 200 publications from JSON, protobuf and API publishers, in order, once', async () => {
      const channel = `mixed:${uniq('formats')}`;
      const bytes = (value) => new TextEncoder().encode(JSON.stringify(value));
      const subscribers = [
        { node: 0, protobuf: false },
        { node: 0, protobuf: true },
        { node: 1, protobuf: true },
        { node: 2, protobuf: false },
      ].map(({ node, protobuf }) => {
        const label = `${protobuf ? 'protobuf' : 'json'}-reader@node${node + 1}`;
        const handle = env.client(node, { label, protobuf, token: connectionToken({ sub: uniq('reader') }) });
        return { handle, protobuf, label };
      });
      for (const s of subscribers) {
        s.clientId = (await connectClient(s.handle)).client;
        s.sub = env.subscription(s.handle, channel);
        await subscribeSub(s.sub);
        s.since = s.sub.log.mark();
      }
      const jsonWriter = env.client(1, { label: 'json-writer@node2', token: connectionToken({ sub: uniq('writer') }) });
      const protobufWriter = env.client(2, { label: 'protobuf-writer@node3', protobuf: true, token: connectionToken({ sub: uniq('writer') }) });
      await connectClient(jsonWriter);
      await connectClient(protobufWriter);

      const apiUrl = env.cluster.nodes[0].apiUrl;
      for (let n = 1; n <= 200; n++) {
        const what = `publish n=${n}`;
        if (n % 3 === 0) {
          await within(jsonWriter.client.publish(channel, { n }), 5_000, `${what} (JSON client, node 2)`);
        } else if (n % 3 === 1) {
          await within(protobufWriter.client.publish(channel, bytes({ n })), 5_000, `${what} (protobuf client, node 3)`);
        } else {
          const reply = await apiCall(apiUrl, API_KEY, 'publish', { channel, data: { n } });
          assert.ok(reply.result, `${what} (server API): ${JSON.stringify(reply)}`);
        }
      }
      const want = Array.from({ length: 200 }, (_, i) => ({ n: i + 1 }));
      for (const s of subscribers) {
        const { log } = s.sub;
        await log.waitFor('publication', {
          since: s.since,
          pred: () => log.all('publication', s.since).length >= 200,
          timeout: 15_000,
          what: `200 publications at ${s.label}`,
        });
      }
      await sleep(300); // nothing more may arrive
      for (const s of subscribers) {
        const pubs = s.sub.log.all('publication', s.since);
        const data = pubs.map((p) => (s.protobuf ? JSON.parse(new TextDecoder().decode(p.data)) : p.data));
        assert.deepEqual(data, want, `${s.label}: every publication once, in publish order`);
        assert.deepEqual(
          pubs.map((p) => Number(p.offset)),
          Array.from({ length: 200 }, (_, i) => i + 1),
          `${s.label}: offsets 1..200`,
        );
        const binary = s.handle.frames.some((f) => f.dir === 'in' && f.binary);
        assert.equal(binary, s.protobuf, `${s.label}: ${s.protobuf ? 'binary' : 'text'} messages only`);
      }

      const presence = await eventually(
        () => within(protobufWriter.client.presence(channel), 5_000, 'presence on node 3 (protobuf)'),
        (p) => Object.keys(p.clients).length === 4,
      );
      const users = Object.values(presence.clients).map((c) => c.client).sort();
      const subscriberIds = subscribers.map((s) => s.clientId).sort();
      assert.deepEqual(users, subscriberIds, 'presence lists the JSON and the protobuf subscribers of every node');
    });

    env.test('a binary channel carries bytes across nodes: live, and history read on a third node', async () => {
      const channel = `bin:${uniq('blob')}`;
      const reader = env.client(0, { label: 'protobuf-reader@node1', protobuf: true, token: connectionToken({ sub: uniq('reader') }) });
      const writer = env.client(1, { label: 'protobuf-writer@node2', protobuf: true, token: connectionToken({ sub: uniq('writer') }) });
      const other = env.client(2, { label: 'protobuf-other@node3', protobuf: true, token: connectionToken({ sub: uniq('other') }) });
      await connectClient(reader);
      await connectClient(writer);
      await connectClient(other);
      const s = env.subscription(reader, channel);
      await subscribeSub(s);
      const since = s.log.mark();
      const blobs = [Buffer.from([0x00, 0xff, 0x10]), Buffer.from('{"a":1}'), Buffer.alloc(2048, 0xab)];
      for (const blob of blobs) await within(writer.client.publish(channel, new Uint8Array(blob)), 5_000, 'publish bytes on node 2');
      await s.log.waitFor('publication', { since, pred: () => s.log.all('publication', since).length >= 3, timeout: 10_000, what: '3 blobs on node 1' });
      const hex = (list) => list.map((b) => Buffer.from(b).toString('hex'));
      assert.deepEqual(hex(s.log.all('publication', since).map((p) => p.data)), hex(blobs), 'the bytes on node 1, in order');
      const hist = await within(other.client.history(channel, { limit: 10 }), 5_000, 'history on node 3');
      assert.deepEqual(hex(hist.publications.map((p) => p.data)), hex(blobs), 'history on node 3 gives the bytes back');
    });

    env.test('a channel without history crosses nodes too (node 3 -> node 1)', async (t) => {
      const channel = `live:${uniq('ticker')}`;
      const reader = env.client(0, { label: 'reader@node1', token: connectionToken({ sub: uniq('reader') }) });
      const writer = env.client(2, { label: 'writer@node3', token: connectionToken({ sub: uniq('writer') }) });
      await connectClient(reader);
      await connectClient(writer);
      const s = env.subscription(reader, channel);
      const subscribed = await subscribeSub(s);
      assert.equal(subscribed.recoverable, false, 'live: channels keep no history');

      const cluster = env.cluster;
      const spublishBefore = mode === 'cluster' ? await cluster.redis.commandCalls('spublish') : 0;
      const monitor = mode === 'cluster' ? cluster.redis.monitor() : null;
      if (monitor) await monitor.ready;

      const since = s.log.mark();
      for (let n = 1; n <= 10; n++) {
        await within(writer.client.publish(channel, { n }), 5_000, `publish n=${n} on node 3`);
      }
      await s.log.waitFor('publication', {
        since,
        pred: () => s.log.all('publication', since).length >= 10,
        timeout: 10_000,
        what: '10 publications on node 1',
      });
      await sleep(300);
      const pubs = s.log.all('publication', since);
      assert.deepEqual(
        pubs.map((p) => p.data),
        Array.from({ length: 10 }, (_, i) => ({ n: i + 1 })),
        'every publication once, in order',
      );
      for (const p of pubs) assert.ok(!p.offset, `no offset on a channel without history, got ${p.offset}`);

      if (mode === 'cluster') {
        const seen = await monitor.stop();
        const spublishAfter = await cluster.redis.commandCalls('spublish');
        assert.ok(
          spublishAfter > spublishBefore && spublishAfter > 0,
          `cmdstat_spublish calls grew (before ${spublishBefore}, after ${spublishAfter})`,
        );
        const pubsubChannel = `${cluster.prefix}.client.{${channel}}`;
        const lines = seen.flatMap((m) => m.lines.map((l) => `${m.port}: ${l}`));
        const forChannel = lines.filter((l) => l.includes(`"${pubsubChannel}"`));
        const spublish = forChannel.filter((l) => /"spublish"/i.test(l));
        const plain = forChannel.filter((l) => /"publish"/i.test(l));
        assert.equal(
          spublish.length,
          10,
          `MONITOR saw 10 SPUBLISH to ${pubsubChannel}; lines for it:\n${forChannel.join('\n').slice(0, 4000)}`,
        );
        assert.deepEqual(plain, [], 'no plain PUBLISH to a client channel in Cluster mode');
        const ports = new Set(spublish.map((l) => l.split(':')[0]));
        assert.equal(ports.size, 1, `all SPUBLISH went to the one master holding the slot (${[...ports]})`);
        t.diagnostic(`SPUBLISH seen on master ${[...ports]}`);
      }
    });

    env.test('presence and presence_stats asked on node 3 list the subscribers of nodes 1 and 2', async () => {
      const channel = `room:${uniq('lobby')}`;
      const annUser = uniq('ann');
      const benUser = uniq('ben');
      const ann = env.client(0, { label: 'ann@node1', token: connectionToken({ sub: annUser, info: { name: 'Ann' } }) });
      const ben = env.client(1, { label: 'ben@node2', token: connectionToken({ sub: benUser, info: { name: 'Ben' } }) });
      const cat = env.client(2, { label: 'cat@node3', token: connectionToken({ sub: uniq('cat') }) });
      const annId = (await connectClient(ann)).client;
      const benId = (await connectClient(ben)).client;
      await connectClient(cat);
      await subscribeSub(env.subscription(ann, channel));
      await subscribeSub(env.subscription(ben, channel));

      const presence = await eventually(
        () => within(cat.client.presence(channel), 5_000, 'presence on node 3'),
        (p) => Object.keys(p.clients).length === 2,
      );
      assert.deepEqual(Object.keys(presence.clients).sort(), [annId, benId].sort(), 'presence lists ann and ben');
      assert.equal(presence.clients[annId].user, annUser);
      assert.deepEqual(presence.clients[annId].connInfo, { name: 'Ann' });
      assert.equal(presence.clients[benId].user, benUser);
      assert.deepEqual(presence.clients[benId].connInfo, { name: 'Ben' });

      const stats = await within(cat.client.presenceStats(channel), 5_000, 'presence_stats on node 3');
      assert.deepEqual(stats, { numClients: 2, numUsers: 2 });

      // A subscriber on node 3 asks through its subscription: three clients now.
      const catSub = env.subscription(cat, channel);
      await subscribeSub(catSub);
      const three = await eventually(
        () => within(catSub.sub.presenceStats(), 5_000, 'presence_stats of the node 3 subscription'),
        (p) => p.numClients === 3,
      );
      assert.deepEqual(three, { numClients: 3, numUsers: 3 });
    });

    env.test('join and leave cross nodes (node 2 subscriber seen from node 1)', async () => {
      const channel = `room:${uniq('hall')}`;
      const watcher = env.client(0, { label: 'watcher@node1', token: connectionToken({ sub: uniq('watcher') }) });
      await connectClient(watcher);
      const watch = env.subscription(watcher, channel);
      await subscribeSub(watch);

      const benUser = uniq('ben');
      const ben = env.client(1, { label: 'ben@node2', token: connectionToken({ sub: benUser, info: { name: 'Ben' } }) });
      const benId = (await connectClient(ben)).client;
      const benSub = env.subscription(ben, channel);
      await subscribeSub(benSub);

      const join = await watch.log.waitFor('join', {
        pred: (ctx) => ctx.info.client === benId,
        timeout: 5_000,
        what: "ben's join from node 2",
      });
      assert.equal(join.channel, channel);
      assert.equal(join.info.user, benUser);
      assert.deepEqual(join.info.connInfo, { name: 'Ben' });

      const since = watch.log.mark();
      benSub.sub.unsubscribe();
      const leave = await watch.log.waitFor('leave', {
        since,
        pred: (ctx) => ctx.info.client === benId,
        timeout: 5_000,
        what: "ben's leave from node 2",
      });
      assert.equal(leave.channel, channel);
      assert.equal(leave.info.user, benUser);
      assert.equal(
        watch.log.all('join').filter((j) => j.info.client === benId).length,
        1,
        'one join for one subscribe',
      );
    });
  });
}
