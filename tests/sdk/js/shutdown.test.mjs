// Graceful shutdown (design.md "Failure rules": SIGTERM: readiness turns false, new
// connections are refused, existing clients are disconnected with a reconnect code spread
// over the drain period, then exit 0).
//
// One herald with `shutdown.timeout = "4s"`, 200 connected clients (195 raw `ws` clients
// speaking the JSON protocol, 5 real centrifuge-js SDK clients) and a poller on /ready
// every ~10 ms. SIGTERM goes to the herald process itself (child.pid, as a container
// runtime does), then:
//   - every client sees close code 3001 (reason "shutdown"),
//   - the closes are spread over the first half of the timeout, not burst at once,
//   - /ready turns 503 (with a JSON reason) for good, and no /ready request sent after the
//     first close is answered 200 (first test); /ready is seen 503 *before* the first close
//     (second test: readiness must be observable as false before clients start being dropped),
//   - a new WebSocket upgrade during the drain is refused with HTTP 503,
//   - the process exits with code 0 within shutdown.timeout + 1 s (margin for the
//     process's own teardown and the OS delivering the exit status).

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

import { connectionToken, sleep, startHerald, testConfig, uniq, within } from './harness.mjs';

const TIMEOUT_MS = 4_000;
const EXIT_MARGIN_MS = 1_000;
const RAW_CLIENTS = 195;
const SDK_CLIENTS = 5;
const TOTAL = RAW_CLIENTS + SDK_CLIENTS;
const POLL_MS = 10;

const now = () => performance.timeOrigin + performance.now();

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A raw protocol client: connects, sends the connect command, resolves on its reply. */
function rawClient(wsUrl, token, label) {
  const c = { label, ws: null, close: null, connected: false, frames: [] };
  c.ready = new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    c.ws = ws;
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, connect: { token, name: 'raw' } })));
    ws.on('message', (data) => {
      const text = data.toString('utf8');
      c.frames.push(text);
      for (const line of text.trim().split('\n')) {
        if (!line.trim()) continue;
        let reply;
        try {
          reply = JSON.parse(line);
        } catch {
          continue;
        }
        if (reply.id === 1) {
          if (reply.connect) {
            c.connected = true;
            resolve(reply.connect);
          } else reject(new Error(`${label}: connect failed: ${line}`));
        }
      }
    });
    ws.on('close', (code, reason) => {
      c.close = { code, reason: reason.toString('utf8'), at: now() };
      reject(new Error(`${label}: closed before connecting (${code})`));
    });
    ws.on('error', (err) => reject(new Error(`${label}: ${err.message}`)));
  });
  c.ready.catch(() => {});
  return c;
}

/** A WebSocket class for the SDK that records every close it sees. */
function closeRecordingWebSocket(closes) {
  return class extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('close', (code, reason) => closes.push({ code, reason: reason.toString('utf8'), at: now() }));
      // Upgrades refused during the drain surface as errors: the SDK reconnects; keep quiet.
      this.on('error', () => {});
    }
  };
}

/** One WebSocket upgrade attempt: resolves with the HTTP status or the opened socket. */
function tryUpgrade(wsUrl) {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', () => resolve({ status: res.statusCode, body }));
    });
    ws.on('open', () => {
      ws.terminate();
      resolve({ status: 101, body: '' });
    });
    ws.on('error', (err) => resolve({ status: null, error: err.message }));
  });
}

/** Polls `url` every POLL_MS until stopped; records each answer with its send and answer times. */
function startPoller(url) {
  const results = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const sent = now();
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
        const body = await res.text();
        results.push({ sent, at: now(), status: res.status, body });
      } catch (err) {
        results.push({ sent, at: now(), status: null, body: String(err?.cause?.code || err?.message || err) });
      }
      const wait = POLL_MS - (now() - sent);
      if (wait > 0) await sleep(wait);
    }
  })();
  return {
    results,
    async stop() {
      running = false;
      await done;
    },
  };
}

const fmt = (ms) => `${Math.round(ms)} ms`;

/**
 * The scenario, run once for the tests below: 200 connected clients, the /ready poller,
 * SIGTERM, an upgrade attempt mid-drain, then the process exit. Returns what was observed;
 * the assertions are the tests'.
 */
