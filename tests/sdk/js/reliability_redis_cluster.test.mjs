// Issue 22, scenario 2: Redis Cluster failover under a stream of publications.
//
// A 3-master, 3-replica Redis Cluster (real redis-server processes, a short
// cluster-node-timeout) behind three herald nodes in Cluster mode (hash-tagged keys,
// SPUBLISH/SSUBSCRIBE). Three recoverable channels, each on another master; real
// centrifuge-js subscribers on every node follow all three while the server API
// publishes a steady stream (every attempt carries its own number n, checker.mjs).
// The master of the first ("checked") channel then fails over:
//
// (a) `CLUSTER FAILOVER` sent to its replica (a graceful, lossless switch);
// (b) the master SIGKILLed (its replica takes over after the node timeout);
// (c) the same, made lossy on purpose: the replica is paused (SIGSTOP) while the master
//     acknowledges more than the sockets between them hold (ballast on another channel
//     of that master, then publications of the checked channel), the master is killed
//     and the replica resumed, so the promoted replica lacks acknowledged publications.
//     One subscriber is away over that window and comes back after the failover.
//
// Every case: the checker reports silent_loss=0 duplicates=0 reorders=0; every
// subscriber catches up to the last acknowledged publication; publishes that failed did
// so with error 100 (temporary) and most attempts were acknowledged; the checked channel
// keeps flowing on the new master. /ready of every node is sampled throughout.
//
// HERALD_RELIABILITY_FULL=1: more publications and three failovers in a row per case
// (back and forth between the two servers of the shard).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  apiPublish,
  appendDiagnostics,
  ClientPool,
  connectClient,
  keySlot,
  startNodes,
  startRedis,
  subscribeSub,
  watchReady,
} from './cluster_support.mjs';
import { checkAll, History, waitCaughtUp } from './checker.mjs';
import { connectionToken, sleep, uniq } from './harness.mjs';

const FULL = process.env.HERALD_RELIABILITY_FULL === '1';
const API_KEY = 'reliability-cluster-key';
const NODE_TIMEOUT_MS = 1_500;
/** Acknowledged publications of the checked channel per case (the others get about as many). */
const PER_CHANNEL = FULL ? 1_500 : 180;
const FAILOVERS = FULL ? 3 : 1;
/** The first failover starts at this many acknowledged publications of the checked channel. */
const FIRST_AT = FULL ? 200 : 50;
/** Acknowledged publications of the checked channel between two failovers. */
const SPACING = FULL ? 400 : 0;
const INTERVAL_MS = 2;
const CLIENTS_PER_NODE = 2;
const LOST_WINDOW = 20; // case (c): acknowledged publications of the checked channel while the replica is paused
const BALLAST = { count: 40, bytes: 256 * 1024 }; // case (c): fills the master-to-replica sockets
const CASE_TIMEOUT_MS = FULL ? 600_000 : 120_000;

const config = {
  http_api: { key: API_KEY },
  client: { recovery_max_publication_limit: 10_000, history_max_publication_limit: 10_000 },
  channel: {
    namespaces: [
      {
        name: 'ha',
        history_size: 10_000,
        history_ttl: '3600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
      },
    ],
  },
};

/** Three channel names of namespace `ha`, the i-th served by the i-th of `masters` (slot ranges). */
function channelsOnMasters(masters, tag) {
  const found = masters.map(() => null);
  for (let i = 0; found.includes(null); i++) {
    if (i > 100_000) throw new Error('no channel names found for every master');
    const name = `ha:${tag}-${i}`;
    const slot = keySlot(name);
    const owner = masters.findIndex((m) => m.slots.some(([a, b]) => slot >= a && slot <= b));
    if (owner >= 0 && found[owner] === null) found[owner] = name;
  }
  return found;
}

/** A channel name of namespace `ha` whose slot `master` serves, other than `not`. */
function channelOnMaster(master, tag, not) {
  for (let i = 0; i < 100_000; i++) {
    const name = `ha:${tag}-${i}`;
    const slot = keySlot(name);
    if (name !== not && master.slots.some(([a, b]) => slot >= a && slot <= b)) return name;
  }
  throw new Error('no channel name found for the master');
}

/** Polls until the server on `port` reports role master and the Cluster agrees, or throws. */
async function waitPromoted(redis, server, { timeout = 30_000 } = {}) {
  const deadline = Date.now() + timeout;
  let last = '';
  for (;;) {
    try {
      const repl = await server.info('replication');
      const nodes = await redis.clusterNodes();
      const me = nodes.find((n) => n.port === server.port);
      last = `role ${repl.role}, cluster says ${me?.role} with ${me?.slots.length ?? 0} slot ranges`;
      if (repl.role === 'master' && me?.role === 'master' && me.slots.length > 0) return;
    } catch (err) {
      last = err.message.split('\n')[0];
    }
    if (Date.now() > deadline) throw new Error(`:${server.port} was not promoted within ${timeout} ms (${last})\n${redis.logTail(15)}`);
    await sleep(100);
  }
}

