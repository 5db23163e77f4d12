// Issue 22, scenario 7: Redis persistence. A standalone Redis with an append-only file
// (`appendonly yes`, `appendfsync always`, its own data dir) behind two herald nodes;
// real centrifuge-js subscribers on both follow two recoverable channels while the
// server API publishes a steady stream (checker.mjs numbers every attempt). Mid-stream
// Redis is stopped, with SIGTERM in one case and SIGKILL in the other, and started again
// on the same port from its data dir.
//
// With `appendfsync always` Redis writes and fsyncs every command to the AOF before it
// answers, so even SIGKILL keeps every acknowledged publication. Expected, for both
// signals: every acknowledged publication carries the same epoch before and after the
// restart, the history API returns every one of them with its data, each subscriber
// resubscribes with `recovered: true` (never `recovered: false`), and the checker
// reports silent_loss=0 duplicates=0 reorders=0 told=0. Publishes that fail while Redis
// is down fail with error 100 (temporary).
//
// HERALD_RELIABILITY_FULL=1: more publications and three restarts per case.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  apiHistoryAll,
  apiPublish,
  appendDiagnostics,
  ClientPool,
  connectClient,
  startNodes,
  startRedis,
  subscribeSub,
  watchReady,
} from './cluster_support.mjs';
import { checkAll, History, waitCaughtUp } from './checker.mjs';
import { connectionToken, sleep, uniq } from './harness.mjs';

const FULL = process.env.HERALD_RELIABILITY_FULL === '1';
const API_KEY = 'reliability-persistence-key';
/** Acknowledged publications per channel. */
const PER_CHANNEL = FULL ? 1_500 : 250;
const RESTARTS = FULL ? 3 : 1;
/** Restart i (from 0) starts at this many acknowledged publications of the first channel. */
const restartAt = (i) => Math.floor((PER_CHANNEL * (i + 1)) / (RESTARTS + 2));
const DOWN_MS = 1_500;
const INTERVAL_MS = 2;
const CLIENTS_PER_NODE = 3;
const CASE_TIMEOUT_MS = FULL ? 400_000 : 90_000;

const config = {
  http_api: { key: API_KEY },
  client: { recovery_max_publication_limit: 10_000, history_max_publication_limit: 10_000 },
  channel: {
    namespaces: [
      {
        name: 'aof',
        history_size: 10_000,
        history_ttl: '3600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
      },
    ],
  },
};