async function drain() {
  const internalPort = await freePort();
  const server = await startHerald({
    config: testConfig({
      http_server: { internal_port: internalPort },
      shutdown: { timeout: `${TIMEOUT_MS / 1000}s` },
      log: { level: 'info' },
    }),
    label: 'herald (shutdown)',
  });
  const exit = new Promise((resolve) => {
    server.child.once('exit', (code, signal) => resolve({ code, signal, at: now() }));
  });
  const run = { server, raw: [], sdk: [], notes: [], logs: '' };
  let poller = null;
  try {
    // --- 200 connected clients
    for (let i = 0; i < RAW_CLIENTS; i++) {
      run.raw.push(rawClient(server.wsUrl, connectionToken({ sub: uniq(`raw${i}`) }), `raw${i}`));
    }
    await within(Promise.all(run.raw.map((c) => c.ready)), 20_000, `${RAW_CLIENTS} raw clients connected`);
    for (let i = 0; i < SDK_CLIENTS; i++) {
      const closes = [];
      const client = new Centrifuge(server.wsUrl, {
        websocket: closeRecordingWebSocket(closes),
        token: connectionToken({ sub: uniq(`sdk${i}`) }),
        minReconnectDelay: 200,
        maxReconnectDelay: 1_000,
      });
      const events = [];
      for (const name of ['connecting', 'connected', 'disconnected']) {
        client.on(name, (ctx) => events.push({ name, code: ctx.code, reason: ctx.reason, at: now() }));
      }
      const connected = new Promise((resolve) => client.once('connected', resolve));
      client.connect();
      run.sdk.push({ label: `sdk${i}`, client, closes, events, connected });
    }
    await within(Promise.all(run.sdk.map((s) => s.connected)), 10_000, `${SDK_CLIENTS} SDK clients connected`);

    // The node counts them all.
    const metrics = await (await fetch(`${server.apiUrl}/metrics`)).text();
    run.numClients = Number(/^herald_node_num_clients (\S+)$/m.exec(metrics)?.[1]);

    // --- the /ready poller, then SIGTERM to the herald process itself
    poller = startPoller(`${server.apiUrl}/ready`);
    await sleep(200);
    run.readyBefore = poller.results.filter((r) => r.status !== null).map((r) => r.status);

    run.sigAt = now();
    process.kill(server.child.pid, 'SIGTERM');

    // --- mid-drain: a new upgrade attempt while clients are still connected
    await sleep(TIMEOUT_MS / 8);
    run.openAtUpgrade = run.raw.filter((c) => c.close === null).length;
    const upgradeAt = now();
    run.upgrade = await within(tryUpgrade(server.wsUrl), 3_000, 'upgrade attempt during the drain');
    run.notes.push(
      `upgrade during the drain at +${fmt(upgradeAt - run.sigAt)} with ${run.openAtUpgrade} raw clients open: ` +
        JSON.stringify(run.upgrade),
    );

    // --- exit
    run.exited = await within(exit, TIMEOUT_MS + 10_000, 'herald exited after SIGTERM');
    run.exitAfter = run.exited.at - run.sigAt;
    await poller.stop();
    run.ready = poller.results;
    // Let the last close events of the clients be delivered.
    await sleep(100);
  } finally {
    if (poller) await poller.stop();
    for (const s of run.sdk) s.client.disconnect();
    for (const c of run.raw) c.ws?.terminate();
    run.allLogs = server.logs();
    // herald's log without the poller's access lines.
    run.logs = run.allLogs
      .split('\n')
      .filter((l) => !l.includes('path="/ready"'))
      .slice(-60)
      .join('\n');
    await server.stop();
  }

  // --- derived observations
  run.closes = [];
  run.wrong = [];
  for (const c of run.raw) {
    if (!c.close) run.wrong.push(`${c.label}: no close`);
    else if (c.close.code !== 3001) run.wrong.push(`${c.label}: close ${c.close.code} ${c.close.reason}`);
    else run.closes.push(c.close.at);
  }
  for (const s of run.sdk) {
    const first = s.closes.find((c) => c.at >= run.sigAt);
    if (!first) run.wrong.push(`${s.label}: no close`);
    else if (first.code !== 3001) run.wrong.push(`${s.label}: close ${first.code} ${first.reason}`);
    else run.closes.push(first.at);
    const ev = s.events.find((e) => e.at >= run.sigAt && (e.name === 'connecting' || e.name === 'disconnected'));
    if (!ev || ev.name !== 'connecting' || ev.code !== 3001) {
      run.wrong.push(`${s.label}: SDK event after SIGTERM ${JSON.stringify(ev)} (want connecting 3001: a reconnect code)`);
    }
  }
  run.reasons = [...new Set(run.raw.filter((c) => c.close?.code === 3001).map((c) => c.close.reason))];
  run.closes.sort((a, b) => a - b);
  run.firstClose = run.closes[0];
  run.lastClose = run.closes[run.closes.length - 1];
  run.densest = 0;
  for (let i = 0, j = 0; i < run.closes.length; i++) {
    while (run.closes[i] - run.closes[j] > 100) j++;
    run.densest = Math.max(run.densest, i - j + 1);
  }
  run.answers = run.ready.filter((r) => r.status !== null);
  run.first503 = run.answers.find((r) => r.status === 503);
  const rel = (t) => (t === undefined ? 'none' : `${t >= run.sigAt ? '+' : ''}${fmt(t - run.sigAt)}`);
  // herald's own clock: when it logged the start of the drain.
  const drainLine = /^(\S+Z)\s.*\bdraining\b/m.exec(run.allLogs);
  run.drainLogged = drainLine ? Date.parse(drainLine[1]) : undefined;
  run.notes.push(
    `closes: first ${rel(run.firstClose)}, last ${rel(run.lastClose)}, span ${fmt(run.lastClose - run.firstClose)}, ` +
      `densest 100 ms window ${run.densest}; exit ${rel(run.exited.at)} code ${run.exited.code} signal ${run.exited.signal}`,
    `/ready: ${run.answers.length} answers; first 503 sent ${rel(run.first503?.sent)}, answered ${rel(run.first503?.at)}; ` +
      `herald logged 'draining' at ${rel(run.drainLogged)}`,
  );
  return run;
}

