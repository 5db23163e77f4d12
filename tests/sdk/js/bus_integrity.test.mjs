// Signed bus envelopes ([bus_integrity]) between two herald nodes on one standalone Redis,
// seen from the real centrifuge-js SDK: a three-step key rotation (add k2, make it active,
// drop k1) done with SIGHUP and with a config-file change while 1,000 API publications flow
// loses, duplicates and rejects nothing; a node holding the wrong key gets nothing from its
// peer, counts the refusals in /metrics, and recovers when its keyring is reloaded; a bad
// config on reload is refused and the keys in use stay.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ClientPool, appendDiagnostics, connectClient, startRedis, subscribeSub } from './cluster_support.mjs';
import { connectionToken, sleep, startHerald, testConfig, toToml, uniq, within } from './harness.mjs';

const API_KEY = `api-key-${randomBytes(16).toString('hex')}`;

/** A bus key secret: base64 (standard, padded) of 32 random bytes. */
const newSecret = () => randomBytes(32).toString('base64');

const channelConfig = {
  channel: {
    namespaces: [{ name: 'chat', allow_subscribe_for_client: true }],
  },
};

const RELOADED = /bus keyring reloaded/;
const REFUSED = /keyring reload refused/;

/** `herald_bus_rejected_envelopes_total` by reason, from a /metrics text. */
function rejectedSeries(text) {
  const series = {};
  for (const m of text.matchAll(/^herald_bus_rejected_envelopes_total\{reason="([^"]+)"\} (\S+)$/gm)) {
    series[m[1]] = Number(m[2]);
  }
  return series;
}

/**
 * One herald node on the shared Redis, with its config object kept so a test can rewrite
 * the node's config file with only `[bus_integrity]` changed.
 */
class Node {
  constructor(name, server, config) {
    this.name = name;
    this.server = server;
    this.config = config;
  }

  get configFile() {
    return path.join(this.server.dir, 'herald.toml');
  }

  get wsUrl() {
    return this.server.wsUrl;
  }

  /** Log lines matching `re`. */
  lines(re) {
    return this.server.logs().split('\n').filter((l) => re.test(l));
  }

