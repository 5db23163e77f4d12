// Issue 22, scenario 1: a herald node cut from Redis while its clients stay connected.
//
// Three herald nodes and one Redis, each in its own network namespace on a private
// bridge (netns_support.mjs; 10.222.0.0/24 exists only inside those namespaces). The
// real centrifuge-js clients stay on the host: each node's WebSocket and internal API
// are reached through a relay in its namespace and a loopback port on the host, and a
// loopback balancer spreads three more clients over the nodes. Publications go through
// the server API of the nodes that are not cut, at a steady rate, recorded in a History
// (checker.mjs). One node's bridge port is then set down for CUT_MS (its packets
// vanish: no RST, no ICMP) and set up again.
//
// Expected: the cut node answers /ready 503 "engine unreachable" during the cut and 200
// after; publishes sent to it fail; the other nodes stay ready and keep publishing; every
// subscriber, on all three nodes, ends with every acknowledged publication once and in
// order, or was told (recovered: false / unsubscribed): silent_loss=0 duplicates=0
// reorders=0. Measured: the time from the heal until the cut node's subscribers hold
// what was acknowledged up to the heal.
//
// Default: node 1 cut for 10 s. HERALD_RELIABILITY_FULL=1: each node in turn, 30 s each.
// Needs root and iproute2 (`apt-get install -y iproute2`); the test fails saying so otherwise.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { ClientPool, connectClient, subscribeSub, apiPublish as apiPublishWithKey, withDiagnostics } from './cluster_support.mjs';
import { checkAll, History, isTold, waitCaughtUp } from './checker.mjs';
import { startFaultProxy } from './fault_proxy.mjs';
import { connectionToken, heraldBin, sleep, startHerald, testConfig, uniq, within } from './harness.mjs';
import { createLab, requireNetns, unixBalancer } from './netns_support.mjs';

const FULL = process.env.HERALD_RELIABILITY_FULL === '1';
const CUT_MS = FULL ? 30_000 : 10_000;
const CUTS = FULL ? [0, 1, 2] : [0]; // the nodes cut, one after the other
const WARM_MS = 2_000; // steady publishing before each cut
const SETTLE_MS = 3_000; // steady publishing after each heal
const INTERVAL_MS = 20;
const CATCH_UP_MS = 10_000; // observed about 1 s; generous for a busy machine
const SUBS_PER_NODE = 2;
const API_KEY = 'partition-api-key';
const REDIS_PORT = 6379;
const CASE_TIMEOUT_MS = FULL ? 420_000 : 120_000;

const config = {
  http_api: { key: API_KEY },
  client: { recovery_max_publication_limit: 10_000 },
  channel: {
    namespaces: [
      {
        name: 'part',
        history_size: 10_000,
        history_ttl: '3600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
      },
    ],
  },
};

/** One server API publish (cluster_support's, with this test's key). */
const apiPublish = (node, channel, data) => apiPublishWithKey(node, API_KEY, channel, data, { timeout: 15_000 });

/** `GET /ready`: { status, reason } (reason '' when ready), or { status: 0, reason: error }. */
async function readiness(node) {
  try {
    const res = await within(fetch(`${node.apiUrl}/ready`), 3_000, 'GET /ready');
    const body = await res.text();
    let reason = '';
    if (res.status !== 200) {
      try {
        reason = JSON.parse(body).reason ?? body;
      } catch {
        reason = body;
      }
    }
    return { status: res.status, reason };
  } catch (err) {
    return { status: 0, reason: err.message.split('\n')[0] };
  }
}

