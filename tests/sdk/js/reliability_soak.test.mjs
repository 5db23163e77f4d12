// Scenario 6 of issue 22, the soak: two herald nodes on one Redis hold 5,000
// connections (herald-bench `hold`, over several processes) subscribed to history
// channels while publications flow steadily through the server API and 5% of the
// clients reconnect every minute (each recovering from its last position). Every 10 s
// the test samples each node's RSS and open files and Redis's memory.
//
// What must hold: no publication lost, duplicated or reordered for any connection (the
// bench checks the offsets each one received, gaps included); the RSS after warm-up is
// flat within noise (the slope is reported, and must stay under a bound); no file
// descriptor leak (once every client left, each node is back at its open-file count from
// before the clients came).
//
// 3 minutes by default; 30 minutes with HERALD_RELIABILITY_FULL=1 (scripts/test --full).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MiB, openFiles, redisInfo, rssBytes, runBench, slope } from './bench_support.mjs';
import { appendDiagnostics, startNodes } from './cluster_support.mjs';
import { SECRET, sleep } from './harness.mjs';

const FULL = process.env.HERALD_RELIABILITY_FULL === '1';
const DURATION_S = FULL ? 30 * 60 : 3 * 60;
const WARMUP_S = FULL ? 5 * 60 : 60;
const SAMPLE_MS = 10_000;
const CONNECTIONS = 5_000;
const PROCESSES = 2;
const CHANNELS = 100;
const RATE = 50; // publications per second, all channels together
const CHURN = 5; // percent of the connections per minute
const API_KEY = 'soak-api-key';
// The RSS may rise after warm-up by at most this much per minute (flat within noise):
// 0.5% of the post-warm-up mean per minute, and never less than 0.25 MiB/min (the
// first runs measured 0.06-0.07 MiB/min on a 40 MiB node).
const RSS_SLOPE_BOUND = (mean) => Math.max(0.005 * mean, MiB / 4);
// Open files may differ from before the clients by this many (listeners, Redis
// connections re-made, the runtime's own).
const FD_SLACK = 10;

const config = {
  http_api: { key: API_KEY },
  client: { recovery_max_publication_limit: 1_000 },
  channel: {
    namespaces: [
      {
        name: 'soak',
        history_size: 100,
        history_ttl: '600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
      },
    ],
  },
};

async function nodeConnections(node) {
  const text = await (await fetch(`${node.apiUrl}/metrics`)).text();
  return Number(/^herald_node_num_clients(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1] ?? NaN);
}

async function waitConnections(cluster, want, timeout) {
  const deadline = Date.now() + timeout;
  let last = [];
  for (;;) {
    last = await Promise.all(cluster.nodes.map(nodeConnections));
    if (last.every((c) => c === want)) return;
    if (Date.now() > deadline) throw new Error(`connections per node ${JSON.stringify(last)}, expected ${want} each`);
    await sleep(250);
  }
}

const fmtMiB = (b) => `${(b / MiB).toFixed(1)} MiB`;

