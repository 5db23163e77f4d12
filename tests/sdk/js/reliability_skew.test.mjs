// Issue 22, scenario 4: clock skew on the signed bus, seen from the real centrifuge-js SDK.
//
// Three herald nodes on one standalone Redis sign their bus envelopes ([bus_integrity]);
// one of them runs under libfaketime (Debian package `faketime`), its wall clock moved
// through a file it re-reads every second: +20 s (inside the 30 s envelope window), then
// +40 s (outside), then back in step. Subscribers on every node follow a recoverable
// history channel (and a channel without history) while publications go through the server
// API of every node in turn (at +40 s, for the second half of the phase, only through the
// nodes in step, as publishers behind a balancer that follows /ready would). What is
// expected, phase by phase:
//
// - +20 s: everything delivered live, nothing refused; the skewed node's
//   herald_engine_clock_skew_seconds shows about 20, it logs a warning and stays ready.
// - +40 s: envelopes between the skewed node and the others are refused and counted
//   (herald_bus_rejected_envelopes_total{reason="stale"}) on both sides; the skewed node's
//   /ready answers 503 "clock skew"; the history subscribers are never silently starved:
//   each refused envelope tells the channel's positioned subscribers to recover (2500) and
//   the publications come from the stream. The channel without history is at most once:
//   what crossed between the skewed node and the others is lost (measured, not promised).
// - back in step: ready again, everything delivered live.
// The history checker's summary line over the whole run must show silent_loss=0.
//
// Default run: 300 history publications per phase (half that back in step).
// HERALD_RELIABILITY_FULL=1: 3,000.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { appendDiagnostics, ClientPool, connectClient, startRedis, subscribeSub, apiPublish as apiPublishWithKey } from './cluster_support.mjs';
import { connectionToken, metricSample, sleep, startHerald, testConfig, uniq, within } from './harness.mjs';
import { checkAll, History, waitCaughtUp } from './checker.mjs';

const FULL = process.env.HERALD_RELIABILITY_FULL === '1';
const PER_PHASE = FULL ? 3_000 : 300;
const PLAIN_EVERY = 3; // one publication of the channel without history per this many
const INTERVAL_MS = 5;
const SUBSCRIBERS_PER_NODE = 2;
const CASE_TIMEOUT_MS = FULL ? 600_000 : 150_000;
const API_KEY = `api-key-${randomBytes(8).toString('hex')}`;
const NAMES = ['skewed', 'node2', 'node3'];
// node 20's test runner loses a failure whose message passes about 64 KB ('test failed'
// and nothing else): what is appended to one is cut to this.
const MAX_DIAGNOSTICS = 40_000;

/** libfaketime's multi-threaded preload library, or an error saying how to install it. */
function libfaketime() {
  const dirs = ['/usr/lib/faketime', '/usr/local/lib/faketime'];
  try {
    for (const d of readdirSync('/usr/lib')) dirs.push(path.join('/usr/lib', d, 'faketime'));
  } catch {
    // no /usr/lib: nothing found below
  }
  for (const dir of dirs) {
    const lib = path.join(dir, 'libfaketimeMT.so.1');
    if (existsSync(lib)) return lib;
  }
  throw new Error(
    "libfaketime is not installed (looked for faketime/libfaketimeMT.so.1 under /usr/lib): " +
      "install the Debian package with 'apt-get install -y faketime' (as root) and run again",
  );
}

const config = (engine) =>
  testConfig({
    http_api: { key: API_KEY },
    client: { recovery_max_publication_limit: 10_000 },
    channel: {
      namespaces: [
        { name: 'rel', history_size: 10_000, history_ttl: '3600s', force_recovery: true, allow_subscribe_for_client: true },
        { name: 'plain', allow_subscribe_for_client: true },
      ],
    },
    engine,
    bus_integrity: { active: 'k1', keys: [{ id: 'k1', secret: randomBytes(32).toString('base64') }] },
  });

/** One server API publish (cluster_support's, with this test's key). */
const apiPublish = (node, channel, data) => apiPublishWithKey(node, API_KEY, channel, data, { timeout: 5_000 });

/** What a node says of itself: /ready, the skew gauge, stale refusals, live nodes. */
async function observe(node) {
  const ready = await within(fetch(`${node.apiUrl}/ready`), 3_000, 'GET /ready');
  const reason = ready.status === 200 ? '' : ((await ready.json().catch(() => ({}))).reason ?? '?');
  const res = await within(fetch(`${node.apiUrl}/metrics`), 3_000, 'GET /metrics');
  const text = await res.text();
  return {
    ready: ready.status,
    reason,
    skew: metricSample(text, 'herald_engine_clock_skew_seconds'),
    stale: metricSample(text, 'herald_bus_rejected_envelopes_total', { reason: 'stale' }),
    nodes: metricSample(text, 'herald_node_num_nodes'),
  };
}