/** Starts redis-server inside the lab's `redis` namespace; resolves once every node host reaches it. */
async function startLabRedis(lab, nodeHosts) {
  const address = lab.host('redis').address;
  const child = lab.spawn(
    'redis',
    'redis-server',
    ['--port', String(REDIS_PORT), '--bind', address, '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--dir', lab.dir, '--logfile', ''],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (c) => (output = (output + c).slice(-50_000)));
  child.stderr.setEncoding('utf8').on('data', (c) => (output = (output + c).slice(-50_000)));
  let spawnError = null;
  child.on('error', (err) => (spawnError = err));
  const redis = { address, url: `redis://${address}:${REDIS_PORT}`, child, logTail: (n = 20) => `--- redis (last ${n} lines) ---\n${output.trimEnd().split('\n').slice(-n).join('\n')}` };
  const deadline = Date.now() + 20_000;
  for (const host of nodeHosts) {
    for (;;) {
      if (spawnError) {
        throw new Error(spawnError.code === 'ENOENT' ? 'redis-server not found: install it with `apt-get install -y redis-server`' : spawnError.message);
      }
      if (child.exitCode !== null) throw new Error(`redis-server exited while starting\n${redis.logTail()}`);
      const r = await lab.run(host, 'redis-cli', ['-h', address, '-p', String(REDIS_PORT), 'ping'], { timeout: 3_000 });
      if (r.status === 0 && r.stdout.trim() === 'PONG') break;
      if (Date.now() > deadline) throw new Error(`Redis at ${address} not reachable from ${host}: ${r.stdout}${r.stderr}\n${redis.logTail()}`);
      await sleep(100);
    }
  }
  return redis;
}

/**
 * Starts herald in host `name`'s namespace (the harness runs HERALD_BIN; here a wrapper
 * that enters the namespace), then its relay and two loopback ports on the host: the
 * WebSocket and the internal API.
 */
async function startLabNode(lab, name, fullConfig, label) {
  const real = heraldBin();
  const saved = process.env.HERALD_BIN;
  process.env.HERALD_BIN = lab.wrapper(name, real);
  let started;
  try {
    started = startHerald({ config: fullConfig, label }); // reads HERALD_BIN synchronously
  } finally {
    if (saved === undefined) delete process.env.HERALD_BIN;
    else process.env.HERALD_BIN = saved;
  }
  const server = await started;
  const wsInner = new URL(server.wsUrl);
  const apiInner = new URL(server.apiUrl);
  const socks = await lab.relay(name, [
    { id: 'ws', port: Number(wsInner.port) },
    { id: 'api', port: Number(apiInner.port) },
  ]);
  const wsPort = await startFaultProxy({ path: socks.ws }, { label: `${name} ws` });
  const apiPort = await startFaultProxy({ path: socks.api }, { label: `${name} api` });
  return {
    name,
    server,
    socks,
    wsUrl: `ws://127.0.0.1:${wsPort.port}${wsInner.pathname}`,
    apiUrl: `http://127.0.0.1:${apiPort.port}`,
    inner: `${server.wsUrl} ${server.apiUrl}`,
    async stop() {
      await wsPort.close().catch(() => {});
      await apiPort.close().catch(() => {});
      await server.stop();
    },
  };
}


