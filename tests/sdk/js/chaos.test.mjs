// Failures with the real centrifuge-js SDK: Redis stopped and restarted (with its data,
// and empty), a herald node killed with SIGKILL. Subscribers of recoverable channels must
// end with every offset exactly once, or be told (recovered: false) that history is gone.
//
// HERALD_CHAOS_MODES=standalone (the default; scripts/test --full runs
// standalone,sharded,cluster) picks the Redis modes. Each case starts its own Redis and
// herald nodes.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  appendDiagnostics,
  ClientPool,
  connectClient,
  modesFromEnv,
  startNodes,
  subscribeSub,
  within,
} from './cluster_support.mjs';
import { connectionToken, sleep, uniq } from './harness.mjs';

const modes = modesFromEnv('HERALD_CHAOS_MODES', 'standalone');

const CASE_TIMEOUT_MS = 120_000;
const COUNT = 1_000;
const INTERVAL_MS = 5;
const CHAOS_AT = 300; // the failure starts once this many publications went through
const OUTAGE_MS = 5_000;

/**
 * What node `node` says of its engine: `/ready` (status and reason) and the
 * `herald_engine_healthy` gauge of `/metrics`.
 */
async function engineHealth(node) {
  const ready = await within(fetch(`${node.apiUrl}/ready`), 2_000, 'GET /ready');
  const reason = ready.status === 200 ? '' : ((await ready.json().catch(() => ({}))).reason ?? '?');
  const metrics = await within(fetch(`${node.apiUrl}/metrics`), 2_000, 'GET /metrics');
  const gauge = /^herald_engine_healthy (\S+)$/m.exec(await metrics.text())?.[1];
  return { ready: ready.status, reason, gauge: gauge === undefined ? null : Number(gauge) };
}

/** Polls `engineHealth(node)` until it equals `want`; throws with the last answer after `timeout`. */
async function waitEngineHealth(node, want, { timeout = 10_000, what }) {
  const deadline = Date.now() + timeout;
  let last = null;
  for (;;) {
    last = await engineHealth(node).catch((err) => ({ error: err.message }));
    if (JSON.stringify(last) === JSON.stringify(want)) return;
    if (Date.now() > deadline) {
      throw new Error(`${what}: expected ${JSON.stringify(want)} within ${timeout} ms, last ${JSON.stringify(last)}`);
    }
    await sleep(100);
  }
}

// Recovery may have to bring back more than the default 300 publications: the
// SDK's resubscribe after an outage waits for its backoff while the stream goes on.
const config = {
  client: { recovery_max_publication_limit: 5_000 },
  channel: {
    namespaces: [
      {
        name: 'chaos',
        history_size: 2_000,
        history_ttl: '3600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_history_for_client: true,
      },
    ],
  },
};

/**
 * A case with its own Redis and `nodes` herald nodes; clients closed, everything
 * stopped afterwards; on failure the clients' events and frames, the nodes' log tails
 * and the Redis logs are appended to the error.
 */
function chaosCase(mode, name, fn, { nodes = 2 } = {}) {
  test(name, { timeout: CASE_TIMEOUT_MS }, async (t) => {
    const pool = new ClientPool();
    let cluster = null;
    const notes = [];
    try {
      cluster = await startNodes(nodes, mode, { config, label: `herald (chaos ${mode})` });
      await fn({ t, cluster, pool, note: (s) => notes.push(s) });
    } catch (err) {
      const diag = [
        notes.length ? `--- notes ---\n${notes.join('\n')}` : '',
        pool.diagnostics(),
        cluster ? cluster.logTails(120) : '',
      ].join('\n');
      throw appendDiagnostics(err, diag);
    } finally {
      for (const line of notes) t.diagnostic(line);
      await pool.closeAll();
      if (cluster) cluster.saveLogs(`chaos-${mode}-${name.slice(0, 3)}`);
      if (cluster) await cluster.stop();
    }
  });
}

/**
 * Publishes {n: 1..count} one after the other, `intervalMs` apart, retrying a failed
 * publish until it succeeds. `onPublished(n)` runs after each success. Returns the
 * errors seen, by code.
 */
async function publishSteadily(handle, channel, count, { intervalMs = INTERVAL_MS, onPublished, deadline }) {
  const errors = new Map();
  const samples = [];
  for (let n = 1; n <= count; n++) {
    for (;;) {
      try {
        await handle.client.publish(channel, { n });
        break;
      } catch (err) {
        const code = err?.code ?? 'exception';
        errors.set(code, (errors.get(code) || 0) + 1);
        if (samples.length < 10) samples.push(`n=${n}: ${JSON.stringify(err?.message ?? String(err))} code=${code}`);
        if (Date.now() > deadline) {
          throw new Error(`publish n=${n} still failing at the deadline; errors ${JSON.stringify([...errors])}: ${samples.join('; ')}`);
        }
        await sleep(50);
      }
    }
    onPublished?.(n);
    if (intervalMs > 0) await sleep(intervalMs);
  }
  return { errors, samples };
}