  /** Waits until more than `count` log lines match `re`; resolves with the new ones. */
  async waitLines(re, count, { timeout = 6_000, what = re.source } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const found = this.lines(re);
      if (found.length > count) return found.slice(count);
      if (this.server.exited) throw new Error(`${this.name} exited (${JSON.stringify(this.server.exited)}) waiting for '${what}'`);
      if (Date.now() > deadline) throw new Error(`${this.name}: no new '${what}' log line within ${timeout} ms`);
      await sleep(50);
    }
  }

  /** Rewrites the config file with `bus` as `[bus_integrity]` (the rest unchanged). */
  writeBus(bus) {
    this.config = { ...this.config, bus_integrity: bus };
    writeFileSync(this.configFile, toToml(this.config));
  }

  hangup() {
    try {
      process.kill(-this.server.child.pid, 'SIGHUP');
    } catch {
      this.server.child.kill('SIGHUP');
    }
  }

  /**
   * Reconfigures `[bus_integrity]` and waits for the `bus keyring reloaded` line, which
   * must name the new active key and key ids. `via`: 'SIGHUP' or 'file' (the file
   * watcher alone notices the change).
   */
  async rotate(bus, via) {
    const before = this.lines(RELOADED).length;
    this.writeBus(bus);
    if (via === 'SIGHUP') this.hangup();
    const [line] = await this.waitLines(RELOADED, before, {
      timeout: via === 'SIGHUP' ? 3_000 : 6_000,
      what: `bus keyring reloaded after ${via}`,
    });
    const ids = bus.keys.map((k) => `"${k.id}"`).join(', ');
    assert.ok(
      line.includes(`Some("${bus.active}")`) && line.includes(`[${ids}]`),
      `${this.name}: the reload line names active ${bus.active} and keys [${ids}]: ${line}`,
    );
    return line;
  }

  async rejected() {
    const res = await within(fetch(`${this.server.apiUrl}/metrics`), 5_000, `GET /metrics on ${this.name}`);
    const text = await res.text();
    assert.equal(res.status, 200, `GET /metrics on ${this.name}: HTTP ${res.status}`);
    return rejectedSeries(text);
  }

  /** POST /api/publish through this node; resolves once herald answered with a result. */
  async publish(channel, data) {
    const res = await within(
      fetch(`${this.server.apiUrl}/api/publish`, {
        method: 'POST',
        headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel, data }),
      }),
      5_000,
      `POST /api/publish ${JSON.stringify(data)} on ${this.name}`,
    );
    const text = await res.text();
    assert.equal(res.status, 200, `POST /api/publish on ${this.name}: HTTP ${res.status} ${text}`);
    const reply = JSON.parse(text);
    assert.ok(reply.result && !reply.error, `POST /api/publish ${JSON.stringify(data)} on ${this.name}: ${text}`);
    return reply.result;
  }

  logTail(lines = 40) {
    const all = this.server.logs().split('\n');
    const keyring = all.filter((l) => RELOADED.test(l) || REFUSED.test(l));
    // Integrity drops, counted by reason and Redis channel (one WARN line each).
    const drops = {};
    for (const l of all) {
      const m = /failed the integrity check channel=(\S+) reason=(\S+)/.exec(l);
      if (m) drops[`${m[2]} on ${m[1]}`] = (drops[`${m[2]} on ${m[1]}`] ?? 0) + 1;
    }
    // Without the redis crate's chatter and the per-message debug lines.
    const tail = all.filter((l) => !/ redis::/.test(l) && !/ DEBUG /.test(l)).slice(-lines);
    return (
      `===== ${this.name} ${this.server.wsUrl} (${this.configFile}) =====\n` +
      `--- keyring reloads ---\n${keyring.join('\n') || '(none)'}\n` +
      `--- envelopes dropped by the integrity check ---\n${JSON.stringify(drops)}\n` +
      `--- log, without DEBUG and redis:: lines (last ${lines}) ---\n${tail.join('\n')}`
    );
  }
}

/**
 * Subscribes to a Redis pub/sub channel with `redis-cli --no-raw` and records each payload
 * as redis-cli prints it (binary bytes escaped as \xNN).
 */
async function captureRedis(port, pubsubChannel) {
  const child = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--no-raw', 'subscribe', pubsubChannel], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let running = true;
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (c) => {
    out += c;
  });
  child.on('error', (err) => {
    out += `\n(redis-cli: ${err.message})`;
  });
  const exited = new Promise((resolve) => child.once('close', resolve));
  const capture = {
    /** The payloads of the `message` pushes seen so far. */
    payloads() {
      const lines = out.split('\n');
      const found = [];
      for (let i = 0; i + 2 < lines.length; i++) {
        if (lines[i] === '1) "message"' && lines[i + 1].startsWith('2) ')) {
          found.push(lines[i + 2].replace(/^3\) /, ''));
          i += 2;
        }
      }
      return found;
    },
    async stop() {
      if (!running) return;
      running = false;
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(2_000)]);
    },
  };
  const deadline = Date.now() + 5_000;
  while (!/\(integer\) 1/.test(out)) {
    if (Date.now() > deadline) {
      await capture.stop();
      throw new Error(`redis-cli subscribe ${pubsubChannel} did not confirm the subscription: ${out}`);
    }
    await sleep(20);
  }
  return capture;
}

