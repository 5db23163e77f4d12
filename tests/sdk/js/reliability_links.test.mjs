// Issue 22, scenario 3: slow and lossy links. The kernel here has no netem, so a
// fault-injecting TCP proxy (fault_proxy.mjs) sits between each herald node and Redis
// (each node's Redis address is its own proxy) and between the clients and each node.
//
//   (a) 50 ms ± 30 ms latency and a 1 MB/s cap on every link, both ways, while a stream
//       flows: everything delivered (nobody even told), publish->receive latency reported;
//   (b) node <-> Redis connections dropped every 2 s for 10 s mid-stream: silent_loss=0;
//   (c) client <-> node connections dropped (and refused for a moment) mid-stream: the
//       clients reconnect and recover with recovered: true; silent_loss=0 duplicates=0
//       reorders=0.
// The proxy itself is tested first: latency, jitter, the cap, drops, refusals and stalls
// are measurably applied.
//
// HERALD_RELIABILITY_FULL=1 makes the streams and the fault periods longer.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { ClientPool, connectClient, startRedis, subscribeSub, apiPublish as apiPublishWithKey, withDiagnostics } from './cluster_support.mjs';
import { checkAll, History, waitCaughtUp } from './checker.mjs';
import { startFaultProxy } from './fault_proxy.mjs';
import { connectionToken, sleep, startHerald, testConfig, uniq } from './harness.mjs';

const FULL = process.env.HERALD_RELIABILITY_FULL === '1';
const NODES = 2;
const CHANNELS = 2;
const CLIENTS_PER_NODE = 2; // each subscribes to every channel
const API_KEY = 'links-api-key';
const SLOW = { latency: 50, jitter: 30, rate: 1_000_000 };
const SLOW_STREAM_MS = FULL ? 60_000 : 8_000;
const DROP_EVERY_MS = 2_000;
const DROP_FOR_MS = FULL ? 40_000 : 10_000;
const CLIENT_DROPS = FULL ? 10 : 3;
const PAD = 'x'.repeat(2_000); // each publication carries about 2 KB
const SLOW_PAD = 'x'.repeat(16_000); // (a): 16 KB, so the busiest links run near the cap

const config = {
  http_api: { key: API_KEY },
  client: { recovery_max_publication_limit: 10_000 },
  channel: {
    namespaces: [
      {
        name: 'links',
        history_size: 10_000,
        history_ttl: '3600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
      },
    ],
  },
};


const percentile = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN);

// ---------------------------------------------------------------------------
// The proxy itself, against a loopback echo server

/** An echo server on a free loopback port. */
async function echoServer() {
  const sockets = new Set();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, resolve));
  return {
    port: server.address().port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A connected client socket with a buffer of what it received. */
async function dial(port) {
  const sock = net.connect({ host: '127.0.0.1', port });
  sock.setNoDelay(true);
  const c = { sock, got: Buffer.alloc(0), closed: false, error: null };
  sock.on('data', (d) => (c.got = Buffer.concat([c.got, d])));
  sock.on('close', () => (c.closed = true));
  sock.on('error', (err) => (c.error = err));
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return c;
}

async function until(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(5);
  }
}

/** Round trip of one small message through the proxy, in ms. */
async function roundTrip(c, tag) {
  const want = c.got.length + tag.length;
  const t0 = performance.now();
  c.sock.write(tag);
  await until(() => c.got.length >= want, 10_000, `echo of ${tag}`);
  return performance.now() - t0;
}