/** Offsets check: every offset 1..top exactly once (duplicates, gaps and extras named). */
function checkOffsets(pubs, top) {
  const counts = new Map();
  for (const p of pubs) counts.set(p.offset, (counts.get(p.offset) || 0) + 1);
  const duplicates = [...counts].filter(([, c]) => c > 1).map(([o, c]) => `${o}x${c}`);
  const missing = [];
  for (let o = 1; o <= top; o++) if (!counts.has(o)) missing.push(o);
  const extra = [...counts.keys()].filter((o) => !(Number.isInteger(o) && o >= 1 && o <= top));
  return { duplicates, missing, extra };
}

const ranges = (list) => {
  const out = [];
  for (const x of list) {
    const last = out[out.length - 1];
    if (last && x === last[1] + 1) last[1] = x;
    else out.push([x, x]);
  }
  return out.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(',');
};

/** Waits until the subscriber holds every offset 1..top (or `ms` pass). */
async function waitForOffsets(log, top, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const have = new Set(log.all('publication').map((p) => p.offset));
    let all = true;
    for (let o = 1; o <= top && all; o++) all = have.has(o);
    if (all) return true;
    await sleep(100);
  }
  return false;
}

/** The stream top and epoch as the publisher's node sees them (history with limit 0). */
async function streamTop(handle, channel) {
  for (let i = 0; i < 50; i++) {
    try {
      return await within(handle.client.history(channel, { limit: 0 }), 5_000, 'history (stream top)');
    } catch (err) {
      if (i === 49) throw err;
      await sleep(200);
    }
  }
  throw new Error('unreachable');
}

/** The common tail of (a) and (b): wait for the subscriber and check every offset once. */
async function assertExactlyOnce({ cluster, s, writer, channel, firstEpoch, note }) {
  const top = await streamTop(writer, channel);
  note(`stream top after publishing: offset ${top.offset} epoch ${top.epoch}`);
  assert.equal(top.epoch, firstEpoch, 'the stream kept its epoch (no data was lost)');
  assert.ok(top.offset >= COUNT, `the stream holds at least the ${COUNT} publications, top ${top.offset}`);
  const complete = await waitForOffsets(s.log, top.offset, 30_000);
  if (!complete) {
    const name = cluster.pubsubChannel(channel);
    note(`subscriber incomplete: Redis subscribers of ${name} per server: ${JSON.stringify(await cluster.redis.subscribers(name))} (one per live node with a local subscriber expected)`);
  }
  await sleep(500); // late duplicates would show up now
  const pubs = s.log.all('publication');
  const { duplicates, missing, extra } = checkOffsets(pubs, top.offset);
  const resubs = s.log.all('subscribed').slice(1);
  const resubText = resubs
    .map((r) => `wasRecovering=${r.wasRecovering} recovered=${r.recovered} epoch=${r.streamPosition?.epoch} offset=${r.streamPosition?.offset}`)
    .join('; ');
  note(`resubscribes: ${resubs.length} (${resubText})`);
  note(`publications received ${pubs.length}; complete=${complete}`);
  assert.ok(
    duplicates.length === 0 && missing.length === 0 && extra.length === 0,
    `subscriber must hold every offset 1..${top.offset} exactly once: ` +
      `missing [${ranges(missing)}], duplicated [${duplicates.join(',')}], outside the range [${extra.join(',')}]; ` +
      `resubscribes: ${resubText}`,
  );
  // Offsets and data agree: data n is non-decreasing along offsets and covers 1..COUNT
  // (a publish retried after an ambiguous failure may appear twice, with two offsets).
  const byOffset = [...pubs].sort((a, b) => a.offset - b.offset);
  const ns = byOffset.map((p) => p.data?.n);
  for (let i = 1; i < ns.length; i++) {
    assert.ok(ns[i] >= ns[i - 1], `data follows publish order: offset ${byOffset[i].offset} carries n=${ns[i]} after n=${ns[i - 1]}`);
  }
  const seen = new Set(ns);
  const lost = [];
  for (let n = 1; n <= COUNT; n++) if (!seen.has(n)) lost.push(n);
  assert.deepEqual(lost, [], 'every published n reached the subscriber');
  for (const r of resubs) {
    assert.ok(
      !r.wasRecovering || r.recovered === true,
      `every resubscribe recovered (history kept): ${resubText}`,
    );
  }
  return { top, resubs };
}