let scenario = null;
const observed = () => (scenario ??= drain());

/** Runs `fn(run)`; a failure carries the observations and herald's log tail. */
async function check(fn) {
  const run = await observed();
  try {
    await fn(run);
  } catch (err) {
    const diag = `\n${run.notes.join('\n')}\n${run.logs}`;
    if (err && typeof err === 'object') {
      err.message = `${err.message}${diag}`;
      if (typeof err.stack === 'string') err.stack = `${err.stack}${diag}`;
    }
    throw err;
  }
}

test(
  `SIGTERM: ${TOTAL} clients closed with 3001 spread over half of shutdown.timeout, upgrades 503, exit 0`,
  { timeout: 60_000 },
  () =>
    check((run) => {
      console.log(run.notes.join('\n'));
      assert.equal(run.numClients, TOTAL, 'herald_node_num_clients before SIGTERM');
      assert.ok(run.readyBefore.length > 0 && run.readyBefore.every((s) => s === 200), `/ready 200 while serving: ${run.readyBefore}`);

      // Every client saw 3001 "shutdown"; the SDK took it as a reconnect code.
      assert.deepEqual(run.wrong, [], `every client closed with 3001:\n  ${run.wrong.slice(0, 20).join('\n  ')}`);
      assert.deepEqual(run.reasons, ['shutdown'], 'close reason of 3001');

      // Spread over the first half of the timeout, not a burst.
      const span = run.lastClose - run.firstClose;
      assert.ok(span > 1_000, `closes spread in time: span ${fmt(span)} must exceed 1 s (timeout ${TIMEOUT_MS} ms)`);
      assert.ok(run.densest <= TOTAL / 5, `no burst: at most ${TOTAL / 5} closes in any 100 ms window, got ${run.densest}`);
      assert.ok(
        run.lastClose - run.sigAt <= TIMEOUT_MS / 2 + 500,
        `every client closed within the first half of the timeout (+500 ms): last at +${fmt(run.lastClose - run.sigAt)}`,
      );

      // New upgrades refused during the drain.
      assert.ok(run.openAtUpgrade > 0, `the upgrade attempt ran during the drain (${run.openAtUpgrade} raw clients open)`);
      assert.equal(run.upgrade.status, 503, `a WebSocket upgrade during the drain gets HTTP 503: ${JSON.stringify(run.upgrade)}`);

      // /ready turned 503 with a JSON reason, at the latest when the closes began, and for good.
      const { first503 } = run;
      assert.ok(first503, `/ready answered 503 during the drain: ${JSON.stringify(run.ready.slice(-5))}`);
      assert.ok(JSON.parse(first503.body).reason, `503 body is JSON with a reason: ${first503.body}`);
      const lateOk = run.answers.filter((r) => r.at >= first503.at && r.status !== 503);
      assert.deepEqual(lateOk, [], '/ready never answers anything but 503 once it turned');
      const okAfterClose = run.answers.filter((r) => r.sent >= run.firstClose && r.status === 200);
      assert.deepEqual(okAfterClose, [], '/ready: no 200 to a request sent after the first client was closed');

      // Exit 0 in time.
      assert.equal(run.exited.signal, null, `herald exited on its own, not by signal ${run.exited.signal}`);
      assert.equal(run.exited.code, 0, 'herald exit code after SIGTERM');
      assert.ok(
        run.exitAfter <= TIMEOUT_MS + EXIT_MARGIN_MS,
        `herald exited within shutdown.timeout + ${EXIT_MARGIN_MS} ms: took ${fmt(run.exitAfter)}`,
      );
    }),
);

test('SIGTERM: /ready answers 503 before the first client is closed', { timeout: 60_000 }, () =>
  check((run) => {
    const { first503, firstClose, sigAt } = run;
    assert.ok(first503, '/ready answered 503 during the drain');
    assert.ok(
      first503.at < firstClose,
      `/ready answered 503 at +${fmt(first503.at - sigAt)}, the first client was closed at +${fmt(firstClose - sigAt)}: ` +
        'readiness must be seen false before clients are dropped (so a load balancer stops routing here ' +
        'before they reconnect)',
    );
  }),
);