test('fault proxy: latency, jitter, bandwidth cap, drops, refusals and stalls are applied', { timeout: 60_000 }, async (t) => {
  const echo = await echoServer();
  const proxy = await startFaultProxy({ port: echo.port }, { label: 'unit' });
  try {
    // No settings: a round trip costs next to nothing.
    let c = await dial(proxy.port);
    const base = [];
    for (let i = 0; i < 5; i++) base.push(await roundTrip(c, `b${i}`));

    // Latency: 60 ms up + 40 ms down, so a round trip takes at least 100 ms.
    proxy.set('up', { latency: 60 });
    proxy.set('down', { latency: 40 });
    const slow = [];
    for (let i = 0; i < 5; i++) slow.push(await roundTrip(c, `s${i}`));
    t.diagnostic(`round trips without settings ${base.map((x) => x.toFixed(1)).join(' ')} ms; with 60+40 ms ${slow.map((x) => x.toFixed(1)).join(' ')} ms`);
    for (const x of slow) assert.ok(x >= 99, `every round trip takes the 100 ms of latency at least: ${x}`);
    assert.ok(Math.min(...slow) < 100 + 400, `and not much more (generous on a busy machine): ${slow}`);

    // Jitter: 50 ± 30 ms one way; spread seen, never below 20 ms, order kept.
    proxy.set('both', { latency: 0, jitter: 0 });
    proxy.set('up', { latency: 50, jitter: 30 });
    const jit = [];
    for (let i = 0; i < 20; i++) jit.push(await roundTrip(c, `j${i}`));
    jit.sort((a, b) => a - b);
    t.diagnostic(`50 ± 30 ms: min ${jit[0].toFixed(1)} max ${jit[jit.length - 1].toFixed(1)} ms`);
    assert.ok(jit[0] >= 19, `no round trip below 20 ms: ${jit[0]}`);
    assert.ok(jit[jit.length - 1] - jit[0] >= 15, `the jitter spreads the delays: ${jit[0]}..${jit[jit.length - 1]}`);
    // Order: 200 writes of increasing numbers arrive in order despite the jitter.
    const ordered = Buffer.from(Array.from({ length: 200 }, (_, i) => `${i};`).join(''));
    const start = c.got.length;
    for (let i = 0; i < 200; i++) c.sock.write(`${i};`);
    await until(() => c.got.length >= start + ordered.length, 10_000, 'the ordered writes');
    assert.equal(c.got.subarray(start).toString(), ordered.toString(), 'jittered chunks keep their order');

    // Bandwidth: 400 KB through a 200 KB/s downstream cap takes about 2 s.
    proxy.set('both', { latency: 0, jitter: 0, rate: 0 });
    proxy.set('down', { rate: 200_000 });
    const bulk = Buffer.alloc(400_000, 7);
    const from = c.got.length;
    const t0 = performance.now();
    c.sock.write(bulk);
    await until(() => c.got.length >= from + bulk.length, 20_000, '400 KB at 200 KB/s');
    const took = performance.now() - t0;
    t.diagnostic(`400 KB at a 200 KB/s cap: ${took.toFixed(0)} ms`);
    assert.ok(took >= 1_800, `the cap holds the transfer to about 2 s: ${took} ms`);
    proxy.set('down', { rate: 0 });
    const from2 = c.got.length;
    const t1 = performance.now();
    c.sock.write(bulk);
    await until(() => c.got.length >= from2 + bulk.length, 20_000, '400 KB uncapped');
    const fast = performance.now() - t1;
    t.diagnostic(`400 KB uncapped: ${fast.toFixed(0)} ms`);
    assert.ok(fast < took / 2, `without the cap it is much faster: ${fast} vs ${took} ms`);

    // Stall: nothing arrives until unstall, then everything in order.
    proxy.stall();
    const from3 = c.got.length;
    c.sock.write('held');
    await sleep(300);
    assert.equal(c.got.length, from3, 'nothing is delivered while stalled');
    proxy.unstall();
    await until(() => c.got.length >= from3 + 4, 5_000, 'the held bytes after unstall');
    assert.equal(c.got.subarray(from3).toString(), 'held');

    // Drop: the open connection ends on the client's side.
    assert.equal(proxy.dropConnections(), 1, 'one open connection dropped');
    await until(() => c.closed, 5_000, 'the dropped connection closes');

    // Refuse: a new connection within the window is reset; after it, one works again.
    proxy.refuse(500);
    const refused = net.connect({ host: '127.0.0.1', port: proxy.port });
    const outcome = await new Promise((resolve) => {
      let data = '';
      refused.on('data', (d) => (data += d));
      refused.on('error', (err) => resolve(`error ${err.code}`));
      refused.on('close', () => resolve(`closed${data ? ` with data ${data}` : ''}`));
      refused.on('connect', () => refused.write('x'));
    });
    t.diagnostic(`a connection during refuse(): ${outcome}`);
    assert.match(outcome, /^(error ECONNRESET|closed)$/, 'the refused connection is reset without data');
    await sleep(600);
    c = await dial(proxy.port);
    assert.ok((await roundTrip(c, 'again')) < 2_000, 'after the window, connections work again');
    assert.equal(proxy.counts.refused, 1);
    c.sock.destroy();
  } finally {
    await proxy.close();
    await echo.close();
  }
});

