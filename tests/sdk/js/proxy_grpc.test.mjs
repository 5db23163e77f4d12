// Every proxy kind over gRPC (docs/proxy.md, "gRPC proxies"): the endpoints are
// `grpc://127.0.0.1:PORT` of tests/backends/proxy_grpc_backend.py, the gRPC twin
// of the HTTP backend (grpcio, run with tests/sdk/python/.venv's Python), and
// centrifuge-js sees what it sees over HTTP:
// - connect: a client without a token is who the backend names from the Cookie
//   herald forwards as `cookie` metadata; the backend's data arrives.
// - rpc: a result, an error (1000), a disconnect (4501); a gRPC status is 100
//   and the connection stays.
// - subscribe: allowed with the backend's data, or refused with its code (403).
// - publish: the backend rewrites the publication's data and tags.
// - sub_refresh: an expiring subscription is extended (or ended, 2501).
// - refresh: an expiring connection is extended, or ended (3005).
// - herald_proxy_requests_total{proxy,result="ok"} moved for every kind.

import assert from 'node:assert/strict';
import WebSocket from 'ws';

import {
  connect,
  connectionToken,
  metricSample,
  metricsText,
  serverSuite,
  sleep,
  subscribe,
  testConfig,
  uniq,
  within,
} from './harness.mjs';
import { startGrpcBackend } from './proxy_support.mjs';

const backend = await startGrpcBackend();
const endpoint = `grpc://127.0.0.1:${backend.port}`;
const proxy = { endpoint, timeout: '1s' };

const suite = serverSuite(
  testConfig({
    client: {
      // Subscription expiry is looked at on this tick.
      presence_update_interval: '300ms',
      proxy: {
        connect: { enabled: true, ...proxy, http_headers: ['Cookie'] },
        refresh: { enabled: true, ...proxy },
      },
    },
    channel: {
      proxy: { subscribe: proxy, publish: proxy, sub_refresh: proxy },
      namespaces: [
        { name: 'sp', subscribe_proxy_enabled: true, sub_refresh_proxy_enabled: true },
        { name: 'pp', publish_proxy_enabled: true, allow_subscribe_for_client: true },
      ],
    },
    rpc: { proxy, without_namespace: { proxy_enabled: true } },
  }),
  { label: 'herald (gRPC proxies)' },
);

const KINDS = ['connect', 'rpc', 'subscribe', 'publish', 'sub_refresh', 'refresh'];
// Taken by the first test, before any proxy call.
let metricsBefore = '';

/** The backend's calls of gRPC method `method` matching `pred`. */
async function callsOf(method, pred = () => true) {
  return (await backend.received()).filter((r) => r.method === method && pred(r));
}

/** Waits until the backend received a call of `method` matching `pred`. */
async function waitForCall(method, pred, what, timeout = 8_000) {
  return within(
    (async () => {
      for (;;) {
        const calls = await callsOf(method, pred);
        if (calls.length) return calls;
        await sleep(100);
      }
    })(),
    timeout,
    what,
  );
}

/** `rpc()` and what it settled with: `{ data }` or `{ error }`. */
async function rpc(h, method, data) {
  try {
    return { data: (await within(h.client.rpc(method, data), 5_000, `rpc ${method}`)).data };
  } catch (error) {
    return { error: { code: error.code, message: error.message } };
  }
}

async function connected(label) {
  const user = uniq(label);
  const h = suite.client({ label, token: connectionToken({ sub: user }) });
  await connect(h);
  return { h, user };
}

/** A WebSocket class that sends `headers` on the handshake (as a browser sends its cookies). */
const withHeaders = (headers) =>
  class extends WebSocket {
    constructor(address, protocols) {
      super(address, protocols, { headers });
    }
  };

suite.test('connect: the Cookie goes as metadata; the backend names the user and its data arrives', async () => {
  metricsBefore = await metricsText(suite.server.apiUrl);
  const user = uniq('cookie-user');
  const h = suite.client({ label: 'cookie', websocket: withHeaders({ Cookie: `theme=dark; session=${user}` }) });
  const ctx = await connect(h);
  assert.deepEqual(ctx.data, { hello: user }, `connected context: ${JSON.stringify(ctx)}`);
  const calls = await callsOf('Connect', (r) => r.metadata.cookie?.includes(user));
  assert.equal(calls.length, 1, `Connect calls: ${JSON.stringify(calls)}`);
  assert.equal(calls[0].metadata.cookie, `theme=dark; session=${user}`, JSON.stringify(calls[0]));
  assert.equal(calls[0].call.transport, 'websocket', JSON.stringify(calls[0]));
  // The connection is the backend's user.
  const echo = await rpc(h, 'echo', {});
  assert.equal(echo.data?.user, user, `echo: ${JSON.stringify(echo)}`);
});

suite.test('rpc: echo, a refusal 1000, a gRPC status is 100 and the connection stays, a disconnect 4501', async () => {
  const { h, user } = await connected('rpc');
  const echo = await rpc(h, 'echo', { q: 1 });
  assert.deepEqual(
    echo.data,
    { echo: { q: 1 }, user, transport: 'websocket', protocol: 'json', encoding: 'json' },
    `echo: ${JSON.stringify(echo)}`,
  );
  const refused = await rpc(h, 'refuse', {});
  assert.deepEqual(refused.error, { code: 1000, message: 'refused by the backend' }, `refuse: ${JSON.stringify(refused)}`);
  assert.equal(h.client.state, 'connected', 'connected after the refusal');
  const boom = await rpc(h, 'boom', {});
  assert.equal(boom.error?.code, 100, `boom: ${JSON.stringify(boom)}`);
  assert.equal(h.client.state, 'connected', 'connected after the gRPC status');
  const again = await rpc(h, 'echo', { q: 2 });
  assert.deepEqual(again.data?.echo, { q: 2 }, `echo after boom: ${JSON.stringify(again)}`);

  const mark = h.log.mark();
  rpc(h, 'bye', {});
  const closed = await h.log.waitFor('disconnected', { since: mark, what: 'the backend disconnect' });
  assert.deepEqual([closed.code, closed.reason], [4501, 'bye'], `disconnected: ${JSON.stringify(closed)}`);
});

