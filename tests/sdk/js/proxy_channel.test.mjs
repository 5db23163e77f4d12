// The channel and refresh proxies (docs/proxy.md) through centrifuge-js,
// against a real HTTP backend (tests/backends/proxy_backend.py):
// - subscribe: a tokenless subscribe in a namespace with
//   subscribe_proxy_enabled is the backend's to allow (its info and data
//   arrive), refuse (its code), or end with a disconnect; a failure is
//   error 100 and the SDK tries again. A subscribe with a token, or to a
//   user-limited channel, is not sent to it.
// - publish: the backend allows, rewrites (data and tags), refuses, or
//   keeps a publication out of history.
// - sub_refresh and refresh: a subscription's or the connection's expiry
//   asks the backend, which extends it or ends it (unsubscribe 2501, 3005).
// - named proxies, emulated headers and the connection's meta.

import assert from 'node:assert/strict';
import WebSocket from 'ws';

import {
  apiCall,
  connect,
  connectionToken,
  metricSample,
  metricsText,
  serverSuite,
  sleep,
  subscribe,
  subscriptionToken,
  testConfig,
  uniq,
  within,
} from './harness.mjs';
import { startBackend } from './proxy_support.mjs';

const backend = await startBackend();
const url = (p) => `http://127.0.0.1:${backend.port}${p}`;
const API_KEY = 'channel-proxy-key';
const kept = { history_size: 10, history_ttl: '60s' };

const suite = serverSuite(
  testConfig({
    client: {
      // Subscription expiry is looked at on this tick.
      presence_update_interval: '300ms',
      proxy: {
        connect: { enabled: true, endpoint: url('/connect'), timeout: '500ms', http_headers: ['Cookie'] },
        refresh: { enabled: true, endpoint: url('/refresh'), timeout: '500ms' },
      },
    },
    http_api: { key: API_KEY },
    channel: {
      proxy: {
        subscribe: { endpoint: url('/subscribe'), timeout: '500ms' },
        publish: { endpoint: url('/publish'), timeout: '500ms' },
        sub_refresh: { endpoint: url('/sub_refresh'), timeout: '500ms' },
      },
      namespaces: [
        { name: 'sp', subscribe_proxy_enabled: true, sub_refresh_proxy_enabled: true, presence: true, allow_presence_for_subscriber: true },
        { name: 'pp', publish_proxy_enabled: true, allow_subscribe_for_client: true, allow_history_for_subscriber: true, ...kept },
        { name: 'ul', subscribe_proxy_enabled: true, allow_user_limited_channels: true },
        { name: 'named', subscribe_proxy_enabled: true, subscribe_proxy_name: 'tenant' },
      ],
    },
    proxies: [
      {
        name: 'tenant',
        endpoint: url('/subscribe?via=tenant'),
        timeout: '500ms',
        emulated_headers: ['X-Tenant'],
        include_connection_meta: true,
      },
      { name: 'meta-rpc', endpoint: url('/rpc'), timeout: '500ms', include_connection_meta: true },
    ],
    rpc: { namespaces: [{ name: 'meta', proxy_enabled: true, proxy_name: 'meta-rpc' }] },
  }),
  { label: 'herald (channel proxies)' },
);

async function connected(label, options = {}) {
  const user = uniq(label);
  const h = suite.client({ label, token: connectionToken({ sub: user }), ...options });
  await connect(h);
  return { h, user };
}

/** The backend's requests to `path` about `channel`. */
async function callsTo(path, channel) {
  return (await backend.received()).filter((r) => r.path.split('?')[0] === path && r.call.channel === channel);
}

/** A WebSocket class that sends `headers` on the handshake (as a browser sends its cookies). */
const withHeaders = (headers) =>
  class extends WebSocket {
    constructor(address, protocols) {
      super(address, protocols, { headers });
    }
  };