// ---------------------------------------------------------------------------
// herald nodes behind proxies

/** One server API publish (cluster_support's, with this test's key). */
const apiPublish = (node, channel, data) => apiPublishWithKey(node, API_KEY, channel, data, { timeout: 15_000 });

describe('slow and lossy links (fault proxies between nodes and Redis, and between clients and nodes)', () => {
  const env = { redis: null, nodes: [], redisProxies: [], clientProxies: [] };

  before(async () => {
    env.redis = await startRedis('standalone');
    const prefix = uniq('herald');
    for (let i = 0; i < NODES; i++) {
      const rp = await startFaultProxy({ port: env.redis.servers[0].port }, { label: `node${i + 1}<->redis` });
      env.redisProxies.push(rp);
      const full = testConfig({
        ...config,
        engine: {
          type: 'redis',
          redis: {
            address: [`redis://127.0.0.1:${rp.port}`],
            prefix,
            heartbeat_interval: '300ms',
            node_ttl: '2s',
            command_timeout: '1s',
            connect_timeout: '1s',
          },
        },
      });
      const server = await startHerald({ config: full, label: `herald (links) node ${i + 1}` });
      env.nodes.push(server);
      const inner = new URL(server.wsUrl);
      const cp = await startFaultProxy({ port: Number(inner.port) }, { label: `clients<->node${i + 1}` });
      env.clientProxies.push(cp);
      server.proxiedWsUrl = `ws://127.0.0.1:${cp.port}${inner.pathname}`;
    }
  });

  after(async () => {
    for (const p of [...env.clientProxies, ...env.redisProxies]) await p.close().catch(() => {});
    await Promise.all(env.nodes.map((n) => n.stop().catch(() => {})));
    if (env.redis) await env.redis.close();
  });

  const allProxies = () => [...env.redisProxies, ...env.clientProxies];

  /**
   * A case: subscribers (CLIENTS_PER_NODE per node, through the client proxies, each on
   * every channel), one steady publisher per channel through the server API (round robin
   * over the nodes), `fault` run while it publishes; then everyone catches up and the
   * checker runs. Resolves with { check, history, subs, failures, latencies }.
   */
  async function streamCase(t, name, { fault, note, minMs = 0, pad = PAD }) {
    const pool = new ClientPool();
    const history = new History();
    const subs = [];
    const channels = Array.from({ length: CHANNELS }, () => `links:${uniq(name)}`);
    const failures = new Map();
    const state = { stop: false };
    try {
      for (let i = 0; i < NODES; i++) {
        for (let k = 0; k < CLIENTS_PER_NODE; k++) {
          const label = `c${k + 1}${k % 2 === 1 ? '-protobuf' : ''}@node${i + 1}`;
          const handle = pool.client(env.nodes[i].proxiedWsUrl, { label, protobuf: k % 2 === 1, token: connectionToken({ sub: uniq('reader') }) });
          await connectClient(handle, { timeout: 20_000 });
          for (const channel of channels) {
            const s = pool.subscription(handle, channel, { minResubscribeDelay: 100, maxResubscribeDelay: 1_000 });
            const first = await subscribeSub(s, { timeout: 20_000 });
            assert.equal(first.recoverable, true, 'the channel is recoverable');
            subs.push({ label: `${label} ${channel.slice(6, 20)}`, channel, log: s.log, handle });
          }
        }
      }
      const deadline = Date.now() + (FULL ? 240_000 : 90_000);
      const publishers = channels.map(async (channel, ci) => {
        let attempt = ci;
        while (!state.stop) {
          if (Date.now() > deadline) throw new Error(`publisher of ${channel} still running at the deadline`);
          const node = env.nodes[attempt++ % NODES];
          const n = history.next(channel);
          const data = { n, t: Date.now(), pad };
          const r = await apiPublish(node, channel, data);
          if (r.ok) history.ack(channel, n, { offset: r.offset, epoch: r.epoch, data });
          else {
            failures.set(r.why, (failures.get(r.why) || 0) + 1);
            await sleep(50);
          }
          await sleep(10);
        }
      });
      const started = Date.now();
      await sleep(500);
      const bytesBefore = allProxies().map((p) => p.bytes);
      const faultAt = Date.now();
      await fault();
      await sleep(Math.max(0, minMs - (Date.now() - started)));
      const seconds = (Date.now() - faultAt) / 1000;
      const throughput = allProxies().map((p, i) => ({
        label: p.label,
        up: Math.round((p.bytes.up - bytesBefore[i].up) / seconds / 1000),
        down: Math.round((p.bytes.down - bytesBefore[i].down) / seconds / 1000),
      }));
      state.stop = true;
      await Promise.all(publishers);
      for (const p of allProxies()) p.set('both', { latency: 0, jitter: 0, rate: 0 });
      await waitCaughtUp(history, subs, { timeout: 30_000, sleep });
      await sleep(500); // late duplicates would show now

      const check = checkAll(history, subs);
      console.log(`(${name}) ${check.line}`);
      t.diagnostic(check.line);
      note(check.line);
      for (const d of check.details) note(d);
      note(`publish failures: ${JSON.stringify([...failures])}`);
      if (failures.size) t.diagnostic(`publish failures: ${JSON.stringify([...failures])}`);
      const latencies = [];
      for (const s of subs) for (const e of s.log.entries) if (e.name === 'publication' && e.ctx?.data?.t) latencies.push(e.at - e.ctx.data.t);
      latencies.sort((a, b) => a - b);
      return { check, history, subs, failures, latencies, throughput };
    } catch (err) {
      err.clientDiagnostics = pool.diagnostics({ frames: 8 });
      throw err;
    } finally {
      state.stop = true;
      await pool.closeAll();
    }
  }

  /** A test with notes, the proxies' state and the nodes' log tails appended on failure. */
  function linksTest(name, fn) {
    test(name, { timeout: FULL ? 300_000 : 100_000 }, async (t) => {
      const notes = [];
      const note = (s) => notes.push(`[${new Date().toISOString().slice(11, 23)}] ${s}`);
      try {
        await fn(t, note);
      } catch (err) {
        throw withDiagnostics(
          err,
          [
            `--- notes ---\n${notes.join('\n')}`,
            err?.clientDiagnostics ?? '',
            ...allProxies().map((p) => p.describe()),
            ...env.nodes.map((n, i) => `===== node ${i + 1} =====\n${n.logs().split('\n').filter((l) => !/ redis::/.test(l)).slice(-60).join('\n')}`),
            env.redis ? env.redis.logTail(15) : '',
          ].join('\n'),
          `reliability-links-${name.slice(1, 2)}`,
        );
      } finally {
        for (const p of allProxies()) p.set('both', { latency: 0, jitter: 0, rate: 0 });
      }
    });
  }

  linksTest(`(a) ${SLOW.latency} ± ${SLOW.jitter} ms and ${SLOW.rate / 1e6} MB/s on every link, both ways, for ${SLOW_STREAM_MS / 1000} s: everything delivered, latency reported`, async (t, note) => {
    const { check, latencies, failures, throughput } = await streamCase(t, 'slow', {
      note,
      minMs: SLOW_STREAM_MS,
      pad: SLOW_PAD,
      fault: async () => {
        for (const p of allProxies()) p.set('both', SLOW);
        note(`every proxy at ${JSON.stringify(SLOW)} both ways`);
      },
    });
    const line = `publish->receive latency over ${latencies.length} deliveries: p50 ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms, max ${latencies[latencies.length - 1]} ms`;
    console.log(`(a) ${line}`);
    t.diagnostic(line);
    note(line);
    const load = `mean throughput through each proxy while slow (KB/s, up/down): ${throughput.map((x) => `${x.label} ${x.up}/${x.down}`).join(', ')}`;
    console.log(`(a) ${load}`);
    t.diagnostic(load);
    note(load);
    for (const p of allProxies()) note(p.describe());
    assert.equal(check.totals.silentLoss, 0, 'no acknowledged publication lost silently');
    assert.equal(check.totals.duplicates, 0, 'no publication delivered twice');
    assert.equal(check.totals.reorders, 0, 'no publication out of order');
    assert.equal(check.totals.toldEvents, 0, 'a slow link loses nothing: nobody had to be told');
    assert.deepEqual([...failures], [], 'no publish failed');
    // The latency is really there: a delivery crosses node->Redis, Redis->node and node->client.
    assert.ok(percentile(latencies, 50) >= 100, `the median publish->receive latency shows the injected delays (>= 100 ms): ${line}`);
  });

  linksTest(`(b) node <-> Redis connections dropped every ${DROP_EVERY_MS / 1000} s for ${DROP_FOR_MS / 1000} s mid-stream: silent_loss=0`, async (t, note) => {
    let drops = 0;
    const { check, failures, subs } = await streamCase(t, 'redisdrop', {
      note,
      fault: async () => {
        const t0 = Date.now();
        while (Date.now() - t0 < DROP_FOR_MS) {
          await sleep(DROP_EVERY_MS);
          const dropped = env.redisProxies.map((p) => p.dropConnections());
          drops += 1;
          note(`drop ${drops}: node<->Redis connections dropped per node ${JSON.stringify(dropped)}`);
        }
        await sleep(1_000);
      },
    });
    const told = subs.map((s) => s.log.all('subscribed').slice(1).map((c) => `recovered=${c.recovered}`).join(',')).join(' | ');
    const line = `${drops} drops; resubscribes per subscription: ${told}; publish failures ${JSON.stringify([...failures])}`;
    console.log(`(b) ${line}`);
    t.diagnostic(line);
    note(line);
    assert.equal(check.totals.silentLoss, 0, 'no acknowledged publication lost silently');
    assert.equal(check.totals.duplicates, 0, 'no publication delivered twice');
    assert.equal(check.totals.reorders, 0, 'no publication out of order');
    assert.ok(drops >= 3, 'the connections were dropped several times');
    assert.ok(env.redisProxies.every((p) => p.counts.dropped > 0), 'every node lost its Redis connections');
  });

  linksTest(`(c) client <-> node connections dropped ${CLIENT_DROPS} times mid-stream (new ones refused for 1 s): reconnect, recovered: true, silent_loss=0 duplicates=0 reorders=0`, async (t, note) => {
    const { check, subs } = await streamCase(t, 'clientdrop', {
      note,
      fault: async () => {
        for (let i = 0; i < CLIENT_DROPS; i++) {
          await sleep(DROP_EVERY_MS);
          for (const p of env.clientProxies) p.refuse(1_000);
          const dropped = env.clientProxies.map((p) => p.dropConnections());
          note(`drop ${i + 1}: client connections dropped per node ${JSON.stringify(dropped)}, new ones refused for 1 s`);
        }
        await sleep(2_000);
      },
    });
    const resubs = subs.map((s) => ({ label: s.label, list: s.log.all('subscribed').slice(1) }));
    const line = `resubscribes: ${resubs.map((r) => `${r.label}: ${r.list.map((c) => `recovered=${c.recovered}`).join(',')}`).join(' | ')}`;
    note(line);
    t.diagnostic(`connections refused by the proxies: ${env.clientProxies.map((p) => p.counts.refused).join(', ')}`);
    assert.equal(check.totals.silentLoss, 0, 'no acknowledged publication lost silently');
    assert.equal(check.totals.duplicates, 0, 'no publication delivered twice');
    assert.equal(check.totals.reorders, 0, 'no publication out of order');
    for (const s of subs) {
      const connects = s.handle.log.all('connected').length;
      assert.ok(connects >= 2, `${s.label} reconnected (${connects} connects)`);
    }
    for (const r of resubs) {
      assert.ok(r.list.length >= 1, `${r.label} resubscribed after the drops`);
      for (const c of r.list) assert.ok(c.wasRecovering === true && c.recovered === true, `${r.label}: every resubscribe recovered: ${line}`);
    }
    assert.equal(check.totals.toldEvents, 0, 'nobody had to be told: every gap was recovered');
  });
});
