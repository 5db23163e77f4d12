// `scripts/cluster up|down` with the real centrifuge-js SDK: Redis, three herald nodes
// and an nginx WebSocket load balancer on loopback. A client through the balancer and
// one connected straight to node 1 exchange publications; the node the balancer
// client landed on is SIGKILLed, 20 publications go out through another node's API
// while the client is away, and the client must reconnect through the balancer and
// recover all of them, in order, once. `scripts/cluster down` must leave nothing
// running.
//
// The cluster lives in a temp state dir of its own (HERALD_CLUSTER_DIR), so a cluster
// the user started is left alone. Missing redis-server or nginx fails the test with the
// script's install message (the script installs them itself when run as root).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import {
  appendDiagnostics,
  ClientPool,
  CLUSTER_SCRIPT,
  connectClient,
  parseClusterSummary,
  runScriptsCluster,
  subscribeSub,
} from './cluster_support.mjs';
import { heraldBin, sleep, uniq, within } from './harness.mjs';

const NODES = 3;
const OUTAGE_COUNT = 20;

/** A process that exists and is not a zombie (a zombie is gone, just not reaped). */
function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Processes whose command line names `dir`, and the children of `parents`. */
function processesOf(dir, parents = []) {
  const found = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const [state, ppid] = [fields[0], Number(fields[1])];
      if (state === 'Z') continue;
      if (cmdline.includes(dir) || parents.includes(ppid)) found.set(pid, cmdline);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** `herald_node_num_clients` of each node (null when the node does not answer). */
async function clientsPerNode(info) {
  const counts = [];
  for (let i = 1; i <= NODES; i++) {
    try {
      const res = await fetch(`${info[`node${i}_api`]}/metrics`, { signal: AbortSignal.timeout(2_000) });
      const m = /^herald_node_num_clients(?:\{[^}]*\})? (\d+)/m.exec(await res.text());
      counts.push(m ? Number(m[1]) : null);
    } catch {
      counts.push(null);
    }
  }
  return counts;
}

/** Polls until `ok(counts)`; returns the last counts. */
async function waitCounts(info, ok, ms = 5_000) {
  const deadline = Date.now() + ms;
  let counts;
  for (;;) {
    counts = await clientsPerNode(info);
    if (ok(counts) || Date.now() > deadline) return counts;
    await sleep(100);
  }
}