test(`soak: ${CONNECTIONS} connections for ${DURATION_S / 60} min, ${RATE} publications/s, ${CHURN}%/min reconnecting: nothing lost, RSS flat, no fd leak`, { timeout: (DURATION_S + 240) * 1_000 }, async (t) => {
  let cluster = null;
  let bench = null;
  const samples = [];
  try {
    cluster = await startNodes(2, 'standalone', { config, label: 'herald (soak)' });
    const redisPort = cluster.redis.servers[0].port;
    const pids = cluster.nodes.map((n) => n.child.pid);
    await sleep(500);
    const fdsBefore = pids.map(openFiles);

    const args = [
      'hold',
      ...cluster.nodes.flatMap((n) => ['--url', n.wsUrl]),
      '--secret', SECRET,
      '--api-key', API_KEY,
      '--subscribers', String(CONNECTIONS),
      '--channels', String(CHANNELS),
      '--channel', 'soak:c',
      '--rate', String(RATE),
      '--churn', String(CHURN),
      '--duration', `${DURATION_S}s`,
      '--processes', String(PROCESSES),
    ];
    bench = runBench(args, { label: 'herald-bench hold (soak)' });
    t.diagnostic(bench.command.replace(SECRET, '$SECRET'));
    const start = Date.now();
    let benchDone = false;
    const summaryPromise = bench.done.finally(() => {
      benchDone = true;
    });
    summaryPromise.catch(() => {});
    while (!benchDone && Date.now() - start < (DURATION_S + 60) * 1_000) {
      const at = (Date.now() - start) / 1_000;
      const info = await redisInfo(redisPort, 'memory');
      samples.push({
        at,
        rss: pids.map(rssBytes),
        fds: pids.map(openFiles),
        redis: Number(info.used_memory),
      });
      const s = samples[samples.length - 1];
      console.log(`soak t=${at.toFixed(0)}s rss=${s.rss.map(fmtMiB).join(',')} fds=${s.fds.join(',')} redis=${fmtMiB(s.redis)}`);
      const next = start + samples.length * SAMPLE_MS;
      while (!benchDone && Date.now() < next) await sleep(200);
    }
    const summary = await summaryPromise;

    // Every client gone: the nodes are back at their open files from before.
    await waitConnections(cluster, 0, 30_000);
    await sleep(1_000);
    const fdsAfter = pids.map(openFiles);

    const steady = samples.filter((s) => s.at >= WARMUP_S && s.at <= DURATION_S);
    const lines = [];
    const slopes = pids.map((_, i) => {
      const xs = steady.map((s) => s.at / 60);
      const ys = steady.map((s) => s.rss[i]);
      const mean = ys.reduce((a, b) => a + b, 0) / Math.max(ys.length, 1);
      return { perMin: slope(xs, ys), mean };
    });
    const redisSlope = slope(steady.map((s) => s.at / 60), steady.map((s) => s.redis));
    slopes.forEach((s, i) => lines.push(`node ${i + 1}: RSS after warm-up mean ${fmtMiB(s.mean)}, slope ${(s.perMin / MiB).toFixed(3)} MiB/min; open files before ${fdsBefore[i]}, peak ${Math.max(...samples.map((x) => x.fds[i]))}, after ${fdsAfter[i]}`));
    lines.push(`redis used_memory slope ${(redisSlope / MiB).toFixed(3)} MiB/min, last ${fmtMiB(samples[samples.length - 1]?.redis ?? 0)}`);
    const b = summary;
    lines.push(
      `bench: connects=${b.connects} disconnects=${JSON.stringify(b.disconnects)} publications=${b.publications_acked} deliveries=${b.deliveries} ` +
        `recovered_true=${b.recovered_true} recovered_false=${b.recovered_false} gaps=${b.gaps} duplicates=${b.duplicates} reorders=${b.reorders}`,
    );
    for (const l of lines) {
      console.log(`soak: ${l}`);
      t.diagnostic(l);
    }

    assert.ok(steady.length >= 5, `enough samples after warm-up: ${steady.length}`);
    assert.equal(b.gaps, 0, 'no connection missed a publication without being told');
    assert.equal(b.duplicates, 0, 'no publication delivered twice');
    assert.equal(b.reorders, 0, 'no publication out of order');
    assert.ok(b.publications_acked > RATE * DURATION_S * 0.5, `publications went on: ${b.publications_acked}`);
    assert.equal(b.behind_at_end, 0, 'every connection ended at the last acknowledged publication of its channel');
    const churned = Math.floor((CONNECTIONS * CHURN * DURATION_S) / 100 / 60);
    assert.ok(b.connects >= CONNECTIONS + churned * 0.8, `clients reconnected (churn): ${b.connects} connects for ${CONNECTIONS} connections and ${churned} planned reconnects`);
    slopes.forEach((s, i) => {
      assert.ok(s.perMin < RSS_SLOPE_BOUND(s.mean), `node ${i + 1}: RSS flat after warm-up: ${(s.perMin / MiB).toFixed(3)} MiB/min, bound ${(RSS_SLOPE_BOUND(s.mean) / MiB).toFixed(3)}`);
      assert.ok(fdsAfter[i] <= fdsBefore[i] + FD_SLACK, `node ${i + 1}: no fd leak: ${fdsBefore[i]} open files before the clients, ${fdsAfter[i]} after they left`);
    });
  } catch (err) {
    const tail = bench ? `--- bench progress (last 20) ---\n${bench.progress.slice(-20).join('\n')}` : '';
    throw appendDiagnostics(err, [tail, `--- samples ---\n${JSON.stringify(samples)}`, cluster ? cluster.logTails(40) : ''].join('\n'));
  } finally {
    if (bench && bench.child.exitCode === null) bench.child.kill('SIGKILL');
    if (cluster) {
      cluster.saveLogs('soak');
      await cluster.stop();
    }
  }
});
