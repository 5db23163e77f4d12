// Scenario 5 of issue 22, the reconnect storm: clients (herald-bench `hold`, spread over
// several processes, each limited to ~20,000 open files) hold connections to three
// herald nodes on one Redis, subscribed to history channels while publications flow.
// One node is SIGKILLed: its clients reconnect to the other two with centrifuge-js's
// backoff and recover their subscriptions.
//
// Measured: the time until every client of the killed node is back and recovered, the
// peak connect rate, Redis commands per second during the storm, and the backoff the
// clients used. Asserted: nothing lost, duplicated or reordered (the bench checks each
// connection's offsets); only the killed node's clients were disconnected (herald did
// not refuse or drop the healthy nodes' clients); every client came back; Redis
// answered throughout.
//
// 3,000 clients over 2 processes by default; 15,000 over 4 with HERALD_RELIABILITY_FULL=1.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { redisInfo, runBench } from './bench_support.mjs';
import { appendDiagnostics, startNodes } from './cluster_support.mjs';
import { SECRET, sleep } from './harness.mjs';

const FULL = process.env.HERALD_RELIABILITY_FULL === '1';
const CLIENTS = FULL ? 15_000 : 3_000;
const PROCESSES = FULL ? 4 : 2;
const CHANNELS = FULL ? 300 : 60;
const RATE = 30;
const DURATION_S = FULL ? 120 : 30;
const API_KEY = 'storm-api-key';

const config = {
  http_api: { key: API_KEY },
  client: { recovery_max_publication_limit: 1_000 },
  channel: {
    namespaces: [
      {
        name: 'storm',
        history_size: 300,
        history_ttl: '600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
      },
    ],
  },
};