describe('bus integrity: two herald nodes on standalone Redis', () => {
  let redis = null;
  const pool = new ClientPool();
  let nodes = [];
  let captures = [];
  let keyDir = null;

  before(async () => {
    redis = await startRedis('standalone');
    keyDir = mkdtempSync(path.join(tmpdir(), 'herald-bus-keys-'));
  });

  after(async () => {
    await pool.closeAll();
    await stopNodes();
    if (redis) await redis.close();
    if (keyDir) rmSync(keyDir, { recursive: true, force: true });
  });

  async function stopNodes() {
    const running = nodes;
    nodes = [];
    await Promise.all(running.map((n) => n.server.stop().catch(() => {})));
  }

  /** Starts one node per `[bus_integrity]` table, all on one fresh prefix of the shared Redis. */
  async function startPair(buses) {
    const prefix = uniq('herald');
    const started = [];
    for (const [i, bus] of buses.entries()) {
      const config = testConfig({
        ...channelConfig,
        http_api: { key: API_KEY },
        engine: redis.engineConfig(prefix),
        bus_integrity: bus,
      });
      const name = `node ${'AB'[i]}`;
      const server = await startHerald({ config, label: `herald (bus integrity) ${name}` });
      const node = new Node(name, server, config);
      nodes.push(node);
      started.push(node);
    }
    return { prefix, nodes: started };
  }

  function bitest(name, fn, { timeout = 60_000 } = {}) {
    test(name, { timeout }, async (t) => {
      try {
        await fn(t);
      } catch (err) {
        const logs = nodes.map((n) => n.logTail()).join('\n');
        appendDiagnostics(err, `${pool.diagnostics({ frames: 10 })}\n${logs}\n${redis ? redis.logTail(10) : ''}`);
        throw err;
      } finally {
        await Promise.all(captures.map((c) => c.stop()));
        captures = [];
        await pool.closeAll();
        await stopNodes();
      }
    });
  }

  /** A connected client on `node` subscribed to `channel`. */
  async function reader(node, channel, label) {
    const handle = pool.client(node.wsUrl, { label, token: connectionToken({ sub: uniq('reader') }) });
    await connectClient(handle);
    const s = pool.subscription(handle, channel);
    await subscribeSub(s);
    return s;
  }

  bitest('three-step rotation k1 -> k2 on both nodes while 1,000 publications flow: nothing lost, duplicated or rejected', async (t) => {
    const k1File = path.join(keyDir, `k1-${randomBytes(4).toString('hex')}`);
    writeFileSync(k1File, `${newSecret()}\n`);
    const K1 = { id: 'k1', secret_file: k1File };
    const K2 = { id: 'k2', secret: newSecret() };
    const { prefix, nodes: [a, b] } = await startPair([
      { active: 'k1', keys: [K1] },
      { active: 'k1', keys: [K1] },
    ]);

    const channel = `chat:${uniq('room')}`;
    const onA = await reader(a, channel, 'reader@A');
    const onB = await reader(b, channel, 'reader@B');
    const capture = await captureRedis(redis.servers[0].port, `${prefix}.client.${channel}`);
    captures.push(capture);

    const TOTAL = 1_000;
    const PACE_MS = 17; // ~17 s of publishing; the rotation below takes ~10-12 s of it
    let published = 0;
    let stopPublishing = false;
    const publisher = (async () => {
      const start = Date.now();
      for (let n = 1; n <= TOTAL && !stopPublishing; n++) {
        const wait = start + (n - 1) * PACE_MS - Date.now();
        if (wait > 0) await sleep(wait);
        await a.publish(channel, { n });
        published = n;
      }
    })();

    const steps = [];
    const mark = (what) => steps.push({ what, published });
    const rotation = (async () => {
      await sleep(1_500);
      // Step 1: k2 verify-only, B first, then A.
      mark('step 1 start');
      await b.rotate({ active: 'k1', keys: [K1, K2] }, 'SIGHUP');
      await a.rotate({ active: 'k1', keys: [K1, K2] }, 'SIGHUP');
      mark('step 1 done');
      await sleep(2_000);
      // Step 2: k2 active on A (config file change only), then on B (SIGHUP).
      mark('step 2 start');
      await a.rotate({ active: 'k2', keys: [K1, K2] }, 'file');
      mark('step 2 A signs with k2');
      await sleep(2_000); // A on k2, B still on k1: both directions must pass
      await b.rotate({ active: 'k2', keys: [K1, K2] }, 'SIGHUP');
      mark('step 2 done');
      await sleep(2_000);
      // Step 3: k1 removed, B first, then A.
      mark('step 3 start');
      await b.rotate({ active: 'k2', keys: [K2] }, 'SIGHUP');
      await a.rotate({ active: 'k2', keys: [K2] }, 'SIGHUP');
      mark('step 3 done');
    })();

    // A failed rotation step ends the stream early; that failure is what gets reported.
    const [pubResult, rotResult] = await Promise.allSettled([
      publisher,
      rotation.catch((err) => {
        stopPublishing = true;
        throw err;
      }),
    ]);
    t.diagnostic(`rotation steps at publication counts: ${JSON.stringify(steps)}`);
    if (rotResult.status === 'rejected') throw rotResult.reason;
    if (pubResult.status === 'rejected') throw pubResult.reason;
    assert.equal(published, TOTAL, 'every publication was accepted by node A');

    // The rotation happened in the middle of the stream.
    const done = steps.find((s) => s.what === 'step 3 done');
    assert.ok(
      steps[0].published > 0 && done.published < TOTAL,
      `the rotation ran while publications flowed: ${JSON.stringify(steps)}`,
    );

    // Wait for the tail of the stream (what is still missing then is reported below).
    await Promise.all(
      [onA, onB].map((s) =>
        s.log
          .waitFor('publication', { pred: () => s.log.all('publication').length >= TOTAL, timeout: 5_000 })
          .catch(() => {}),
      ),
    );
    await sleep(500); // a duplicate would arrive by now
    const want = Array.from({ length: TOTAL }, (_, i) => i + 1);
    for (const [label, s] of [
      ['reader@A', onA],
      ['reader@B', onB],
    ]) {
      const got = s.log.all('publication').map((p) => p.data?.n);
      if (got.length !== TOTAL || got.some((n, i) => n !== i + 1)) {
        const seen = new Set(got);
        const missing = want.filter((n) => !seen.has(n));
        const firstOff = got.findIndex((n, i) => n !== i + 1);
        assert.fail(
          `${label}: expected n=1..${TOTAL} once each in order; got ${got.length} publications, ` +
            `missing ${JSON.stringify(missing.slice(0, 20))}${missing.length > 20 ? '…' : ''}, ` +
            `first out of place at index ${firstOff} (${JSON.stringify(got.slice(Math.max(0, firstOff - 2), firstOff + 3))})`,
        );
      }
    }

    // What went over Redis: every publication signed, with k1 until A switched, then k2.
    await capture.stop();
    const payloads = capture.payloads();
    const kids = payloads.map((p) => /^"s1:\\x02(k\d)/.exec(p)?.[1] ?? `unsigned or unexpected: ${p.slice(0, 60)}`);
    assert.equal(payloads.length, TOTAL, `redis-cli saw ${TOTAL} messages on the channel`);
    const firstK2 = kids.indexOf('k2');
    assert.ok(firstK2 > 0, `the first publications were signed with k1, then k2 (first k2 at ${firstK2})`);
    assert.deepEqual(
      kids,
      [...Array(firstK2).fill('k1'), ...Array(TOTAL - firstK2).fill('k2')],
      'key ids of the envelopes: k1 then k2, nothing unsigned',
    );
    const a2 = steps.find((s) => s.what === 'step 2 start').published;
    const a2done = steps.find((s) => s.what === 'step 2 A signs with k2').published;
    assert.ok(
      firstK2 >= a2 && firstK2 <= a2done + 1,
      `A switched to k2 during step 2 (publications ${a2}..${a2done}), first k2 envelope is n=${firstK2 + 1}`,
    );

    for (const node of [a, b]) {
      const series = await node.rejected();
      assert.deepEqual(
        Object.keys(series).sort(),
        ['bad_mac', 'malformed', 'overflow', 'replay', 'stale', 'unknown_key', 'unsigned'],
        `${node.name}: every reason of herald_bus_rejected_envelopes_total is exported`,
      );
      for (const [reason, value] of Object.entries(series)) {
        assert.equal(value, 0, `${node.name}: herald_bus_rejected_envelopes_total{reason="${reason}"}`);
      }
      assert.deepEqual(node.lines(REFUSED), [], `${node.name}: no reload was refused`);
    }
  });

  bitest('a node with the wrong key is isolated and counts unknown_key; a reload joins it; a bad config on reload is refused', async () => {
    const K1 = { id: 'k1', secret: newSecret() };
    const K9 = { id: 'k9', secret: newSecret() };
    const { nodes: [a, b] } = await startPair([
      { active: 'k1', keys: [K1] },
      { active: 'k9', keys: [K9] },
    ]);
    const channel = `chat:${uniq('room')}`;
    const onA = await reader(a, channel, 'reader@A');
    const onB = await reader(b, channel, 'reader@B');

    // Isolated: A's publication reaches A's own subscriber, never B's.
    await a.publish(channel, { n: 1 });
    await onA.log.waitFor('publication', { pred: (p) => p.data?.n === 1, what: 'n=1 on node A' });
    await sleep(1_000);
    assert.deepEqual(onB.log.all('publication').map((p) => p.data), [], 'B got nothing signed with k1');
    const isolated = await b.rejected();
    assert.ok(isolated.unknown_key >= 1, `B counted unknown_key rejections: ${JSON.stringify(isolated)}`);
    for (const reason of ['unsigned', 'bad_mac', 'stale', 'replay', 'malformed']) {
      assert.equal(isolated[reason], 0, `B: no ${reason} rejection: ${JSON.stringify(isolated)}`);
    }

    // B learns k1 (still signing with k9) on SIGHUP: A's next publication arrives.
    await b.rotate({ active: 'k9', keys: [K1, K9] }, 'SIGHUP');
    await sleep(300); // envelopes in flight at the reload have landed
    const baseline = (await b.rejected()).unknown_key;
    let since = onB.log.mark();
    await a.publish(channel, { n: 2 });
    const p2 = await onB.log.waitFor('publication', { since, timeout: 5_000, what: 'n=2 on node B after its reload' });
    assert.deepEqual(p2.data, { n: 2 });

    // A bad config (active key not among the keys) on SIGHUP: refused, old keyring kept.
    const reloadsBefore = b.lines(RELOADED).length;
    const refusedBefore = b.lines(REFUSED).length;
    b.writeBus({ active: 'nope', keys: [K1, K9] });
    b.hangup();
    const [refused] = await b.waitLines(REFUSED, refusedBefore, { timeout: 3_000, what: 'keyring reload refused' });
    assert.match(refused, /ERROR/, `the refusal is an ERROR line: ${refused}`);
    assert.ok(!refused.includes(K1.secret) && !refused.includes(K9.secret), 'the refusal does not print a secret');
    await sleep(2_500); // the file watcher does not load it either
    assert.equal(b.lines(RELOADED).length, reloadsBefore, 'no keyring was loaded from the bad config');
    assert.equal(b.server.exited, null, 'B keeps running');

    since = onB.log.mark();
    await a.publish(channel, { n: 3 });
    const p3 = await onB.log.waitFor('publication', { since, timeout: 5_000, what: 'n=3 on node B after the refused reload' });
    assert.deepEqual(p3.data, { n: 3 });
    await sleep(300);
    assert.deepEqual(
      onB.log.all('publication').map((p) => p.data),
      [{ n: 2 }, { n: 3 }],
      'B got exactly the publications made after it learned k1',
    );
    assert.deepEqual(
      onA.log.all('publication').map((p) => p.data),
      [{ n: 1 }, { n: 2 }, { n: 3 }],
      'A got every publication once',
    );
    const end = await b.rejected();
    assert.equal(end.unknown_key, baseline, `B refused nothing more once it held k1: ${JSON.stringify(end)}`);
  });
});
