// Redis Sentinel failover with the real centrifuge-js SDK: two herald nodes find the
// master through three Sentinels; subscribers on both nodes follow a recoverable
// channel while 1,000 publications go through the server API and the master is
// SIGKILLed. Replication is asynchronous, so the promoted replica may lack the last
// publications; herald's promise is checked per subscriber: every publication
// acknowledged to the publisher arrives in order and once, or the subscriber is told
// (it resubscribes with recovered: false). Nothing is lost silently.
//
// The failover is made lossy on purpose: the replica is paused (SIGSTOP) while the
// master acknowledges more than the sockets between them hold (ballast publications
// on another channel, then publications of the checked channel), and the master is
// killed before the replica reads on. One subscriber is disconnected over that window
// and reconnects after the failover: it missed acknowledged publications the new
// master does not have, and must be told.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { appendDiagnostics, ClientPool, connectClient, startNodes, subscribeSub } from './cluster_support.mjs';
import { connectionToken, sleep, uniq, within } from './harness.mjs';
import { checkSubscriber, describeTimeline } from './checker.mjs';
import { startSentinelRedis } from './sentinel_support.mjs';

const API_KEY = 'sentinel-api-key';
const COUNT = 1_000;
const KILL_AT = 300; // the lossy failover starts once this many publications were acknowledged
const LOST_WINDOW = 20; // publications of the checked channel acknowledged while the replica is paused
const BALLAST = { count: 40, bytes: 256 * 1024 }; // fills the master-to-replica sockets
const AWAY_UNTIL = KILL_AT + LOST_WINDOW + 100; // the away subscriber reconnects at this many acknowledged
const INTERVAL_MS = 3;
const SUBSCRIBERS_PER_NODE = 2;
const CASE_TIMEOUT_MS = 150_000;

const config = {
  http_api: { key: API_KEY },
  client: { recovery_max_publication_limit: 5_000 },
  channel: {
    namespaces: [
      {
        name: 'ha',
        history_size: 2_000,
        history_ttl: '3600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
      },
    ],
  },
};

/** One server API publish; `{ ok: true }` when acknowledged, else what went wrong. */
async function apiPublish(node, channel, n, extra = {}) {
  try {
    const res = await within(
      fetch(`${node.apiUrl}/api/publish`, {
        method: 'POST',
        headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel, data: { n, ...extra } }),
      }),
      5_000,
      'POST /api/publish',
    );
    const text = await res.text();
    if (res.status !== 200) return { ok: false, why: `HTTP ${res.status}` };
    const reply = JSON.parse(text);
    if (reply.error) return { ok: false, why: `error ${reply.error.code}` };
    return { ok: true, offset: reply.result?.offset, epoch: reply.result?.epoch };
  } catch (err) {
    return { ok: false, why: `exception ${err.message.split('\n')[0]}` };
  }
}