/** Polls `observe(node)` until `pred` holds; throws with the last observation after `timeout`. */
async function waitObserved(node, pred, what, { timeout = 15_000 } = {}) {
  const deadline = Date.now() + timeout;
  let last = null;
  for (;;) {
    last = await observe(node).catch((err) => ({ error: err.message }));
    if (!last.error && pred(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeout} ms; last ${JSON.stringify(last)}`);
    await sleep(200);
  }
}

test(`clock skew on the signed bus: one node of three at +20 s, +40 s, then in step; ${PER_PHASE} history publications per phase, none lost silently`, { timeout: CASE_TIMEOUT_MS }, async (t) => {
  const lib = libfaketime();
  const pool = new ClientPool();
  const notes = [];
  const note = (s) => {
    notes.push(s);
    console.log(s);
  };
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-skew-'));
  const clockFile = path.join(dir, 'faketime.rc');
  const setClock = (offset) => writeFileSync(clockFile, `${offset}\n`);
  let redis = null;
  const nodes = [];
  const started = Date.now();
  try {
    redis = await startRedis('standalone');
    const prefix = uniq('herald');
    const full = config(redis.engineConfig(prefix));
    setClock('+20s');
    for (const [i, name] of NAMES.entries()) {
      const env =
        i === 0
          ? {
              LD_PRELOAD: lib,
              FAKETIME_TIMESTAMP_FILE: clockFile,
              FAKETIME_CACHE_DURATION: '1',
              // Only the wall clock moves: tokio's timers run on CLOCK_MONOTONIC, which
              // libfaketime would shift too (and jump with every change of the file).
              FAKETIME_DONT_FAKE_MONOTONIC: '1',
            }
          : {};
      nodes.push(await startHerald({ config: full, env, label: `herald (skew) ${name}` }));
    }
    const [skewed, ...others] = nodes;

    const channel = `rel:${uniq('feed')}`;
    const plain = `plain:${uniq('feed')}`;
    const history = new History();
    const subs = [];
    const plainSubs = [];
    for (const [i, node] of nodes.entries()) {
      for (let k = 0; k < SUBSCRIBERS_PER_NODE; k++) {
        const label = `sub${k + 1}@${NAMES[i]}`;
        const handle = pool.client(node.wsUrl, { label, token: connectionToken({ sub: uniq('reader') }) });
        await connectClient(handle);
        const s = pool.subscription(handle, channel, { minResubscribeDelay: 100, maxResubscribeDelay: 1_000 });
        const first = await subscribeSub(s);
        assert.equal(first.recoverable, true, `${label}: the channel is recoverable`);
        subs.push({ label, channel, log: s.log, node: i });
        if (k === 0) {
          const p = pool.subscription(handle, plain);
          await subscribeSub(p);
          plainSubs.push({ label: `plain@${NAMES[i]}`, log: p.log, node: i });
        }
      }
    }

    // Publishes `count` history publications (and after every PLAIN_EVERY-th, one on the
    // channel without history) through the nodes `via` in turn.
    let turn = 0;
    let plainTurn = 0;
    let plainN = 0;
    const failures = new Map();
    const plainBy = new Map(); // plain n -> { node, phase } of an acknowledged publication
    const publishPhase = async (phase, count, via = [0, 1, 2]) => {
      const deadline = Date.now() + 60_000;
      for (let done = 0; done < count; ) {
        if (Date.now() > deadline) throw new Error(`${phase}: only ${done} of ${count} publications acknowledged in 60 s; failures ${JSON.stringify([...failures])}`);
        const i = via[turn++ % via.length];
        const n = history.next(channel);
        const data = { n, phase };
        const r = await apiPublish(nodes[i], channel, data);
        if (!r.ok) {
          failures.set(`${NAMES[i]} ${r.why}`, (failures.get(`${NAMES[i]} ${r.why}`) || 0) + 1);
          await sleep(50);
          continue;
        }
        history.ack(channel, n, { offset: r.offset, epoch: r.epoch, data });
        done += 1;
        if (done % PLAIN_EVERY === 0) {
          plainN += 1;
          const j = via[plainTurn++ % via.length];
          const p = await apiPublish(nodes[j], plain, { n: plainN, phase });
          if (p.ok) plainBy.set(plainN, { node: j, phase });
          else failures.set(`${NAMES[j]} plain ${p.why}`, (failures.get(`${NAMES[j]} plain ${p.why}`) || 0) + 1);
        }
        await sleep(INTERVAL_MS);
      }
    };
    // Publications without history of a phase: acknowledged, by publishing node.
    const plainSent = (phase) => NAMES.map((_, j) => [...plainBy.values()].filter((p) => p.phase === phase && p.node === j).length);
    // What each subscriber of the channel without history received in a phase, by publishing node.
    const plainReceived = (phase) =>
      plainSubs.map(({ label, log, node }) => {
        const got = log.all('publication').filter((c) => c.data?.phase === phase).map((c) => c.data.n);
        const byNode = NAMES.map((_, j) => got.filter((n) => plainBy.get(n)?.node === j).length);
        return { label, node, byNode };
      });
    const resubscribes = (since) =>
      subs.map(({ label, log, node }) => ({
        label,
        node,
        count: log.entries.slice(since.get(label)).filter((e) => e.name === 'subscribing' && e.ctx?.code === 2500).length,
      }));
    const marks = () => new Map(subs.map(({ label, log }) => [label, log.mark()]));
    // Waits until every history subscriber caught up; if one never does, the checker's
    // summary (its silent losses) goes into the failure.
    const caughtUp = async (phase, timeout) => {
      try {
        await waitCaughtUp(history, subs, { timeout, sleep });
      } catch (err) {
        const { line, details } = checkAll(history, subs);
        console.log(line);
        t.diagnostic(line);
        notes.push(`${phase}: ${line}`, ...details);
        throw err;
      }
    };

    // ---------------------------------------------------------------- +20 s
    const a = await waitObserved(skewed, (o) => o.skew >= 18 && o.skew <= 22 && o.ready === 200, 'skewed node: gauge about +20 s, ready');
    for (const o of others) await waitObserved(o, (x) => Math.abs(x.skew) < 2 && x.ready === 200, 'node in step: gauge about 0, ready');
    note(`+20s: skewed node ${JSON.stringify(a)}`);
    assert.match(skewed.logs(), /WARN .*clock is off redis's by more than half the signed bus's envelope window/, 'the skewed node warns at +20 s');
    const staleBefore = await Promise.all(nodes.map(observe));
    let since = marks();
    const tA = Date.now();
    await publishPhase('A', PER_PHASE);
    await caughtUp('+20s', 30_000);
    await sleep(300); // the last publications without history, which nobody waits for
    const staleA = await Promise.all(nodes.map(observe));
    note(`+20s: ${PER_PHASE} publications in ${Date.now() - tA} ms; stale refusals per node ${JSON.stringify(staleA.map((o, i) => o.stale - staleBefore[i].stale))}`);
    for (const [i, o] of staleA.entries()) assert.equal(o.stale, staleBefore[i].stale, `${NAMES[i]}: nothing refused as stale at +20 s`);
    for (const r of resubscribes(since)) assert.equal(r.count, 0, `${r.label}: delivered live at +20 s, no recovery needed`);
    const sentA = plainSent('A');
    for (const r of plainReceived('A')) {
      assert.deepEqual(r.byNode, sentA, `${r.label}: every publication without history delivered at +20 s`);
    }

    // ---------------------------------------------------------------- +40 s
    setClock('+40s');
    const movedB = Date.now();
    const b = await waitObserved(skewed, (o) => o.skew >= 38 && o.skew <= 42 && o.ready === 503, 'skewed node: gauge about +40 s, not ready');
    assert.equal(b.reason, 'clock skew', `the skewed node's /ready names the clock: ${JSON.stringify(b)}`);
    for (const o of others) {
      const x = await observe(o);
      assert.equal(x.ready, 200, `a node in step stays ready: ${JSON.stringify(x)}`);
    }
    note(`+40s: skewed node ${JSON.stringify(b)}, not ready ${Date.now() - movedB} ms after its clock moved (libfaketime re-reads its file every second)`);
    assert.match(skewed.logs(), /ERROR .*clock is off redis's by more than the signed bus's envelope window/, 'the skewed node logs an error at +40 s');
    since = marks();
    const tB = Date.now();
    // Through every node, then only through the nodes in step (what publishers behind a
    // balancer that follows /ready do): the skewed node's subscribers then get nothing
    // live, and only the refused envelopes can tell them.
    const viaAll = Math.ceil(PER_PHASE / 2);
    await publishPhase('B', viaAll);
    await publishPhase('B', PER_PHASE - viaAll, [1, 2]);
    const publishedB = Date.now();
    await caughtUp('+40s', 45_000);
    const recoveryB = Date.now() - publishedB;
    await sleep(300);
    const staleB = await Promise.all(nodes.map(observe));
    const staleDelta = staleB.map((o, i) => o.stale - staleA[i].stale);
    const resB = resubscribes(since);
    note(`+40s: ${PER_PHASE} publications in ${publishedB - tB} ms, every history subscriber caught up ${recoveryB} ms after the last was acknowledged; stale refusals per node ${JSON.stringify(staleDelta)}; live nodes seen ${JSON.stringify(staleB.map((o) => o.nodes))}`);
    note(`+40s: resubscribes with 2500 per subscriber ${JSON.stringify(resB.map((r) => `${r.label}=${r.count}`))}`);
    for (const [i, d] of staleDelta.entries()) assert.ok(d > 0, `${NAMES[i]}: envelopes refused as stale at +40 s (${d})`);
    for (const r of resB) assert.ok(r.count > 0, `${r.label}: told to recover (2500) at +40 s: ${r.count}`);
    const plainB = plainReceived('B');
    const sentB = plainSent('B');
    note(`+40s: channel without history, sent by node ${JSON.stringify(sentB)}; received by node ${JSON.stringify(plainB.map((r) => `${r.label}=${JSON.stringify(r.byNode)}`))}`);
    for (const r of plainB) {
      for (const [j, got] of r.byNode.entries()) {
        const crosses = (r.node === 0) !== (j === 0);
        if (crosses) assert.equal(got, 0, `${r.label}: nothing without history crosses the skew at +40 s (from ${NAMES[j]}: ${got})`);
        else assert.equal(got, sentB[j], `${r.label}: everything without history from ${NAMES[j]} arrives (same side of the skew)`);
      }
    }

    // ---------------------------------------------------------------- in step
    setClock('+0s');
    const movedC = Date.now();
    const c = await waitObserved(skewed, (o) => Math.abs(o.skew) < 2 && o.ready === 200, 'formerly skewed node: gauge about 0, ready again');
    note(`in step: formerly skewed node ${JSON.stringify(c)}, ready ${Date.now() - movedC} ms after its clock moved back`);
    assert.match(skewed.logs(), /INFO .*clock is back in step with redis/, 'the node logs that its clock is back in step');
    since = marks();
    const staleBeforeC = await Promise.all(nodes.map(observe));
    await publishPhase('C', Math.ceil(PER_PHASE / 2));
    await caughtUp('in step', 30_000);
    await sleep(500); // late duplicates would show now
    const staleC = await Promise.all(nodes.map(observe));
    for (const [i, o] of staleC.entries()) assert.equal(o.stale, staleBeforeC[i].stale, `${NAMES[i]}: nothing refused once in step`);
    for (const r of resubscribes(since)) assert.equal(r.count, 0, `${r.label}: live again once in step`);
    for (const [i, node] of nodes.entries()) {
      await waitObserved(node, (o) => o.nodes === 3, `${NAMES[i]}: every node back in its registry`, { timeout: 10_000 });
    }

    const { totals, line, details } = checkAll(history, subs);
    console.log(line);
    t.diagnostic(line);
    note(`summary: ${line}`);
    note(`failures while publishing: ${JSON.stringify([...failures])}; run took ${Date.now() - started} ms`);
    for (const d of details) notes.push(d);
    assert.equal(totals.silentLoss, 0, 'no acknowledged publication lost silently');
    assert.equal(totals.duplicates, 0, 'no publication delivered twice');
    assert.equal(totals.reorders, 0, 'no publication out of order');
    assert.equal(failures.size, 0, `every publish acknowledged: ${JSON.stringify([...failures])}`);
  } catch (err) {
    const logs = nodes.map((n, i) => {
      const lines = n.logs().split('\n').filter((l) => !/ redis::/.test(l) && !/ DEBUG /.test(l));
      return `===== ${NAMES[i]} ${n.wsUrl} =====\n${lines.slice(-40).join('\n')}`;
    });
    let diag = [`--- notes ---\n${notes.join('\n')}`, ...logs, redis ? redis.logTail(10) : '', pool.diagnostics({ frames: 5 })].join('\n');
    if (diag.length > MAX_DIAGNOSTICS) diag = `${diag.slice(0, MAX_DIAGNOSTICS)}\n… (${diag.length - MAX_DIAGNOSTICS} more characters cut)`;
    throw appendDiagnostics(err, diag);
  } finally {
    for (const line of notes.slice(0, 12)) t.diagnostic(line);
    await pool.closeAll();
    await Promise.all(nodes.map((n) => n.stop().catch(() => {})));
    if (redis) await redis.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
