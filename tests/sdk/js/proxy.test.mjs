// The connect and RPC proxies (docs/proxy.md). Connect: a client without a
// token is who the backend says, from its forwarded Cookie. RPC: centrifuge-js
// calls `rpc()`, herald asks the
// application backend (tests/backends/proxy_backend.py, a real HTTP server on
// Python's standard library) and hands its answer back: a result, an error
// for the client, a disconnect; anything else (500, a timeout, an answer that
// is not JSON, too large, a code out of range, the backend down) is error 100
// and the connection stays. A method of a namespace without the proxy is 108.

import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { before } from 'node:test';

import {
  connect,
  connectionToken,
  metricSample,
  metricsText,
  serverSuite,
  testConfig,
  sleep,
  uniq,
  within,
} from './harness.mjs';
import { startBackend } from './proxy_support.mjs';

const backend = await startBackend();
const BACKEND_PORT = backend.port;

const suite = serverSuite(
  testConfig({
    client: {
      proxy: {
        connect: {
          enabled: true,
          endpoint: `http://127.0.0.1:${BACKEND_PORT}/connect`,
          timeout: '500ms',
          http_headers: ['Cookie'],
        },
      },
    },
    http_stream: { enabled: true },
    http_api: { key: 'proxy-api-key' },
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
const received = () => backend.received();

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

/** A WebSocket class that sends `headers` on the handshake (as a browser sends its cookies). */
const withHeaders = (headers) =>
  class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { headers });
    }
  };

/** A client without a token whose handshake carries `cookie` (and an Authorization nobody listed). */
function cookieClient(label, cookie, options = {}) {
  return suite.client({
    label,
    websocket: withHeaders({ Cookie: cookie, Authorization: 'Basic c2VjcmV0OnNlY3JldA==' }),
    ...options,
  });
}

suite.test('connect proxy: the backend names the user from the forwarded Cookie; its data and channels arrive', async () => {
  const user = uniq('cookie-user');
  const h = cookieClient('cookie', `theme=dark; session=${user}`);
  const ctx = await connect(h);
  assert.deepEqual(ctx.data, { hello: user }, JSON.stringify(ctx));
  const calls = (await received()).filter((r) => r.path === '/connect' && r.cookie?.includes(user));
  assert.equal(calls.length, 1, JSON.stringify(calls));
  assert.equal(calls[0].authorization, null, 'Authorization is not listed in http_headers: not forwarded');
  assert.equal(calls[0].call.transport, 'websocket');
  // The backend's `channels`: a server-side subscription that receives publications.
  const delivered = new Promise((resolve) => {
    h.client.on('publication', (c) => {
      if (c.channel === 'proxy-news' && c.data?.for === user) resolve(c);
    });
  });
  const res = await fetch(`${suite.server.apiUrl}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': 'proxy-api-key' },
    body: JSON.stringify({ channel: 'proxy-news', data: { for: user } }),
  });
  const text = await res.text();
  assert.ok(res.status === 200 && !text.includes('error'), `publish: ${res.status} ${text}`);
  await within(delivered, 5_000, 'the publication on the server-side channel proxy-news');
  const presenceUser = (await rpc(h, 'echo', {})).data?.user;
  assert.equal(presenceUser, user, 'the connection is the backend\'s user');
});

suite.test('connect proxy: no session is the backend disconnect 4501; a refusal is its error; a 500 is error 100', async () => {
  const none = suite.client({ label: 'anonymous', websocket: withHeaders({}) });
  const mark = none.log.mark();
  none.client.connect();
  const closed = await none.log.waitFor('disconnected', { since: mark, what: 'the backend disconnect' });
  assert.equal(closed.code, 4501, `${closed.code} ${closed.reason}`);

  // A refusal that is not temporary ends the SDK's connecting with its code.
  const refused = cookieClient('refuse', 'session=refuse');
  let since = refused.log.mark();
  refused.client.connect();
  const gone = await refused.log.waitFor('disconnected', { since, what: 'the refusal' });
  assert.deepEqual([gone.code, gone.reason], [1001, 'log in first']);

  // A failure is temporary: the SDK reports it and tries again.
  const failing = cookieClient('boom', 'session=boom');
  since = failing.log.mark();
  failing.client.connect();
  const err = await failing.log.waitFor('error', { since, pred: (c) => c.type === 'connect', what: 'the connect error' });
  assert.equal(err.error?.code, 100, JSON.stringify(err.error));
  failing.client.disconnect();
});

suite.test('connect proxy: a client with a token is not sent to the backend', async () => {
  const before = (await received()).filter((r) => r.path === '/connect').length;
  const { h } = await connected('with-token');
  assert.equal(h.client.state, 'connected');
  const after = (await received()).filter((r) => r.path === '/connect').length;
  assert.equal(after, before, 'the backend was not called');
});

suite.test('connect proxy: an http_stream connect forwards its Cookie too', async () => {
  const user = uniq('stream-user');
  const base = suite.server.wsUrl.replace(/^ws/, 'http').replace(/\/connection\/websocket.*$/, '');
  const res = await fetch(`${base}/connection/http_stream`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Cookie: `session=${user}` },
    body: JSON.stringify({ id: 1, connect: {} }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const { value } = await within(reader.read(), 5_000, 'the connect reply');
  const reply = JSON.parse(new TextDecoder().decode(value).split('\n')[0]);
  assert.deepEqual(reply.connect?.data, { hello: user }, JSON.stringify(reply));
  await reader.cancel();
});

suite.test('rpc: the backend down is error 100; the breaker pauses after 5, one probe reopens it', async () => {
  const { h } = await connected('grace');
  backend.child.kill();
  await new Promise((resolve) => backend.child.once('exit', resolve));
  const before = await metricsText(suite.server.apiUrl);
  for (let i = 0; i < 8; i += 1) {
    const got = await rpc(h, 'echo', {});
    assert.equal(got.error?.code, 100, `call ${i}: ${JSON.stringify(got)}`);
  }
  const after = await metricsText(suite.server.apiUrl);
  const moved = (result) =>
    metricSample(after, 'herald_proxy_requests_total', { proxy: 'rpc', result }) -
    metricSample(before, 'herald_proxy_requests_total', { proxy: 'rpc', result });
  assert.equal(moved('unreachable'), 5, 'five calls reached for the backend');
  assert.equal(moved('paused'), 3, 'then the breaker held the others back');
  assert.equal(h.client.state, 'connected');
  // The backend comes back on its port: after the pause one probe goes, and it answers.
  const again = await startBackend(['--port', String(BACKEND_PORT)]);
  await sleep(1_100);
  const got = await rpc(h, 'echo', { back: true });
  assert.deepEqual(got.data?.echo, { back: true }, JSON.stringify(got));
  again.child.kill();
});