suite.test('subscribe: the backend allows with its data, or refuses with 403', async () => {
  const { h, user } = await connected('sub');
  const channel = `sp:${uniq('room')}`;
  const ctx = await subscribe(suite.subscription(h, channel));
  assert.deepEqual(ctx.data, { welcome: channel }, `subscribed context: ${JSON.stringify(ctx)}`);
  const calls = await callsOf('Subscribe', (r) => r.call.channel === channel);
  assert.equal(calls.length, 1, `Subscribe calls: ${JSON.stringify(calls)}`);
  assert.equal(calls[0].call.user, user, JSON.stringify(calls[0]));

  const refused = suite.subscription(h, `sp:refuse-${uniq('x')}`);
  const since = refused.log.mark();
  refused.sub.subscribe();
  const gone = await refused.log.waitFor('unsubscribed', { since, what: 'the refusal' });
  assert.equal(gone.code, 403, `unsubscribed: ${JSON.stringify(gone)}`);
  assert.equal(h.client.state, 'connected', 'a refused subscribe keeps the connection');
});

suite.test('publish: the backend rewrites the data and tags', async () => {
  const { h } = await connected('pub');
  const s = suite.subscription(h, `pp:rewrite-${uniq('x')}`);
  await subscribe(s);
  const delivered = s.log.waitFor('publication', { what: 'the rewritten publication' });
  await within(s.sub.publish({ x: 1 }), 5_000, 'publish');
  const pub = await delivered;
  assert.deepEqual(
    [pub.data, pub.tags],
    [{ rewritten: { x: 1 }, by: 'backend' }, { t: '1' }],
    `publication: ${JSON.stringify(pub)}`,
  );
  const calls = await callsOf('Publish', (r) => r.call.channel === s.sub.channel);
  assert.deepEqual(calls.map((r) => r.call.data), [{ x: 1 }], `Publish calls: ${JSON.stringify(calls)}`);
});

suite.test('sub_refresh and refresh: expiring subscriptions and connections are extended, or ended', async () => {
  // Everything here expires 2 s after it starts: start it all, then look.
  const { h } = await connected('subrefresh');
  const keep = suite.subscription(h, `sp:expiring-keep-${uniq('x')}`);
  const end = suite.subscription(h, `sp:expiring-end-${uniq('x')}`);
  await Promise.all([subscribe(keep), subscribe(end)]);
  const keepMark = keep.log.mark();
  const endMark = end.log.mark();

  const shortUser = uniq('short');
  const short = suite.client({ label: 'short', websocket: withHeaders({ Cookie: `session=${shortUser}` }) });
  const ctx = await connect(short);
  assert.ok(!ctx.ttl, `no ttl for the client (the refresh proxy extends): ${JSON.stringify(ctx)}`);
  const shortMark = short.log.mark();

  const ending = suite.client({ label: 'ending', websocket: withHeaders({ Cookie: `session=${uniq('ending')}` }) });
  const endingMark = ending.log.mark();
  await connect(ending);

  const ended = await end.log.waitFor(['subscribing', 'unsubscribed'], {
    since: endMark,
    timeout: 8_000,
    what: 'the end of the expiring-end subscription',
  });
  assert.equal(ended.code, 2501, `expiring-end: ${JSON.stringify(ended)}`);
  const gone = await ending.log.waitFor(['connecting', 'disconnected'], {
    since: endingMark + 1,
    pred: (c) => c.code === 3005,
    timeout: 8_000,
    what: '3005 from the backend',
  });
  assert.equal(gone.code, 3005, `ending: ${JSON.stringify(gone)}`);
  await waitForCall('Refresh', (r) => r.call.user === shortUser, 'the Refresh call of the short connection');
  await waitForCall('SubRefresh', (r) => r.call.channel === keep.sub.channel, 'the SubRefresh call of the kept subscription');
  // Well past the first expiry (2 s): the extended ones are still there, with no event.
  await sleep(1_500);
  assert.equal(keep.sub.state, 'subscribed', `kept subscription: ${keep.log.summary()}`);
  assert.deepEqual(keep.log.all('subscribing', keepMark), [], `kept subscription: ${keep.log.summary()}`);
  assert.equal(short.client.state, 'connected', `short connection: ${short.log.summary()}`);
  assert.deepEqual(
    short.log.all('disconnected', shortMark).concat(short.log.all('connecting', shortMark)),
    [],
    `short connection: ${short.log.summary()}`,
  );
});

suite.test('herald_proxy_requests_total{result="ok"} moved for every kind', async () => {
  const text = await metricsText(suite.server.apiUrl);
  const moved = KINDS.map((proxyName) => {
    const labels = { proxy: proxyName, result: 'ok' };
    return [proxyName, (metricSample(text, 'herald_proxy_requests_total', labels) ?? 0) - (metricSample(metricsBefore, 'herald_proxy_requests_total', labels) ?? 0)];
  });
  const series = text.split('\n').filter((l) => l.startsWith('herald_proxy_requests_total')).join('\n');
  for (const [proxyName, n] of moved) assert.ok(n >= 1, `${proxyName} moved by ${n}:\n${series}`);
});