async function nodeConnections(node) {
  const res = await fetch(`${node.apiUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  return Number(/^herald_node_num_clients(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1] ?? NaN);
}

async function liveConnections(cluster) {
  const out = [];
  for (const node of cluster.nodes) out.push(node.exited ? 0 : await nodeConnections(node).catch(() => NaN));
  return out;
}

test(`reconnect storm: ${CLIENTS} clients on 3 nodes, one node SIGKILLed: its clients back and recovered, nothing lost, healthy nodes' clients untouched`, { timeout: (DURATION_S + 180) * 1_000 }, async (t) => {
  let cluster = null;
  let bench = null;
  const notes = [];
  const note = (s) => {
    notes.push(s);
    console.log(`storm: ${s}`);
  };
  try {
    cluster = await startNodes(3, 'standalone', { config, label: 'herald (storm)' });
    const redisPort = cluster.redis.servers[0].port;
    const args = [
      'hold',
      ...cluster.nodes.flatMap((n) => ['--url', n.wsUrl]),
      '--secret', SECRET,
      '--api-key', API_KEY,
      '--subscribers', String(CLIENTS),
      '--channels', String(CHANNELS),
      '--channel', 'storm:c',
      '--rate', String(RATE),
      '--duration', `${DURATION_S}s`,
      '--processes', String(PROCESSES),
    ];
    bench = runBench(args, { label: 'herald-bench hold (storm)' });
    t.diagnostic(bench.command.replace(SECRET, '$SECRET'));
    const summaryPromise = bench.done;
    summaryPromise.catch(() => {});

    // Every client connected and spread over the nodes.
    const deadline = Date.now() + 90_000;
    let per = [];
    for (;;) {
      per = await liveConnections(cluster);
      if (per.reduce((a, b) => a + b, 0) === CLIENTS) break;
      if (Date.now() > deadline) throw new Error(`only ${JSON.stringify(per)} of ${CLIENTS} connected`);
      await sleep(250);
    }
    note(`connected per node before the kill: ${JSON.stringify(per)}`);

    // Redis's command counter every 500 ms, from 3 s before the kill.
    const ops = [];
    let sampling = true;
    const sampler = (async () => {
      let prev = null;
      while (sampling) {
        const at = Date.now();
        const info = await redisInfo(redisPort, 'stats');
        const total = Number(info.total_commands_processed);
        if (prev) ops.push({ at, perSec: ((total - prev.total) * 1_000) / (at - prev.at) });
        prev = { at, total };
        await sleep(500);
      }
    })();

    await sleep(3_000); // publications flowing to everyone
    const killed = 1;
    const onKilled = per[killed];
    const killedAt = Date.now();
    await cluster.kill(killed, 'SIGKILL');
    note(`node ${killed + 1} SIGKILLed holding ${onKilled} connections`);

    // Back: the two live nodes hold every client again.
    const backDeadline = Date.now() + 90_000;
    for (;;) {
      per = await liveConnections(cluster);
      if (per.reduce((a, b) => a + b, 0) === CLIENTS) break;
      if (Date.now() > backDeadline) throw new Error(`after the kill only ${JSON.stringify(per)} of ${CLIENTS} connected again`);
      await sleep(250);
    }
    note(`all ${CLIENTS} connected again ${Date.now() - killedAt} ms after the kill (as the nodes count them): ${JSON.stringify(per)}`);
    await sleep(2_000);
    sampling = false;
    await sampler;

    const summary = await summaryPromise;
    const waves = summary.waves ?? [];
    const biggest = waves.reduce((a, w) => (!a || w.size > a.size ? w : a), null);
    const stormOps = ops.filter((o) => o.at >= killedAt);
    const before = ops.filter((o) => o.at < killedAt);
    const peakOps = Math.max(0, ...stormOps.map((o) => o.perSec));
    note(
      `wave: ${biggest ? `${biggest.size} disconnected, back and recovered in ${biggest.recovery_ms} ms` : 'none seen'}; ` +
        `peak connects/s ${summary.peak_connects_per_sec}; redis commands/s before ${before.map((o) => o.perSec.toFixed(0)).join(',')}, peak during the storm ${peakOps.toFixed(0)}; ` +
        `backoff_ms ${JSON.stringify(summary.backoff_ms)} connect_errors ${JSON.stringify(summary.connect_errors)}`,
    );
    note(
      `bench: connects=${summary.connects} disconnects=${JSON.stringify(summary.disconnects)} publications=${summary.publications_acked} deliveries=${summary.deliveries} ` +
        `recovered_true=${summary.recovered_true} recovered_false=${summary.recovered_false} gaps=${summary.gaps} duplicates=${summary.duplicates} reorders=${summary.reorders}`,
    );
    for (const n of notes) t.diagnostic(n);

    assert.equal(summary.gaps, 0, 'no client missed a publication without being told');
    assert.equal(summary.duplicates, 0, 'no publication delivered twice');
    assert.equal(summary.reorders, 0, 'no publication out of order');
    assert.ok(biggest, 'the kill shows as a disconnect wave');
    assert.equal(biggest.size, onKilled, "the wave is exactly the killed node's clients: the healthy nodes' clients were not dropped");
    assert.equal(summary.disconnects_total, onKilled, `only the killed node's ${onKilled} clients were disconnected: ${JSON.stringify(summary.disconnects)}`);
    assert.equal(summary.behind_at_end, 0, 'every client ended at the last acknowledged publication of its channel');
    assert.equal(summary.unconnected_at_end, 0, 'every client connected at the end');
    assert.equal(summary.recovered_false, 0, 'every resubscribe recovered from history');
    assert.ok(summary.recovered_true >= onKilled, `every client of the killed node recovered: ${summary.recovered_true}`);
    assert.ok(stormOps.length > 0, 'Redis answered during the storm');
  } catch (err) {
    const tail = bench ? `--- bench progress (last 30) ---\n${bench.progress.slice(-30).join('\n')}` : '';
    throw appendDiagnostics(err, [`--- notes ---\n${notes.join('\n')}`, tail, cluster ? cluster.logTails(40) : ''].join('\n'));
  } finally {
    if (bench && bench.child.exitCode === null) bench.child.kill('SIGKILL');
    if (cluster) {
      cluster.saveLogs('storm');
      await cluster.stop();
    }
  }
});