test(`partition node <-> Redis: ${CUTS.map((i) => `node ${i + 1}`).join(', ')} cut for ${CUT_MS / 1000} s while the others publish; silent_loss=0, the cut node unready, its subscribers recover or are told`, { timeout: CASE_TIMEOUT_MS }, async (t) => {
  requireNetns(); // fails saying what is missing (root, iproute2)
  const pool = new ClientPool();
  const notes = [];
  const note = (s) => {
    notes.push(`[${new Date().toISOString().slice(11, 23)}] ${s}`);
  };
  let lab = null;
  let redis = null;
  let balancer = null;
  const nodes = [];
  const publisher = { stop: false, done: null, inflight: null };
  try {
    lab = await createLab(['redis', 'n1', 'n2', 'n3']);
    note(`lab ${lab.base}: bridge ${lab.bridgeNs}; leftovers of killed runs removed: ${lab.leftovers.join(' ') || 'none'}`);
    redis = await startLabRedis(lab, ['n1', 'n2', 'n3']);
    const prefix = uniq('herald');
    const full = testConfig({
      ...config,
      engine: {
        type: 'redis',
        redis: { address: [redis.url], prefix, heartbeat_interval: '300ms', node_ttl: '2s', command_timeout: '1s', connect_timeout: '1s' },
      },
    });
    for (let i = 0; i < 3; i++) nodes.push(await startLabNode(lab, `n${i + 1}`, full, `herald (partition) node ${i + 1}`));
    balancer = await unixBalancer(nodes.map((n) => n.socks.ws));
    for (const [i, n] of nodes.entries()) note(`node ${i + 1} ${lab.host(n.name).address}: inside ${n.inner}; on the host ${n.wsUrl} ${n.apiUrl}`);

    const channel = `part:${uniq('feed')}`;
    const probeChannel = `part:${uniq('probe')}`;
    const history = new History();
    const subs = [];
    const subscriber = async (label, url, ch) => {
      const handle = pool.client(url, { label, token: connectionToken({ sub: uniq('reader') }) });
      await connectClient(handle);
      const s = pool.subscription(handle, ch, { minResubscribeDelay: 100, maxResubscribeDelay: 1_000 });
      const first = await subscribeSub(s);
      assert.equal(first.recoverable, true, `${label}: the channel is recoverable`);
      return { label, channel: ch, log: s.log, handle };
    };
    for (let i = 0; i < 3; i++) {
      for (let k = 0; k < SUBS_PER_NODE; k++) subs.push({ ...(await subscriber(`sub${k + 1}@node${i + 1}`, nodes[i].wsUrl, channel)), node: i });
    }
    const lbUrl = `ws://127.0.0.1:${balancer.port}/connection/websocket`;
    for (let k = 0; k < 3; k++) subs.push({ ...(await subscriber(`lb${k + 1}@balancer`, lbUrl, channel)), node: k }); // round robin: one per node
    // A failed publish to the cut node is not owed to anyone, but it could land late;
    // this subscriber shows whether it does.
    const probeWatch = await subscriber('probe-watch@node2', nodes[1].wsUrl, probeChannel);

    // The steady publisher: one publish at a time, round robin over `targets`.
    let targets = [0, 1, 2];
    const failures = new Map();
    let attempt = 0;
    const deadline = Date.now() + CASE_TIMEOUT_MS - 40_000;
    publisher.done = (async () => {
      while (!publisher.stop) {
        if (Date.now() > deadline) throw new Error(`publisher still running at the deadline; ${history.total} acknowledged`);
        const i = targets[attempt++ % targets.length];
        const n = history.next(channel);
        const data = { n, t: Date.now() };
        publisher.inflight = apiPublish(nodes[i], channel, data);
        const r = await publisher.inflight;
        if (r.ok) history.ack(channel, n, { offset: r.offset, epoch: r.epoch, data });
        else {
          const key = `node${i + 1}: ${r.why}`;
          failures.set(key, (failures.get(key) || 0) + 1);
          await sleep(50);
        }
        await sleep(INTERVAL_MS);
      }
    })();
    publisher.done.catch(() => {});

    const figures = [];
    for (const cutIndex of CUTS) {
      const node = nodes[cutIndex];
      const host = `n${cutIndex + 1}`;
      await sleep(WARM_MS);
      // Stop sending to the node first: a publish in flight when the packets start to
      // vanish could still reach Redis after the heal, behind later ones.
      targets = [0, 1, 2].filter((i) => i !== cutIndex);
      await publisher.inflight;
      const before = history.total;
      lab.cut(host);
      const cutAt = Date.now();
      note(`node ${cutIndex + 1} cut from the bridge (${before} acknowledged so far)`);

      // During the cut: /ready of every node every 200 ms, and a probe publish to the
      // cut node (on its own channel) about once a second.
      const ready = [[], [], []];
      const probes = [];
      const probeHistory = new History();
      const watch = (async () => {
        while (Date.now() - cutAt < CUT_MS) {
          const at = Date.now();
          const states = await Promise.all(nodes.map((n) => readiness(n)));
          states.forEach((s, i) => ready[i].push({ ms: at - cutAt, ...s }));
          await sleep(200);
        }
      })();
      const probing = (async () => {
        while (Date.now() - cutAt < CUT_MS - 2_000) {
          const n = probeHistory.next(probeChannel);
          const started = Date.now();
          const r = await apiPublish(node, probeChannel, { n, probe: true });
          probes.push({ n, ms: started - cutAt, took: Date.now() - started, ...r });
          await sleep(1_000);
        }
      })();
      await Promise.all([watch, probing]);
      await sleep(Math.max(0, CUT_MS - (Date.now() - cutAt)));
      const nHeal = history.last(channel);
      lab.heal(host);
      const healAt = Date.now();
      note(`node ${cutIndex + 1} healed after ${healAt - cutAt} ms; last acknowledged n=${nHeal}`);

      // Ready again?
      let readyAgainMs = null;
      while (Date.now() - healAt < 30_000) {
        const r = await readiness(node);
        if (r.status === 200) {
          readyAgainMs = Date.now() - healAt;
          break;
        }
        await sleep(100);
      }
      if (readyAgainMs !== null) targets = [0, 1, 2];

      // Caught up: each subscriber of the cut node holds n >= nHeal, or was told after the heal.
      const cutSubs = subs.filter((s) => s.node === cutIndex);
      const catchUp = {};
      const waitUntil = Date.now() + 30_000;
      while (Date.now() < waitUntil) {
        for (const s of cutSubs) {
          if (catchUp[s.label]) continue;
          const e = s.log.entries.find((x) => x.at >= healAt && ((x.name === 'publication' && x.ctx?.data?.n >= nHeal) || isTold(x)));
          if (e) catchUp[s.label] = `${e.at - healAt} ms${e.name === 'publication' ? '' : ` (told: ${e.name})`}`;
        }
        if (Object.keys(catchUp).length === cutSubs.length) break;
        await sleep(50);
      }
      await sleep(SETTLE_MS);

      const cutReady = ready[cutIndex];
      const firstUnready = cutReady.find((r) => r.status !== 200);
      const reasons = [...new Set(cutReady.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.reason}`))];
      const othersUnready = ready.flatMap((list, i) => (i === cutIndex ? [] : list.filter((r) => r.status !== 200).map((r) => `node${i + 1}@${r.ms}ms ${r.status} ${r.reason}`)));
      const probeErrors = [...new Set(probes.map((p) => (p.ok ? 'acknowledged' : p.why)))];
      const resubs = cutSubs.map((s) => {
        const after = s.log.entries.filter((x) => x.at >= cutAt && (x.name === 'subscribed' || x.name === 'subscribing' || x.name === 'unsubscribed'));
        return `${s.label}: ${after.map((x) => (x.name === 'subscribed' ? `subscribed(recovered=${x.ctx?.recovered})` : `${x.name}(${x.ctx?.code})`)).join(' ') || 'no event'}`;
      });
      const fig = {
        node: cutIndex + 1,
        cutMs: healAt - cutAt,
        unreadyAfterMs: firstUnready ? firstUnready.ms : null,
        reasons,
        othersUnready,
        readyAgainMs,
        probes: probes.map((p) => `+${p.ms}ms ${p.ok ? `acknowledged offset ${p.offset}` : p.why} (${p.took} ms)`),
        probeErrors,
        catchUp,
        resubs,
        publishedDuringCut: history.total - before,
      };
      figures.push(fig);
      const line =
        `node ${fig.node} cut ${fig.cutMs} ms: /ready not 200 after ${fig.unreadyAfterMs} ms (${reasons.join('; ')}), ready again ${readyAgainMs} ms after the heal; ` +
        `${fig.publishedDuringCut} publications acknowledged by the other nodes meanwhile; probe publishes to it: ${probeErrors.join('; ')}; ` +
        `its subscribers caught up after the heal in ${JSON.stringify(catchUp)}`;
      note(line);
      console.log(line);
      t.diagnostic(line);
      note(`probes: ${fig.probes.join(', ')}`);
      for (const r of resubs) note(r);
    }

    publisher.stop = true;
    await publisher.done;
    note(`${history.total} acknowledged of ${attempt} attempts; failures ${JSON.stringify([...failures])}`);
    await waitCaughtUp(history, subs, { timeout: 30_000, sleep });
    await sleep(500); // late duplicates would show now

    const { totals, line, details } = checkAll(history, subs);
    console.log(line);
    t.diagnostic(line);
    note(line);
    for (const d of details) note(d);
    const lateProbes = probeWatch.log.all('publication').map((p) => p.data?.n);
    note(`probe publications delivered (a failed probe landing later would show here): ${JSON.stringify(lateProbes)}`);

    assert.equal(totals.silentLoss, 0, 'no acknowledged publication lost silently');
    // A publish answered with an error must not be applied long after: the node drops a
    // connection whose bytes go unacknowledged (TCP_USER_TIMEOUT, 2 x command_timeout),
    // and with it the commands queued in it. Kept open, it delivered them at the heal.
    assert.deepEqual(lateProbes, [], 'no probe publish answered with an error during the cut was applied after the heal');
    assert.equal(totals.duplicates, 0, 'no publication delivered twice');
    assert.equal(totals.reorders, 0, 'no publication out of order');
    for (const fig of figures) {
      assert.ok(fig.unreadyAfterMs !== null, `node ${fig.node} answered /ready 503 during the cut: ${JSON.stringify(fig.reasons)}`);
      assert.deepEqual(fig.reasons, ['503 engine unreachable'], `node ${fig.node}: /ready said "engine unreachable" while cut`);
      assert.ok(fig.unreadyAfterMs <= 5_000, `node ${fig.node} turned unready within 5 s of the cut (${fig.unreadyAfterMs} ms)`);
      assert.ok(fig.readyAgainMs !== null, `node ${fig.node} ready again within 30 s of the heal`);
      assert.deepEqual(fig.othersUnready, [], 'the nodes that were not cut stayed ready');
      assert.ok(fig.probes.length > 0, 'publishes were sent to the cut node');
      assert.ok(!fig.probeErrors.includes('acknowledged'), `no publish to the cut node was acknowledged: ${fig.probes.join(', ')}`);
      assert.ok(fig.publishedDuringCut > 0, 'the other nodes kept publishing during the cut');
      assert.equal(Object.keys(fig.catchUp).length, SUBS_PER_NODE + 1, `every subscriber of node ${fig.node} caught up after the heal: ${JSON.stringify(fig.catchUp)}`);
      for (const [label, took] of Object.entries(fig.catchUp)) {
        assert.ok(parseInt(took, 10) <= CATCH_UP_MS, `${label} caught up within ${CATCH_UP_MS} ms of the heal (a reconnect, not TCP's retransmission backoff): ${took}`);
      }
    }
  } catch (err) {
    publisher.stop = true;
    const diag = [
      `--- notes ---\n${notes.join('\n')}`,
      lab ? lab.describe() : '',
      balancer ? balancer.describe() : '',
      pool.diagnostics({ frames: 10 }),
      ...nodes.map((n, i) => `===== node ${i + 1} =====\n${n.server.logs().split('\n').filter((l) => !/ redis::/.test(l)).slice(-80).join('\n')}`),
      redis ? redis.logTail() : '',
    ].join('\n');
    throw withDiagnostics(err, diag, 'reliability-partition');
  } finally {
    publisher.stop = true;
    await publisher.done?.catch(() => {});
    for (const line of notes.slice(0, 2)) t.diagnostic(line);
    const logDir = process.env.HERALD_TEST_LOG_DIR;
    if (logDir) {
      mkdirSync(logDir, { recursive: true });
      nodes.forEach((n, i) => writeFileSync(path.join(logDir, `reliability-partition.node${i + 1}.log`), n.server.logs()));
      writeFileSync(path.join(logDir, 'reliability-partition.notes.log'), `${notes.join('\n')}\n`);
      if (redis) writeFileSync(path.join(logDir, 'reliability-partition.redis.log'), redis.logTail(100_000));
    }
    await pool.closeAll();
    if (balancer) await balancer.close().catch(() => {});
    await Promise.all(nodes.map((n) => n.stop().catch(() => {})));
    if (lab) await lab.destroy();
  }
});