suite.test('subscribe proxy: the backend allows; its info and data arrive; the call names the user', async () => {
  const { h, user } = await connected('alice');
  const channel = `sp:${uniq('room')}`;
  const s = suite.subscription(h, channel);
  const ctx = await subscribe(s);
  assert.deepEqual(ctx.data, { welcome: channel }, JSON.stringify(ctx));
  const calls = await callsTo('/subscribe', channel);
  assert.equal(calls.length, 1, JSON.stringify(calls));
  assert.equal(calls[0].call.user, user);
  assert.equal(calls[0].call.transport, 'websocket');
  assert.ok(calls[0].call.client, 'the call names the client');
  // The backend's info is the subscription's chan_info.
  const presence = await within(s.sub.presence(), 5_000, 'presence');
  const infos = Object.values(presence.clients).map((c) => c.chanInfo);
  assert.deepEqual(infos, [{ granted: user }], JSON.stringify(presence));
});

suite.test('subscribe proxy: a refusal with its code, a failure is 100 and retried, a disconnect closes', async () => {
  const { h } = await connected('bob');
  const refused = suite.subscription(h, `sp:refuse-${uniq('x')}`);
  let since = refused.log.mark();
  refused.sub.subscribe();
  const gone = await refused.log.waitFor('unsubscribed', { since, what: 'the refusal' });
  assert.equal(gone.code, 403, JSON.stringify(gone));

  const failing = suite.subscription(h, `sp:boom-${uniq('x')}`);
  since = failing.log.mark();
  failing.sub.subscribe();
  const err = await failing.log.waitFor('error', { since, what: 'error 100' });
  assert.equal(err.error?.code, 100, JSON.stringify(err));
  // Temporary: the SDK subscribes again (the backend is asked again).
  await within(
    (async () => {
      while ((await callsTo('/subscribe', failing.sub.channel)).length < 2) await sleep(100);
    })(),
    5_000,
    'a second subscribe attempt',
  );
  failing.sub.unsubscribe();
  assert.equal(h.client.state, 'connected');

  const mark = h.log.mark();
  suite.subscription(h, `sp:bye-${uniq('x')}`).sub.subscribe();
  const closed = await h.log.waitFor('disconnected', { since: mark, what: 'the backend disconnect' });
  assert.equal(closed.code, 4501, JSON.stringify(closed));
});

suite.test('subscribe proxy: not asked for a subscribe with a token, nor for a user-limited channel', async () => {
  const { h, user } = await connected('carol');
  const channel = `sp:${uniq('tokened')}`;
  const s = suite.subscription(h, channel, { token: subscriptionToken({ sub: user, channel }) });
  await subscribe(s);
  const limited = `ul:room#${user}`;
  await subscribe(suite.subscription(h, limited));
  assert.equal((await callsTo('/subscribe', channel)).length, 0, 'a token decides');
  assert.equal((await callsTo('/subscribe', limited)).length, 0, 'the user list decides');
});

suite.test('publish proxy: the backend rewrites data and tags, refuses, or keeps it out of history', async () => {
  const { h } = await connected('dave');
  const rewrite = suite.subscription(h, `pp:rewrite-${uniq('x')}`);
  await subscribe(rewrite);
  const delivered = rewrite.log.waitFor('publication', { what: 'the rewritten publication' });
  await within(rewrite.sub.publish({ x: 1 }), 5_000, 'publish');
  const pub = await delivered;
  assert.deepEqual(pub.data, { rewritten: { x: 1 }, by: 'backend' }, JSON.stringify(pub));
  assert.deepEqual(pub.tags, { t: '1' });

  const refuse = suite.subscription(h, `pp:refuse-${uniq('x')}`);
  await subscribe(refuse);
  await assert.rejects(refuse.sub.publish({ x: 2 }), (e) => e.code === 1002 && e.message === 'not published');

  const plain = `pp:${uniq('plain')}`;
  const skip = `pp:skip-${uniq('x')}`;
  for (const channel of [plain, skip]) {
    const s = suite.subscription(h, channel);
    await subscribe(s);
    await within(s.sub.publish({ n: 1 }), 5_000, `publish to ${channel}`);
  }
  const history = async (channel) =>
    (await apiCall(suite.server.apiUrl, API_KEY, 'history', { channel, limit: 10 })).result.publications ?? [];
  assert.equal((await history(plain)).length, 1, 'allowed: kept');
  assert.equal((await history(skip)).length, 0, 'skip_history: not kept');
  const calls = await callsTo('/publish', plain);
  assert.deepEqual(calls[0]?.call.data, { n: 1 }, JSON.stringify(calls));
});