function restartCase(signal) {
  test(`Redis with AOF (appendfsync always) stopped by ${signal} mid-stream (${RESTARTS}x) and started from its data: same epoch, history intact, recovered: true, nothing lost`, { timeout: CASE_TIMEOUT_MS }, async (t) => {
    const pool = new ClientPool();
    const notes = [];
    const started = Date.now();
    const note = (s) => notes.push(`[+${((Date.now() - started) / 1000).toFixed(1)}s] ${s}`);
    let redis = null;
    let cluster = null;
    let ready = null;
    const history = new History();
    const subs = [];
    try {
      redis = await startRedis('standalone', { aof: 'always' });
      const server = redis.servers[0];
      note(`redis :${server.port} with appendonly yes, appendfsync always, dir ${server.dir}`);
      cluster = await startNodes(2, 'standalone', { redis, config, label: `herald (aof ${signal})` });
      const channels = [`aof:${uniq('feed')}`, `aof:${uniq('feed')}`];
      for (let node = 0; node < 2; node++) {
        for (let i = 0; i < CLIENTS_PER_NODE; i++) {
          const label = `c${i + 1}${i % 2 === 1 ? '-protobuf' : ''}@node${node + 1}`;
          const handle = pool.client(cluster.url(node), { label, protobuf: i % 2 === 1, token: connectionToken({ sub: uniq('reader') }) });
          await connectClient(handle);
          for (const [k, channel] of channels.entries()) {
            const s = pool.subscription(handle, channel, { minResubscribeDelay: 50, maxResubscribeDelay: 500 });
            const first = await subscribeSub(s);
            assert.equal(first.recoverable, true, `${channel} is recoverable`);
            subs.push({ label: `${label} ch${k + 1}`, channel, log: s.log });
          }
        }
      }

      // Every third publication is a client publish (centrifuge-js `publish`, one
      // publisher client per node); the rest go through the server API.
      const publishers = [];
      for (let node = 0; node < 2; node++) {
        const handle = pool.client(cluster.url(node), { label: `publisher@node${node + 1}`, token: connectionToken({ sub: uniq('writer') }) });
        await connectClient(handle);
        publishers.push(handle);
      }
      const clientFailures = new Map();

      ready = watchReady(cluster.nodes);
      const failures = new Map();
      const failureSamples = [];
      const epochs = new Map(channels.map((c) => [c, new Set()]));
      const restarts = [];
      let attempts = 0;
      let acked = 0;
      let restart = null; // the restart in progress, in the background
      let restartError = null;
      let nextRestart = 0;
      const deadline = Date.now() + CASE_TIMEOUT_MS - 30_000;
      const first = () => history.acked(channels[0]).length;

      const restartRedis = async (round) => {
        const entry = { round, ackedBefore: first(), at: Date.now() };
        if (signal === 'SIGTERM') {
          await server.kill('SIGTERM'); // Redis flushes the AOF and exits
        } else {
          await server.kill('SIGKILL');
        }
        entry.downAt = Date.now();
        note(`round ${round}: redis stopped by ${signal} after ${entry.ackedBefore} acknowledged on ${channels[0]}`);
        await sleep(DOWN_MS);
        await server.start();
        entry.upAt = Date.now();
        const persistence = await server.info('persistence');
        note(`round ${round}: redis started again from its dir (down ${entry.upAt - entry.downAt} ms; aof_enabled ${persistence.aof_enabled}, loading ${persistence.loading})`);
        restarts.push(entry);
      };

      for (let i = 0; first() < PER_CHANNEL || restart; i++) {
        if (Date.now() > deadline) {
          throw new Error(`only ${first()} of ${PER_CHANNEL} acknowledged before the deadline; failures ${JSON.stringify([...failures])}`);
        }
        if (restartError) throw restartError;
        const channel = channels[i % channels.length];
        const n = history.next(channel);
        const data = { n };
        attempts += 1;
        const node = Math.floor(i / channels.length) % 2;
        if (i % 3 === 2) {
          // A client publish: acknowledged when the SDK's promise resolves (its result
          // has no offset); a rejection or timeout means it is not owed.
          try {
            await publishers[node].client.publish(channel, data);
            history.ack(channel, n, { data });
            acked += 1;
          } catch (err) {
            const why = `client publish: ${err?.code ?? '?'} ${err?.message ?? err}`;
            clientFailures.set(why, (clientFailures.get(why) || 0) + 1);
            await sleep(20);
          }
          continue;
        }
        const r = await apiPublish(cluster.nodes[node], API_KEY, channel, data);
        if (r.ok) {
          history.ack(channel, n, { offset: r.offset, epoch: r.epoch, data });
          epochs.get(channel).add(r.epoch);
          acked += 1;
        } else {
          failures.set(r.why, (failures.get(r.why) || 0) + 1);
          if (failureSamples.length < 10) failureSamples.push(`${channel} n=${n}: ${r.why} ${r.message ?? ''}`);
          await sleep(20);
        }
        if (!restart && nextRestart < RESTARTS && first() >= restartAt(nextRestart)) {
          nextRestart += 1;
          restart = restartRedis(nextRestart).then(
            () => {
              restart = null;
            },
            (err) => {
              restart = null;
              restartError = err;
            },
          );
        }
        if (INTERVAL_MS > 0) await sleep(INTERVAL_MS);
      }
      if (restartError) throw restartError;
      await ready.stop();
      note(`${acked} acknowledged of ${attempts} attempts; client publish failures ${JSON.stringify([...clientFailures])}; failures ${JSON.stringify([...failures])}${failureSamples.length ? `: ${failureSamples.join('; ')}` : ''}`);
      note(ready.describe());
      t.diagnostic(`publish failures: ${JSON.stringify([...failures])}`);

      await waitCaughtUp(history, subs, { timeout: 30_000, sleep });
      await sleep(500); // late duplicates would show now
      const report = checkAll(history, subs);
      console.log(report.line);
      t.diagnostic(report.line);
      note(report.line);
      for (const d of report.details) note(d);

      assert.equal(restarts.length, RESTARTS, `Redis was restarted ${RESTARTS} time(s)`);
      assert.equal(report.totals.silentLoss, 0, 'no acknowledged publication lost silently');
      assert.equal(report.totals.duplicates, 0, 'no publication delivered twice');
      assert.equal(report.totals.reorders, 0, 'no publication out of order');
      assert.equal(report.totals.toldEvents, 0, 'nobody was told of a loss (no recovered: false, no unsubscribe): none happened');
      for (const channel of channels) {
        assert.equal(epochs.get(channel).size, 1, `${channel}: every acknowledgement carries one epoch: ${[...epochs.get(channel)]}`);
      }
      // Each subscriber resubscribed after each restart, with recovered: true.
      for (const { label, channel, log } of subs) {
        const resubs = log.all('subscribed').slice(1);
        assert.ok(resubs.length >= 1, `${label} resubscribed after the restart`);
        for (const r of resubs) {
          assert.ok(r.wasRecovering && r.recovered === true, `${label}: resubscribe recovered (wasRecovering ${r.wasRecovering}, recovered ${r.recovered}, epoch ${r.streamPosition?.epoch})`);
          assert.equal(r.streamPosition?.epoch, [...epochs.get(channel)][0], `${label}: the resubscribe reply carries the same epoch`);
        }
      }
      // The history API returns every acknowledged publication, in order, with its data.
      for (const channel of channels) {
        const page = await apiHistoryAll(cluster.nodes[1], API_KEY, channel);
        const want = history.channels.get(channel).acked;
        assert.equal(page.epoch, [...epochs.get(channel)][0], `${channel}: history has the same epoch`);
        const byOffset = new Map(page.publications.map((p) => [p.offset, p.data]));
        const inHistory = new Set(page.publications.map((p) => p.data?.n));
        // API publishes at their offset; client publishes (no offset in the SDK's result) anywhere.
        const missing = want
          .filter((a) => (a.offset === null ? !inHistory.has(a.n) : byOffset.get(a.offset)?.n !== a.n))
          .map((a) => `${a.offset ?? 'client'}:n=${a.n}`);
        assert.ok(want.some((a) => a.offset === null), `${channel}: some acknowledged publications were client publishes`);
        assert.deepEqual(missing, [], `${channel}: history holds every acknowledged publication at its offset (${page.publications.length} entries, top ${page.top})`);
        const offsets = page.publications.map((p) => p.offset);
        assert.deepEqual(offsets, Array.from({ length: page.top }, (_, k) => k + 1), `${channel}: history is offsets 1..${page.top}, in order`);
        note(`${channel}: history epoch ${page.epoch}, offsets 1..${page.top}, ${want.length} acknowledged`);
      }
      assert.ok(failures.size > 0, 'some publishes failed while Redis was down');
      for (const why of failures.keys()) {
        assert.match(why, /^error 100$/, `publishes failed only with error 100 (temporary): ${failureSamples.join('; ')}`);
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
        cluster.saveLogs(`reliability-persistence-${signal}`);
        await cluster.stop();
      }
      if (redis) await redis.close();
    }
  });
}

describe('Redis persistence with AOF (issue 22, scenario 7)', () => {
  restartCase('SIGTERM');
  restartCase('SIGKILL');
});