for (const mode of modes) {
  describe(`chaos, redis ${mode}`, () => {
    chaosCase(mode, `(a) Redis stopped for ${OUTAGE_MS / 1000} s mid-stream and restarted with its data: every offset exactly once`, async ({ t, cluster, pool, note }) => {
      const deadline = Date.now() + CASE_TIMEOUT_MS - 20_000;
      const channel = `chaos:${uniq('outage')}`;
      const reader = pool.client(cluster.url(0), { label: 'reader@node1', token: connectionToken({ sub: uniq('reader') }) });
      const writer = pool.client(cluster.url(1), { label: 'writer@node2', token: connectionToken({ sub: uniq('writer') }) });
      await connectClient(reader);
      await connectClient(writer);
      const s = pool.subscription(reader, channel);
      const first = await subscribeSub(s);
      assert.equal(first.recoverable, true, 'chaos: channels are recoverable');
      const firstEpoch = first.streamPosition?.epoch;

      let outage = null;
      const started = Date.now();
      const { errors, samples } = await publishSteadily(writer, channel, COUNT, {
        deadline,
        onPublished: (n) => {
          if (n !== CHAOS_AT) return;
          outage = (async () => {
            note(`n=${n}: stopping every Redis server (${cluster.redis.servers.map((x) => x.port)}) with SHUTDOWN SAVE`);
            await cluster.redis.stopAll();
            const down = Date.now();
            // Operators see the outage on every node: /ready answers 503 and the gauge
            // the Redis alert uses drops to 0 (a single idle node shows it too).
            try {
              await waitEngineHealth(cluster.nodes[0], { ready: 503, reason: 'engine unreachable', gauge: 0 }, {
                what: 'node 1 while Redis is down',
              });
              note(`node 1 unready with herald_engine_healthy 0 after ${Date.now() - down} ms`);
            } finally {
              await sleep(Math.max(0, OUTAGE_MS - (Date.now() - down)));
              await cluster.redis.startAll();
              note(`Redis back after ${Date.now() - down} ms`);
            }
            await waitEngineHealth(cluster.nodes[0], { ready: 200, reason: '', gauge: 1 }, {
              what: 'node 1 once Redis is back',
            });
          })();
          outage.catch(() => {});
        },
      });
      await outage;
      note(`published ${COUNT} in ${Date.now() - started} ms; publish errors by code ${JSON.stringify([...errors])}: ${samples.join('; ')}`);
      t.diagnostic(`publish errors by code ${JSON.stringify([...errors])}`);

      const { resubs } = await assertExactlyOnce({ cluster, s, writer, channel, firstEpoch, note });
      assert.ok(errors.size > 0, 'some publishes failed while Redis was down');
      assert.deepEqual(
        [...errors.keys()],
        [100],
        `publishes failed only with error 100 (temporary) while Redis was down: ${samples.join('; ')}`,
      );
      const told = s.log.all('subscribing').filter((c) => c.code === 2500);
      assert.ok(told.length > 0, `the subscriber got an unsubscribe push with code 2500 (insufficient state): ${JSON.stringify(s.log.all('subscribing'))}`);
      assert.ok(
        resubs.some((r) => r.wasRecovering && r.recovered),
        'the subscriber was told to resubscribe (2500) and recovered once Redis was back',
      );
      assert.equal(reader.log.all('disconnected').length, 0, 'the subscriber stayed connected');
      assert.equal(writer.log.all('disconnected').length, 0, 'the publisher stayed connected');
    });

    chaosCase(mode, '(b) the subscriber\'s node is SIGKILLed mid-stream: reconnect through the proxy to node 2, every offset exactly once', async ({ t, cluster, pool, note }) => {
      const deadline = Date.now() + CASE_TIMEOUT_MS - 20_000;
      const channel = `chaos:${uniq('nodekill')}`;
      const proxy = cluster.proxy;
      proxy.target(0);
      const reader = pool.client(proxy.url, { label: 'reader@proxy', token: connectionToken({ sub: uniq('reader') }) });
      const writer = pool.client(cluster.url(1), { label: 'writer@node2', token: connectionToken({ sub: uniq('writer') }) });
      await connectClient(reader);
      await connectClient(writer);
      const s = pool.subscription(reader, channel);
      const first = await subscribeSub(s);
      assert.equal(first.recoverable, true, 'chaos: channels are recoverable');
      const firstEpoch = first.streamPosition?.epoch;

      let killed = null;
      const { errors, samples } = await publishSteadily(writer, channel, COUNT, {
        deadline,
        onPublished: (n) => {
          if (n !== CHAOS_AT) return;
          killed = (async () => {
            proxy.target(1);
            note(`n=${n}: proxy now points at node 2; SIGKILL node 1`);
            await cluster.kill(0, 'SIGKILL');
            note(`node 1 exited: ${JSON.stringify(cluster.nodes[0].exited)}`);
          })();
          killed.catch(() => {});
        },
      });
      await killed;
      note(`publish errors by code ${JSON.stringify([...errors])}: ${samples.join('; ')}`);
      t.diagnostic(`publish errors by code ${JSON.stringify([...errors])}`);

      const { resubs } = await assertExactlyOnce({ cluster, s, writer, channel, firstEpoch, note });
      assert.ok(reader.log.all('connecting').length >= 2, 'the subscriber lost its connection and reconnected');
      assert.ok(
        resubs.some((r) => r.wasRecovering && r.recovered),
        'the subscriber resubscribed on node 2 with recovery',
      );
      assert.match(proxy.describe(), /per target \[1,[1-9]/, 'the reconnection went through the proxy to node 2');
    });

    chaosCase(mode, '(c) Redis restarted empty: recovered=false with a new epoch, then new offsets from 1 arrive', async ({ cluster, pool, note }) => {
      const deadline = Date.now() + CASE_TIMEOUT_MS - 20_000;
      const channel = `chaos:${uniq('wiped')}`;
      const reader = pool.client(cluster.url(0), { label: 'reader@node1', token: connectionToken({ sub: uniq('reader') }) });
      const writer = pool.client(cluster.url(1), { label: 'writer@node2', token: connectionToken({ sub: uniq('writer') }) });
      await connectClient(reader);
      await connectClient(writer);
      const s = pool.subscription(reader, channel);
      const first = await subscribeSub(s);
      assert.equal(first.recoverable, true, 'chaos: channels are recoverable');
      const firstEpoch = first.streamPosition?.epoch;

      await publishSteadily(writer, channel, 20, { deadline, intervalMs: 0 });
      await waitForOffsets(s.log, 20, 10_000);
      assert.deepEqual(
        s.log.all('publication').map((p) => p.offset),
        Array.from({ length: 20 }, (_, i) => i + 1),
        'offsets 1..20 before the restart',
      );

      const mark = s.log.mark();
      note(`stopping every Redis server with SHUTDOWN NOSAVE and deleting dump.rdb`);
      await cluster.redis.restartAll({ empty: true, downMs: 1_000 });
      note('Redis back, empty');

      let resub;
      try {
        resub = await s.log.waitFor('subscribed', {
          since: mark,
          timeout: 30_000,
          what: 'resubscribe after Redis came back empty (unsubscribe 2500 then subscribe with recover)',
        });
      } catch (err) {
        const name = cluster.pubsubChannel(channel);
        note(`no resubscribe: Redis subscribers of ${name} per server: ${JSON.stringify(await cluster.redis.subscribers(name))}`);
        throw err;
      }
      note(`resubscribed: ${JSON.stringify(resub)}`);
      assert.ok(
        s.log.all('subscribing', mark).some((c) => c.code === 2500),
        `the resubscribe followed an unsubscribe push with code 2500: ${JSON.stringify(s.log.all('subscribing', mark))}`,
      );
      assert.equal(resub.wasRecovering, true, 'the SDK resubscribed with recover: true');
      assert.equal(resub.recovered, false, 'recovery is impossible: recovered must be false');
      assert.ok(resub.streamPosition?.epoch, 'the resubscribe reply carries the stream position');
      assert.notEqual(resub.streamPosition.epoch, firstEpoch, 'a new epoch after the data loss');
      assert.deepEqual(
        s.log.all('publication', mark),
        [],
        'no publication between the restart and the resubscribe',
      );

      const since = s.log.mark();
      await publishSteadily(writer, channel, 20, { deadline, intervalMs: 0 });
      const top = await streamTop(writer, channel);
      assert.equal(top.epoch, resub.streamPosition.epoch, 'publications go to the epoch the subscriber was given');
      await s.log.waitFor('publication', {
        since,
        pred: () => s.log.all('publication', since).length >= 20,
        timeout: 10_000,
        what: '20 publications after the empty restart',
      });
      await sleep(300);
      const after = s.log.all('publication', since);
      const base = resub.streamPosition.offset;
      assert.deepEqual(
        after.map((p) => p.offset),
        Array.from({ length: 20 }, (_, i) => base + i + 1),
        `offsets continue from the position given at resubscribe (${base}) without a gap`,
      );
      assert.equal(base, 0, 'the new stream starts empty: the first new offset is 1');
      assert.deepEqual(
        after.map((p) => p.data),
        Array.from({ length: 20 }, (_, i) => ({ n: i + 1 })),
        'the new publications, in order, once',
      );
      assert.equal(reader.log.all('disconnected').length, 0, 'the subscriber stayed connected');
    });
  });
}