suite.test('sub_refresh proxy: an expiring subscription is extended by the backend, or ended (2501)', async () => {
  const { h } = await connected('erin');
  const keep = suite.subscription(h, `sp:expiring-keep-${uniq('x')}`);
  await subscribe(keep);
  const keepMark = keep.log.mark();
  const end = suite.subscription(h, `sp:expiring-end-${uniq('x')}`);
  await subscribe(end);
  const since = end.log.mark();
  const ended = await end.log.waitFor(['subscribing', 'unsubscribed'], { since, timeout: 8_000, what: 'the expiry' });
  assert.equal(ended.code, 2501, JSON.stringify(ended));
  // Well past the first expiry: the extended one is still subscribed, with no event.
  await sleep(1_500);
  assert.equal(keep.sub.state, 'subscribed');
  assert.equal(keep.log.all('subscribing', keepMark).length, 0, 'no resubscribe');
  assert.ok((await callsTo('/sub_refresh', keep.sub.channel)).length >= 1, 'the backend was asked');
});

suite.test('refresh proxy: the backend extends the connection, or ends it (3005); the client is not told its expiry', async () => {
  const user = uniq('short');
  const h = suite.client({ label: 'short', websocket: withHeaders({ Cookie: `session=${user}` }) });
  const ctx = await connect(h);
  assert.ok(!ctx.ttl, `no ttl for the client: ${JSON.stringify(ctx)}`);
  await within(
    (async () => {
      while (!(await backend.received()).some((r) => r.path === '/refresh' && r.call.user === user)) await sleep(200);
    })(),
    8_000,
    'the refresh call',
  );
  await sleep(500);
  assert.equal(h.client.state, 'connected', 'extended by the backend');

  const ending = suite.client({ label: 'ending', websocket: withHeaders({ Cookie: `session=${uniq('ending')}` }) });
  const since = ending.log.mark();
  await connect(ending);
  const gone = await ending.log.waitFor(['connecting', 'disconnected'], {
    since: since + 1,
    pred: (c) => c.code === 3005,
    timeout: 8_000,
    what: '3005 from the backend',
  });
  assert.equal(gone.code, 3005, JSON.stringify(gone));
});

suite.test('named proxy: a namespace picks it; emulated headers and the connection meta go with the call', async () => {
  const session = uniq('tenant-user');
  const h = suite.client({
    label: 'tenant',
    websocket: withHeaders({ Cookie: `session=${session}` }),
    headers: { 'X-Tenant': 'acme' },
  });
  await connect(h);
  const channel = `named:${uniq('room')}`;
  await subscribe(suite.subscription(h, channel));
  const calls = await callsTo('/subscribe', channel);
  assert.equal(calls.length, 1, JSON.stringify(calls));
  assert.equal(calls[0].path, '/subscribe?via=tenant', 'the named proxy');
  assert.equal(calls[0].tenant, 'acme', 'the emulated header');
  assert.deepEqual(calls[0].call.meta, { session }, 'include_connection_meta');
  // An RPC namespace picks a named proxy too; the default rpc proxy is absent.
  const reply = await within(h.client.rpc('meta:echo', { q: 1 }), 5_000, 'rpc');
  assert.deepEqual(reply.data.meta, { session });
  await assert.rejects(h.client.rpc('echo', {}), (e) => e.code === 108);
});

suite.test('proxy metrics count each proxy by result', async () => {
  const text = await metricsText(suite.server.apiUrl);
  for (const proxy of ['connect', 'subscribe', 'publish', 'sub_refresh', 'refresh']) {
    const ok = metricSample(text, 'herald_proxy_requests_total', { proxy, result: 'ok' });
    assert.ok(ok >= 1, `${proxy}: ${ok}`);
  }
});