test(`Sentinel failover: ${COUNT} API publications, master SIGKILLed, every acknowledged one delivered in order once or the subscriber told`, { timeout: CASE_TIMEOUT_MS }, async (t) => {
  const pool = new ClientPool();
  const notes = [];
  const note = (s) => notes.push(s);
  let redis = null;
  let cluster = null;
  try {
    redis = await startSentinelRedis();
    const firstMaster = await redis.master();
    note(`master :${firstMaster.port}, replica :${redis.servers.find((s) => s !== firstMaster).port}, Sentinels ${redis.sentinels.map((s) => `:${s.port}`).join(' ')}`);
    cluster = await startNodes(2, 'sentinel', { redis, config, label: 'herald (sentinel)' });
    const channel = `ha:${uniq('feed')}`;

    const subs = [];
    for (let node = 0; node < 2; node++) {
      for (let i = 0; i < SUBSCRIBERS_PER_NODE; i++) {
        const label = `sub${i + 1}@node${node + 1}`;
        const handle = pool.client(cluster.url(node), { label, token: connectionToken({ sub: uniq('reader') }) });
        await connectClient(handle);
        const s = pool.subscription(handle, channel, { minResubscribeDelay: 100, maxResubscribeDelay: 1_000 });
        const first = await subscribeSub(s);
        assert.equal(first.recoverable, true, 'the channel is recoverable');
        subs.push({ label, s });
      }
    }

    // Subscribed like the others, then away over the lossy window.
    const awayLabel = 'away@node1';
    const away = pool.client(cluster.url(0), { label: awayLabel, token: connectionToken({ sub: uniq('away') }) });
    await connectClient(away);
    const awaySub = pool.subscription(away, channel, { minResubscribeDelay: 100, maxResubscribeDelay: 1_000 });
    await subscribeSub(awaySub);
    subs.push({ label: awayLabel, s: awaySub });

    const promoted = redis.servers.find((s) => s !== firstMaster);
    const acked = [];
    const lastAckedBeforeKill = { offset: 0, epoch: '' };
    const failures = new Map();
    const deadline = Date.now() + CASE_TIMEOUT_MS - 40_000;
    let stage = 'steady'; // steady -> window (replica paused) -> killed -> back (away reconnected)
    let attempt = 0;
    let n = 0;
    while (acked.length < COUNT) {
      if (Date.now() > deadline) {
        throw new Error(`only ${acked.length} of ${COUNT} publications acknowledged before the deadline (stage ${stage}); failures ${JSON.stringify([...failures])}`);
      }
      n += 1; // every attempt publishes a new n: a failed attempt may still have landed
      const node = cluster.nodes[attempt++ % 2];
      const result = await apiPublish(node, channel, n);
      if (result.ok) {
        acked.push(n);
        if (stage !== 'killed' && stage !== 'back') Object.assign(lastAckedBeforeKill, { offset: result.offset, epoch: result.epoch });
      } else {
        failures.set(result.why, (failures.get(result.why) || 0) + 1);
        await sleep(50);
      }
      if (stage === 'steady' && acked.length === KILL_AT) {
        stage = 'window';
        away.client.disconnect();
        promoted.child.kill('SIGSTOP');
        const ballast = `ha:${uniq('ballast')}`;
        const pad = 'x'.repeat(BALLAST.bytes);
        for (let i = 0; i < BALLAST.count; i++) {
          const r = await apiPublish(cluster.nodes[i % 2], ballast, i, { pad });
          if (!r.ok) throw new Error(`ballast publication ${i} failed: ${r.why}`);
        }
        note(`n=${n}: ${awayLabel} disconnected, replica :${promoted.port} paused, ${BALLAST.count} x ${BALLAST.bytes} B of ballast acknowledged`);
      } else if (stage === 'window' && acked.length === KILL_AT + LOST_WINDOW) {
        stage = 'killed';
        await firstMaster.kill('SIGKILL');
        promoted.child.kill('SIGCONT');
        await sleep(300); // the replica reads what reached it, then sees the master gone
        const kept = (await promoted.cli(['hget', `${cluster.prefix}.stream.meta.${channel}`, 's'])).trim();
        note(`n=${n}: master :${firstMaster.port} SIGKILLed, replica resumed; it holds offset ${kept} of the ${lastAckedBeforeKill.offset} acknowledged in epoch ${lastAckedBeforeKill.epoch}`);
      } else if (stage === 'killed' && acked.length === AWAY_UNTIL) {
        stage = 'back';
        away.client.connect();
        note(`n=${n}: ${awayLabel} reconnects`);
      }
      if (INTERVAL_MS > 0) await sleep(INTERVAL_MS);
    }
    await redis.waitMaster(promoted);
    note(`${acked.length} acknowledged of ${n} attempts; failures ${JSON.stringify([...failures])}; master now :${(await redis.master()).port}`);
    t.diagnostic(`publish failures: ${JSON.stringify([...failures])}`);

    // Every subscriber ends with the last acknowledged publication.
    const last = acked[acked.length - 1];
    await Promise.all(
      subs.map(({ label, s }) =>
        s.log.waitFor('publication', {
          pred: (ctx) => ctx.data?.n === last,
          timeout: 30_000,
          what: `${label}: the last acknowledged publication n=${last}`,
        }),
      ),
    );
    await sleep(500); // late duplicates would show now

    const awayMissed = checkSubscriber(awaySub.log.entries, acked).toldPairs;
    const totals = { silentLoss: 0, duplicates: 0, reorders: 0, toldPairs: 0, toldEvents: 0 };
    const details = [];
    const toldEvents = [];
    for (const { label, s } of subs) {
      const r = checkSubscriber(s.log.entries, acked);
      for (const k of Object.keys(totals)) totals[k] += r[k];
      details.push(`${label}: delivered ${r.delivered}, told ${r.toldEvents}x${r.problems.length ? `; ${r.problems.slice(0, 10).join('; ')}` : ''}\n  ${describeTimeline(s.log.entries)}`);
      toldEvents.push([label, r.toldEvents]);
    }
    const summary =
      `publications=${acked.length} subscribers=${subs.length} silent_loss=${totals.silentLoss} ` +
      `duplicates=${totals.duplicates} reorders=${totals.reorders} told=${totals.toldPairs} ` +
      `(recovered:false resubscribes ${totals.toldEvents})`;
    console.log(summary);
    t.diagnostic(summary);
    note(summary);
    for (const d of details) note(d);
    assert.equal(totals.silentLoss, 0, 'no acknowledged publication lost silently');
    assert.equal(totals.duplicates, 0, 'no publication delivered twice');
    assert.equal(totals.reorders, 0, 'no publication out of order');
    for (const [label, count] of toldEvents) {
      assert.ok(count >= 1, `${label} was told once at least: the failover starts every stream again in a new epoch`);
    }
    assert.ok(awayMissed > 0, `${awayLabel} missed publications while away and was told: ${awayMissed}`);
    assert.ok(failures.size > 0, 'some publishes failed while there was no master');
    for (const why of failures.keys()) {
      assert.match(why, /^error 100$/, `publishes failed only with error 100 (temporary): ${JSON.stringify([...failures])}`);
    }
  } catch (err) {
    throw appendDiagnostics(
      err,
      [`--- notes ---\n${notes.join('\n')}`, pool.diagnostics({ frames: 10 }), cluster ? cluster.logTails(80) : redis ? redis.logTail() : ''].join('\n'),
    );
  } finally {
    for (const line of notes.slice(0, 3)) t.diagnostic(line);
    await pool.closeAll();
    if (cluster) {
      cluster.saveLogs('sentinel-failover');
      await cluster.stop();
    }
    if (redis) await redis.close();
  }
});