/**
 * One case. `fault({ master, replica, round, note })` performs the failover of the
 * checked channel's shard and resolves once the replica serves the slot; `lossy` runs
 * case (c) instead (inline, between publications).
 */
function failoverCase(name, { kind }) {
  test(name, { timeout: CASE_TIMEOUT_MS }, async (t) => {
    const pool = new ClientPool();
    const notes = [];
    const note = (s) => notes.push(`[+${((Date.now() - started) / 1000).toFixed(1)}s] ${s}`);
    const started = Date.now();
    let redis = null;
    let cluster = null;
    let ready = null;
    const history = new History();
    const subs = [];
    try {
      redis = await startRedis('cluster', { replicas: 1, nodeTimeout: NODE_TIMEOUT_MS });
      const topology = await redis.clusterNodes();
      const masters = topology.filter((n) => n.role === 'master');
      note(`cluster up: ${topology.map((n) => `:${n.port} ${n.role}${n.masterId ? ` of :${topology.find((m) => m.id === n.masterId)?.port}` : ` slots ${n.slots.map((r) => r.join('-')).join(',')}`}`).join('; ')}`);
      cluster = await startNodes(3, 'cluster', { redis, config, label: `herald (cluster ${kind})` });
      const channels = channelsOnMasters(masters, uniq('feed'));
      const checked = channels[0];
      note(`channels ${channels.map((c, i) => `${c} (slot ${keySlot(c)} on :${masters[i].port})`).join(', ')}; checked ${checked}`);

      // Subscribers: CLIENTS_PER_NODE clients per node, each following every channel.
      for (let node = 0; node < 3; node++) {
        for (let i = 0; i < CLIENTS_PER_NODE; i++) {
          const label = `c${i + 1}${i % 2 === 1 ? '-protobuf' : ''}@node${node + 1}`;
          const handle = pool.client(cluster.url(node), { label, protobuf: i % 2 === 1, token: connectionToken({ sub: uniq('reader') }) });
          await connectClient(handle);
          for (const channel of channels) {
            const s = pool.subscription(handle, channel, { minResubscribeDelay: 50, maxResubscribeDelay: 500 });
            const first = await subscribeSub(s);
            assert.equal(first.recoverable, true, `${channel} is recoverable`);
            subs.push({ label: `${label} ${channel.slice(-8)}`, channel, log: s.log });
          }
        }
      }
      // Case (c): a subscriber of the checked channel away over the lossy window.
      let away = null;
      if (kind === 'lossy') {
        const handle = pool.client(cluster.url(0), { label: 'away@node1', token: connectionToken({ sub: uniq('away') }) });
        await connectClient(handle);
        const s = pool.subscription(handle, checked, { minResubscribeDelay: 50, maxResubscribeDelay: 500 });
        await subscribeSub(s);
        away = { handle, entry: { label: 'away@node1 checked', channel: checked, log: s.log } };
        subs.push(away.entry);
      }

      ready = watchReady(cluster.nodes);
      const failures = new Map();
      const failureSamples = [];
      let attempts = 0;
      let acked = 0;
      let otherFailures = 0; // failed publishes on the channels of the masters that did not fail
      const checkedAcked = () => history.acked(checked).length;
      const lastAck = new Map(); // channel -> { offset, epoch }
      const failovers = []; // { round, from, to, startedAt, doneAt, ackedBefore, ackedAfter, lostOffsets }
      let pending = null; // the failover in progress (cases a, b)
      let failoverError = null;
      let nextAt = FIRST_AT;
      let round = 0;
      let awayBackAt = null;
      const deadline = Date.now() + CASE_TIMEOUT_MS - 45_000;

      const publishOnce = async (channel, nodeIndex) => {
        const n = history.next(channel);
        const data = { n };
        attempts += 1;
        const r = await apiPublish(cluster.nodes[nodeIndex], API_KEY, channel, data);
        if (r.ok) {
          history.ack(channel, n, { offset: r.offset, epoch: r.epoch, data });
          lastAck.set(channel, { offset: r.offset, epoch: r.epoch });
          acked += 1;
        } else {
          failures.set(r.why, (failures.get(r.why) || 0) + 1);
          if (channel !== checked) otherFailures += 1;
          if (failureSamples.length < 10) failureSamples.push(`${channel} n=${n} via node${nodeIndex + 1}: ${r.why} ${r.message ?? ''}`);
        }
        return r;
      };

      /** Case (c): the lossy failover, between two publications. */
      const lossyFailover = async (from, replica, r) => {
        const entry = { round: r, from: from.port, to: replica.port, startedAt: Date.now(), ackedBefore: checkedAcked() };
        away.handle.client.disconnect();
        replica.signal('SIGSTOP');
        const ballast = channelOnMaster(masters.find((m) => m.port === from.port) ?? (await redis.clusterNodes()).find((m) => m.port === from.port), uniq('ballast'), checked);
        const pad = 'x'.repeat(BALLAST.bytes);
        for (let i = 0; i < BALLAST.count; i++) {
          const b = await apiPublish(cluster.nodes[i % 3], API_KEY, ballast, { ballast: i, pad });
          if (!b.ok) throw new Error(`ballast publication ${i} failed: ${b.why}`);
        }
        note(`away@node1 disconnected, replica :${replica.port} paused, ${BALLAST.count} x ${BALLAST.bytes} B of ballast acknowledged on ${ballast} (slot ${keySlot(ballast)})`);
        const windowStart = checkedAcked();
        let i = 0;
        while (checkedAcked() < windowStart + LOST_WINDOW) {
          if (Date.now() > deadline) throw new Error('the lossy window did not fill before the deadline');
          await publishOnce(checked, i++ % 3);
        }
        const before = lastAck.get(checked);
        await from.kill('SIGKILL');
        replica.signal('SIGCONT');
        note(`master :${from.port} SIGKILLed after ${LOST_WINDOW} acknowledged publications of ${checked} (last offset ${before.offset}, epoch ${before.epoch}); replica :${replica.port} resumed`);
        await waitPromoted(redis, replica);
        entry.doneAt = Date.now();
        const meta = `${cluster.prefix}.stream.meta.{${checked}}`;
        const kept = (await replica.cli(['hget', meta, 's'])).trim();
        entry.lostOffsets = before.offset - Number(kept || 0);
        note(`replica :${replica.port} promoted after ${entry.doneAt - entry.startedAt} ms; before the next publish it holds offset ${kept} of the ${before.offset} acknowledged`);
        failovers.push(entry);
        awayBackAt = checkedAcked() + 40;
      };

      /** Cases (a) and (b): the failover, in the background while publishing goes on. */
      const backgroundFailover = async (from, replica, r) => {
        const entry = { round: r, from: from.port, to: replica.port, startedAt: Date.now(), ackedBefore: checkedAcked() };
        if (kind === 'manual') {
          const reply = (await replica.cli(['cluster', 'failover'])).trim();
          note(`round ${r}: CLUSTER FAILOVER sent to :${replica.port} (replica of :${from.port}): ${reply}`);
        } else {
          await from.kill('SIGKILL');
          note(`round ${r}: master :${from.port} SIGKILLed (replica :${replica.port})`);
        }
        await waitPromoted(redis, replica);
        entry.doneAt = Date.now();
        entry.ackedAtSwitch = checkedAcked();
        note(`round ${r}: :${replica.port} serves the slot after ${entry.doneAt - entry.startedAt} ms`);
        if (kind === 'kill' && FAILOVERS > 1) {
          // The killed server comes back with its nodes.conf: a replica of the new master.
          await from.start();
          await redis.waitClusterOk({ timeout: 60_000 });
          note(`round ${r}: :${from.port} restarted and in sync as a replica`);
        }
        failovers.push(entry);
      };

      for (let i = 0; checkedAcked() < PER_CHANNEL || pending || round < FAILOVERS; i++) {
        if (Date.now() > deadline) {
          throw new Error(`only ${checkedAcked()} of ${PER_CHANNEL} publications of the checked channel acknowledged before the deadline (${round} failovers started); failures ${JSON.stringify([...failures])}`);
        }
        const channel = channels[i % channels.length];
        await publishOnce(channel, Math.floor(i / channels.length) % 3);
        if (!pending && round < FAILOVERS && checkedAcked() >= nextAt) {
          round += 1;
          const { master, replica } = await redis.ownerOfSlot(keySlot(checked));
          if (!master || !replica) throw new Error(`round ${round}: the checked channel's slot has master ${master?.port} and replica ${replica?.port}`);
          if (kind === 'lossy') {
            await lossyFailover(master, replica, round);
            if (FAILOVERS > round) {
              await master.start();
              await redis.waitClusterOk({ timeout: 60_000 });
              note(`round ${round}: :${master.port} restarted and in sync as a replica`);
            }
            nextAt = checkedAcked() + Math.max(SPACING, 60);
          } else {
            pending = backgroundFailover(master, replica, round).then(
              () => {
                pending = null;
                nextAt = checkedAcked() + SPACING;
              },
              (err) => {
                pending = null;
                failoverError = err;
              },
            );
          }
        }
        if (failoverError) throw failoverError;
        if (away && awayBackAt !== null && checkedAcked() >= awayBackAt) {
          awayBackAt = null;
          away.handle.client.connect();
          note(`away@node1 reconnects at ${checkedAcked()} acknowledged of the checked channel`);
        }
        if (INTERVAL_MS > 0) await sleep(INTERVAL_MS);
      }
      await ready.stop();
      note(`${acked} acknowledged of ${attempts} attempts; failures ${JSON.stringify([...failures])} (${otherFailures} on the other masters' channels)${failureSamples.length ? `: ${failureSamples.join('; ')}` : ''}`);
      note(ready.describe());
      t.diagnostic(`publish failures: ${JSON.stringify([...failures])}`);
      for (const f of failovers) {
        note(`failover ${f.round}: :${f.from} -> :${f.to} in ${f.doneAt - f.startedAt} ms; checked channel acknowledged ${f.ackedBefore} before${f.lostOffsets !== undefined ? `, new master lacked ${f.lostOffsets} acknowledged offsets` : ''}`);
      }

      await waitCaughtUp(history, subs, { timeout: 30_000, sleep });
      await sleep(500); // late duplicates would show now
      const report = checkAll(history, subs);
      console.log(report.line);
      t.diagnostic(report.line);
      note(report.line);
      for (const d of report.details) note(d);

      assert.equal(report.totals.silentLoss, 0, 'no acknowledged publication lost silently');
      assert.equal(report.totals.duplicates, 0, 'no publication delivered twice');
      assert.equal(report.totals.reorders, 0, 'no publication out of order');
      assert.equal(failovers.length, FAILOVERS, `${FAILOVERS} failover(s) happened`);
      for (const why of failures.keys()) {
        assert.match(why, /^error 100$/, `publishes failed only with error 100 (temporary): ${JSON.stringify([...failures])}; ${failureSamples.join('; ')}`);
      }
      assert.ok(acked >= attempts * 0.9, `most attempts were acknowledged: ${acked} of ${attempts}`);
      // The stream keeps flowing on the new master after the last failover.
      const last = failovers[failovers.length - 1];
      const afterLast = history.acked(checked).length - (last.ackedAtSwitch ?? last.ackedBefore + LOST_WINDOW);
      assert.ok(afterLast >= 20, `publications of the checked channel continued after the last failover: ${afterLast}`);
      const { master: now } = await redis.ownerOfSlot(keySlot(checked));
      assert.equal(now.port, last.to, 'the checked channel is served by the server promoted last');
      const meta = `${cluster.prefix}.stream.meta.{${checked}}`;
      const top = Number((await now.cli(['hget', meta, 's'])).trim());
      const epoch = (await now.cli(['hget', meta, 'e'])).trim();
      const lastChecked = lastAck.get(checked);
      assert.deepEqual({ top, epoch }, { top: lastChecked.offset, epoch: lastChecked.epoch }, 'the new master holds the stream up to the last acknowledged publication');
      if (kind === 'lossy') {
        for (const f of failovers) {
          assert.ok(f.lostOffsets > 0, `failover ${f.round} was lossy: the promoted replica lacked ${f.lostOffsets} acknowledged offsets (else the case proves nothing)`);
        }
        const awayResult = report.results.find((r) => r.label === away.entry.label);
        assert.ok(awayResult.toldPairs > 0, `the away subscriber missed acknowledged publications and was told: ${awayResult.toldPairs}`);
      }
    } catch (err) {
      throw appendDiagnostics(
        err,
        [`--- notes ---\n${notes.join('\n')}`, ready ? ready.describe() : '', pool.diagnostics({ frames: 8 }), cluster ? cluster.logTails(60) : redis ? redis.logTail() : ''].join('\n'),
      );
    } finally {
      for (const line of notes.filter((l) => !l.includes('delivered'))) t.diagnostic(line);
      if (ready) await ready.stop();
      await pool.closeAll();
      if (cluster) {
        cluster.saveLogs(`reliability-cluster-${kind}`);
        await cluster.stop();
      }
      if (redis) await redis.close();
    }
  });
}

describe('Redis Cluster failover (issue 22, scenario 2)', () => {
  failoverCase(`(a) CLUSTER FAILOVER of the checked channel's master mid-stream (${FAILOVERS}x): nothing lost silently, the stream goes on`, { kind: 'manual' });
  failoverCase(`(b) the checked channel's master SIGKILLed mid-stream (${FAILOVERS}x): the replica takes over, nothing lost silently`, { kind: 'kill' });
  failoverCase(`(c) lossy failover (replica paused behind ballast, master SIGKILLed): the promoted replica lacks acknowledged publications, subscribers are told`, { kind: 'lossy' });
});