async function apiPublish(apiUrl, key, channel, data) {
  const res = await fetch(`${apiUrl}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(5_000),
  });
  const body = await res.json();
  if (!body.result) throw new Error(`publish through ${apiUrl} failed: ${res.status} ${JSON.stringify(body)}`);
  return body.result;
}

/** The tails of the cluster's logs (read before `down` removes the state dir). */
function stateLogs(dir) {
  if (!existsSync(dir)) return `(state dir ${dir} is gone)`;
  const parts = [];
  for (const name of readdirSync(dir).sort()) {
    if (!/\.(log|out)$/.test(name)) continue;
    const lines = readFileSync(path.join(dir, name), 'utf8').trimEnd().split('\n');
    const own = lines.filter((l) => !/ redis::/.test(l)).slice(-40);
    parts.push(`--- ${name} (last ${own.length} lines) ---\n${own.join('\n')}`);
  }
  return parts.join('\n');
}

test('scripts/cluster: clients through nginx and on a node exchange messages; a killed node\'s client reconnects through the balancer and recovers everything; down stops all', { timeout: 240_000 }, async (t) => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'herald-local-cluster-'));
  const state = path.join(tmp, 'cluster');
  const env = { ...process.env, HERALD_CLUSTER_DIR: state, HERALD_BIN: heraldBin() };
  const pool = new ClientPool();
  const notes = [];
  const note = (s) => notes.push(s);
  let up = null;
  let downDone = false;
  // If the test process dies midway, do not leave the cluster behind.
  const emergencyDown = () => {
    if (!downDone) spawnSync(CLUSTER_SCRIPT, ['down'], { env, timeout: 20_000 });
  };
  process.on('exit', emergencyDown);

  try {
    const started = Date.now();
    up = await runScriptsCluster(['up'], env, { timeout: 200_000 });
    assert.equal(
      up.code,
      0,
      `scripts/cluster up failed (exit ${up.code}):\n--- stderr ---\n${up.stderr}\n--- stdout ---\n${up.stdout}`,
    );
    note(`scripts/cluster up took ${Date.now() - started} ms`);
    const info = parseClusterSummary(up.stdout);
    for (const key of ['balancer_ws', 'api_key', 'token', 'state_dir', 'nginx_pid', 'redis_url']) {
      assert.ok(info[key], `scripts/cluster up printed ${key}=...:\n${up.stdout}`);
    }
    for (let i = 1; i <= NODES; i++) {
      for (const k of ['ws', 'api', 'pid', 'config']) assert.ok(info[`node${i}_${k}`], `node${i}_${k}= printed:\n${up.stdout}`);
    }
    assert.equal(info.state_dir, state, 'the cluster runs in the state dir the test chose');
    assert.match(info.balancer_ws, /^ws:\/\/127\.0\.0\.1:\d+\/connection\/websocket$/);
    const wsPorts = new Set([info.balancer_ws, info.node1_ws, info.node2_ws, info.node3_ws].map((u) => new URL(u).port));
    assert.equal(wsPorts.size, NODES + 1, 'the balancer and the three nodes listen on ports of their own');

    // `status` says everything runs; `up` again says it is up and changes nothing.
    const status = await runScriptsCluster(['status'], env);
    assert.equal(status.code, 0, `status: every process runs:\n${status.stdout}${status.stderr}`);
    assert.match(status.stdout, /5 of 5 running/);
    const again = await runScriptsCluster(['up'], env);
    assert.equal(again.code, 0, `up while up succeeds:\n${again.stderr}`);
    assert.match(again.stderr, /already up/);
    assert.equal(parseClusterSummary(again.stdout).balancer_ws, info.balancer_ws, 'up while up keeps the running cluster');

    const token = info.token;
    const pids = Array.from({ length: NODES }, (_, i) => Number(info[`node${i + 1}_pid`]));
    const channel = uniq('local-cluster');

    // The direct client on node 1, then the balancer client. The balancer spreads new
    // connections round-robin; the balancer client must sit on another node than the
    // direct one, so that killing its node leaves the direct client up.
    const direct = pool.client(info.node1_ws, { label: 'direct@node1', token });
    await connectClient(direct);
    let counts = await waitCounts(info, (c) => c[0] === 1);
    assert.deepEqual(counts, [1, 0, 0], 'the direct client is on node 1');

    const viaLb = pool.client(info.balancer_ws, {
      label: 'client@balancer',
      token,
      // Reconnect after 1.5-2 s: the outage publications below go out while it is away.
      minReconnectDelay: 1_500,
      maxReconnectDelay: 2_000,
    });
    let lbNode = null;
    const landed = [];
    for (let attempt = 1; attempt <= NODES + 1 && lbNode === null; attempt++) {
      await connectClient(viaLb);
      counts = await waitCounts(info, (c) => c.reduce((a, b) => a + (b ?? 0), 0) === 2);
      const where = counts[0] === 2 ? 0 : counts.findIndex((c, i) => i > 0 && c === 1);
      assert.ok(where >= 0, `the balancer client shows up on one node: clients per node ${JSON.stringify(counts)}`);
      landed.push(where + 1);
      if (where !== 0) {
        lbNode = where;
        break;
      }
      // On node 1 beside the direct client: connect again, the balancer moves on.
      viaLb.client.disconnect();
      await waitCounts(info, (c) => c[0] === 1 && c[1] === 0 && c[2] === 0);
    }
    note(`the balancer client landed on node(s) ${landed.join(', ')}`);
    assert.ok(lbNode !== null, `the balancer sent a connection to a node other than node 1 (landed on ${landed.join(', ')})`);

    // Both subscribe and exchange publications both ways.
    const sDirect = pool.subscription(direct, channel);
    const sLb = pool.subscription(viaLb, channel);
    const firstDirect = await subscribeSub(sDirect);
    const firstLb = await subscribeSub(sLb);
    assert.equal(firstLb.recoverable, true, 'channels without a namespace are recoverable (force_recovery)');
    assert.equal(firstLb.positioned, true, 'the balancer client\'s subscription is positioned');
    assert.equal(firstDirect.recoverable, true);

    await within(viaLb.client.publish(channel, { from: 'balancer' }), 5_000, 'publish from the balancer client');
    await sDirect.log.waitFor('publication', {
      pred: (p) => p.data?.from === 'balancer',
      timeout: 5_000,
      what: `the direct client (node 1) receives what the balancer client (node ${lbNode + 1}) published`,
    });
    await within(direct.client.publish(channel, { from: 'direct' }), 5_000, 'publish from the direct client');
    await sLb.log.waitFor('publication', {
      pred: (p) => p.data?.from === 'direct',
      timeout: 5_000,
      what: 'the balancer client receives what the direct client published',
    });
    // Its own publication comes back to the direct client through the bus too:
    // wait for it, or it may land after the mark below.
    await sDirect.log.waitFor('publication', {
      pred: (p) => p.data?.from === 'direct',
      timeout: 5_000,
      what: 'the direct client receives its own publication',
    });
    const before = sLb.log.all('publication');
    assert.deepEqual(before.map((p) => p.data.from), ['balancer', 'direct'], 'the balancer client got both, in order');
    const lastOffset = before[before.length - 1].offset;

    // Kill the balancer client's node; publish while the client is away.
    const clientMark = viaLb.log.mark();
    const subMark = sLb.log.mark();
    const directMark = sDirect.log.mark();
    const victim = lbNode + 1;
    note(`SIGKILL node ${victim} (pid ${pids[lbNode]})`);
    process.kill(pids[lbNode], 'SIGKILL');
    await viaLb.log.waitFor('connecting', {
      since: clientMark,
      timeout: 10_000,
      what: `the balancer client notices that node ${victim} is gone`,
    });
    const lostAt = Date.now();
    const publisherIndex = [0, 1, 2].find((i) => i !== lbNode && i !== 0) ?? 0;
    const results = [];
    for (let n = 1; n <= OUTAGE_COUNT; n++) {
      results.push(await apiPublish(info[`node${publisherIndex + 1}_api`], info.api_key, channel, { n }));
    }
    const publishedIn = Date.now() - lostAt;
    const reconnectedEarly = viaLb.log.all('connected', clientMark).length > 0;
    note(`published ${OUTAGE_COUNT} through node ${publisherIndex + 1}'s API in ${publishedIn} ms after the disconnect; client already back: ${reconnectedEarly}`);
    assert.deepEqual(
      results.map((r) => r.offset),
      Array.from({ length: OUTAGE_COUNT }, (_, i) => lastOffset + i + 1),
      'the outage publications follow the stream without a gap',
    );
    assert.ok(!reconnectedEarly, 'the publications went out while the balancer client was away');

    await viaLb.log.waitFor('connected', {
      since: clientMark,
      timeout: 20_000,
      what: 'the balancer client reconnects through the balancer',
    });
    const resub = await sLb.log.waitFor('subscribed', {
      since: subMark,
      timeout: 10_000,
      what: 'the balancer client resubscribes',
    });
    note(`resubscribed: ${JSON.stringify(resub)}`);
    assert.equal(resub.wasRecovering, true, 'the SDK resubscribed with recover');
    assert.equal(resub.recovered, true, 'recovered: true (history kept in Redis, readable on the other nodes)');
    assert.equal(resub.streamPosition?.epoch, firstLb.streamPosition?.epoch, 'same epoch');

    await sLb.log.waitFor('publication', {
      since: subMark,
      pred: () => sLb.log.all('publication', subMark).length >= OUTAGE_COUNT,
      timeout: 10_000,
      what: `${OUTAGE_COUNT} publications recovered`,
    });
    await sleep(500); // duplicates would show up now
    const recovered = sLb.log.all('publication', subMark);
    assert.deepEqual(
      recovered.map((p) => p.data),
      Array.from({ length: OUTAGE_COUNT }, (_, i) => ({ n: i + 1 })),
      'every publication sent during the outage, in order, once',
    );
    assert.deepEqual(
      recovered.map((p) => p.offset),
      results.map((r) => r.offset),
      'with the offsets the API gave them',
    );
    const directGot = sDirect.log.all('publication', directMark).map((p) => p.data);
    assert.deepEqual(directGot, Array.from({ length: OUTAGE_COUNT }, (_, i) => ({ n: i + 1 })), 'the direct client got them live');
    assert.equal(direct.log.all('disconnected').length, 0, 'the direct client stayed connected');
    assert.equal(direct.log.all('connecting').length, 1, 'the direct client never reconnected');

    counts = await waitCounts(info, (c) => c[lbNode] === null && c.reduce((a, b) => a + (b ?? 0), 0) === 2);
    note(`clients per node after the reconnect: ${JSON.stringify(counts)}`);
    assert.equal(counts[lbNode], null, `node ${victim} is gone`);
    assert.equal(counts.reduce((a, b) => a + (b ?? 0), 0), 2, `both clients are on the surviving nodes: ${JSON.stringify(counts)}`);

    // The same through the balancer after the kill: a publication still crosses nodes.
    await within(viaLb.client.publish(channel, { from: 'balancer', after: 'kill' }), 5_000, 'publish after the reconnect');
    await sDirect.log.waitFor('publication', {
      since: directMark,
      pred: (p) => p.data?.after === 'kill',
      timeout: 5_000,
      what: 'the direct client receives the balancer client\'s publication after the reconnect',
    });

    // down: everything gone.
    const nginxPid = Number(info.nginx_pid);
    const workers = [...processesOf(state, [nginxPid]).keys()];
    const tracked = new Set([...pids, nginxPid, ...workers]);
    for (const name of readdirSync(state).filter((f) => /^[a-z0-9]+\.pid$/.test(f))) {
      const pid = Number(readFileSync(path.join(state, name), 'utf8').trim());
      if (pid > 0) tracked.add(pid);
    }
    for (const pid of processesOf(state).keys()) tracked.add(pid);
    note(`processes before down: ${JSON.stringify([...tracked])}`);
    await pool.closeAll();
    const down = await runScriptsCluster(['down'], env, { timeout: 60_000 });
    downDone = true;
    assert.equal(down.code, 0, `scripts/cluster down failed:\n${down.stdout}${down.stderr}`);
    note(`down: ${down.stdout.trim()}`);
    const leftover = [...tracked].filter(alive);
    const stray = [...processesOf(state)];
    assert.deepEqual(leftover, [], 'every process the cluster ran is gone after down');
    assert.deepEqual(stray, [], 'no process names the state dir after down');
    assert.equal(existsSync(state), false, 'down removed the state dir');
    const after = await runScriptsCluster(['status'], env);
    assert.match(after.stdout, /no local cluster/, 'status after down');
  } catch (err) {
    const diag = [
      notes.length ? `--- notes ---\n${notes.join('\n')}` : '',
      pool.diagnostics(),
      stateLogs(state),
      up ? `--- scripts/cluster up stderr ---\n${up.stderr}` : '',
    ].join('\n');
    throw appendDiagnostics(err, diag);
  } finally {
    for (const line of notes) t.diagnostic(line);
    await pool.closeAll();
    if (!downDone) {
      await runScriptsCluster(['down'], env, { timeout: 60_000 });
      downDone = true;
    }
    process.off('exit', emergencyDown);
    rmSync(tmp, { recursive: true, force: true });
  }
});
