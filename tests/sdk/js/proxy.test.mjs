// The RPC proxy (docs/proxy.md): centrifuge-js calls `rpc()`, herald asks the
// application backend (tests/backends/proxy_backend.py, a real HTTP server on
// Python's standard library) and hands its answer back: a result, an error
// for the client, a disconnect; anything else (500, a timeout, an answer that
// is not JSON, too large, a code out of range, the backend down) is error 100
// and the connection stays. A method of a namespace without the proxy is 108.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before } from 'node:test';

import {
  connect,
  connectionToken,
  metricSample,
  metricsText,
  repoRoot,
  serverSuite,
  testConfig,
  uniq,
  within,
} from './harness.mjs';

const backend = { child: null, port: 0, log: '' };

/** Starts the backend and resolves with its port (the line `listening PORT`). */
function startBackend() {
  const script = path.join(repoRoot, 'tests', 'backends', 'proxy_backend.py');
  const child = spawn('python3', [script], { stdio: ['ignore', 'pipe', 'pipe'] });
  backend.child = child;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    backend.log += d;
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`the backend exited (${code}): ${backend.log}`)));
  });
}

const BACKEND_PORT = await within(startBackend(), 10_000, 'the proxy backend to listen');
backend.port = BACKEND_PORT;
after(() => backend.child?.kill());

const suite = serverSuite(
  testConfig({
    rpc: {
      proxy: {
        endpoint: `http://127.0.0.1:${BACKEND_PORT}/rpc`,
        timeout: '500ms',
        http: { static_headers: { 'X-Static': 'from-herald' } },
      },
      without_namespace: { proxy_enabled: true },
      namespaces: [
        { name: 'ns', proxy_enabled: true },
        { name: 'off', proxy_enabled: false },
      ],
    },
  }),
  { label: 'herald (rpc proxy)' },
);

before(() => {
  assert.ok(backend.port > 0);
});

/** What the backend received so far. */
async function received() {
  const res = await fetch(`http://127.0.0.1:${backend.port}/requests`);
  return res.json();
}

/** `rpc()` and what it settled with: `{ data }` or `{ error }`. */
async function rpc(h, method, data) {
  try {
    return { data: (await within(h.client.rpc(method, data), 5_000, `rpc ${method}`)).data };
  } catch (error) {
    return { error };
  }
}

async function connected(label, options = {}) {
  const user = uniq(label);
  const h = suite.client({ label, token: connectionToken({ sub: user }), ...options });
  await connect(h);
  return { h, user };
}

suite.test('rpc: the backend answers, with the caller, its transport and format', async () => {
  const { h, user } = await connected('alice');
  const got = await rpc(h, 'echo', { q: 1 });
  assert.deepEqual(got.data, {
    echo: { q: 1 },
    user,
    transport: 'websocket',
    protocol: 'json',
    encoding: 'json',
  });
  const ns = await rpc(h, 'ns:echo', { q: 2 });
  assert.deepEqual(ns.data?.echo, { q: 2 }, JSON.stringify(ns));
  const calls = (await received()).filter((r) => r.call.client && r.call.user === user);
  assert.equal(calls.length, 2, JSON.stringify(calls));
  for (const r of calls) {
    assert.equal(r.content_type, 'application/json');
    assert.equal(r.static, 'from-herald', 'http.static_headers are sent');
    assert.equal(r.call.client, calls[0].call.client);
  }
});

suite.test('rpc: a protobuf client gets the same data; its protocol is protobuf', async () => {
  const { h } = await connected('bob', { protobuf: true });
  const enc = new TextEncoder();
  const got = await rpc(h, 'echo', enc.encode(JSON.stringify({ q: 3 })));
  const data = JSON.parse(new TextDecoder().decode(got.data));
  assert.equal(data.protocol, 'protobuf', JSON.stringify(data));
  assert.deepEqual(data.echo, { q: 3 });
});

suite.test('rpc: a namespace without the proxy is 108; a backend error reaches the client as it is', async () => {
  const { h } = await connected('carol');
  const off = await rpc(h, 'off:echo', {});
  assert.equal(off.error?.code, 108, JSON.stringify(off));
  const refused = await rpc(h, 'refuse', {});
  assert.equal(refused.error?.code, 1000, JSON.stringify(refused));
  assert.equal(refused.error?.message, 'refused by the backend');
  assert.equal(h.client.state, 'connected');
});

suite.test('rpc: 500, a timeout, not JSON, too large, a code out of range are error 100; the connection stays', async () => {
  const { h } = await connected('dave');
  const before = await metricsText(suite.server.apiUrl);
  for (const method of ['boom', 'slow', 'garbage', 'big', 'code100']) {
    const got = await rpc(h, method, {});
    assert.equal(got.error?.code, 100, `${method}: ${JSON.stringify(got)}`);
    assert.equal(h.client.state, 'connected', `${method}: still connected`);
  }
  const after = await metricsText(suite.server.apiUrl);
  const moved = (result) =>
    metricSample(after, 'herald_proxy_requests_total', { proxy: 'rpc', result }) -
    metricSample(before, 'herald_proxy_requests_total', { proxy: 'rpc', result });
  assert.equal(moved('status'), 1, 'boom: status');
  assert.equal(moved('timeout'), 1, 'slow: timeout');
  assert.equal(moved('invalid'), 3, 'garbage, big, code100: invalid');
  // Another client is not affected.
  const { h: other } = await connected('erin');
  assert.deepEqual((await rpc(other, 'echo', { ok: true })).data?.echo, { ok: true });
});

suite.test('rpc: a backend disconnect 4501 closes the connection, terminal', async () => {
  const { h } = await connected('frank');
  const mark = h.log.mark();
  rpc(h, 'bye', {});
  const closed = await h.log.waitFor('disconnected', { since: mark, what: 'the backend disconnect' });
  assert.equal(closed.code, 4501, `${closed.code} ${closed.reason}`);
  assert.equal(closed.reason, 'bye');
});

suite.test('rpc: the backend down is error 100 (unreachable)', async () => {
  const { h } = await connected('grace');
  backend.child.kill();
  await new Promise((resolve) => backend.child.once('exit', resolve));
  const got = await rpc(h, 'echo', {});
  assert.equal(got.error?.code, 100, JSON.stringify(got));
  const text = await metricsText(suite.server.apiUrl);
  assert.ok(metricSample(text, 'herald_proxy_requests_total', { proxy: 'rpc', result: 'unreachable' }) >= 1);
  assert.equal(h.client.state, 'connected');
});
