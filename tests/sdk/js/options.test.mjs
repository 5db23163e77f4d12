// Issue 21's remaining Centrifugo options through centrifuge-js, each by what
// a client sees:
// - cache recovery (force_recovery_mode = "cache"): the latest publication on
//   subscribe, with `since: {}`, or for every subscriber with
//   auto_cache_recover;
// - channel_regex: other names are error 107 for subscribe and publish;
// - client.subscribe_to_user_personal_channel: the personal channel arrives
//   as a server-side subscription; single_connection closes the older
//   connection with 3504;
// - client.disallow_anonymous_connection_tokens: 3507;
// - client.user_id_http_header: the user of a tokenless connection;
// - client.connect_include_server_time: the connect result's `time`;
// - client.connection_limit and client.connection_rate_limit: HTTP 503 and
//   their metric;
// - the subscribe `data` reaches the subscribe proxy (the real Python backend).

import assert from 'node:assert/strict';
import WebSocket from 'ws';

import {
  apiCall,
  connect,
  connectionToken,
  diagnosedTest,
  EventLog,
  metricSample,
  metricsText,
  serverSuite,
  signHs256,
  sleep,
  startHerald,
  subscribe,
  testConfig,
  uniq,
  within,
} from './harness.mjs';
import { startBackend } from './proxy_support.mjs';

const backend = await startBackend();
const API_KEY = 'options-key';
const USER_HEADER = 'X-Herald-Test-User';
const open = { allow_subscribe_for_client: true };

const suite = serverSuite(
  testConfig({
    client: {
      connect_include_server_time: true,
      disallow_anonymous_connection_tokens: true,
      user_id_http_header: USER_HEADER,
      subscribe_to_user_personal_channel: {
        enabled: true,
        personal_channel_namespace: 'personal',
        single_connection: true,
      },
    },
    http_api: { key: API_KEY },
    channel: {
      proxy: { subscribe: { endpoint: `http://127.0.0.1:${backend.port}/subscribe`, timeout: '1s' } },
      namespaces: [
        {
          name: 'state',
          ...open,
          history_size: 1,
          history_ttl: '60s',
          force_recovery: true,
          force_recovery_mode: 'cache',
          auto_cache_recover: true,
        },
        { name: 'cached', ...open, history_size: 10, history_ttl: '60s', allow_recovery: true, force_recovery_mode: 'cache' },
        { name: 'digits', ...open, allow_publish_for_client: true, channel_regex: '^[0-9]+$' },
        { name: 'personal', presence: true },
        { name: 'sp', subscribe_proxy_enabled: true },
      ],
    },
  }),
  { label: 'herald (options)' },
);

const publish = (channel, data) => apiCall(suite.server.apiUrl, API_KEY, 'publish', { channel, data });

async function connected(label, user = uniq(label), options = {}) {
  const h = suite.client({ label, token: connectionToken({ sub: user }), ...options });
  // Server-side subscriptions are told on the client itself.
  h.server = new EventLog(h.client, ['subscribed', 'publication'], `${label} server-side`);
  await connect(h);
  return { h, user };
}

/** A WebSocket class that sends `headers` on the upgrade (as a proxy in front would). */
const withHeaders = (headers) =>
  class extends WebSocket {
    constructor(address, protocols) {
      super(address, protocols, { headers });
    }
  };

// ---- cache recovery -------------------------------------------------------

suite.test('cache recovery: with auto_cache_recover every subscribe gets only the latest publication', async () => {
  const channel = `state:${uniq('now-playing')}`;
  for (const n of [1, 2, 3]) await publish(channel, { n });
  const { h } = await connected('listener');
  const s = suite.subscription(h, channel);
  const subscribed = await subscribe(s);
  assert.equal(subscribed.recovered, true, JSON.stringify(subscribed));
  assert.equal(subscribed.recoverable, true);
  // The publication handler runs right after `subscribed`.
  await sleep(200);
  assert.deepEqual(s.log.all('publication').map((p) => p.data), [{ n: 3 }]);

  // Live publications follow as usual.
  const live = s.log.waitFor('publication', { since: s.log.mark(), what: 'the live publication' });
  await publish(channel, { n: 4 });
  assert.deepEqual((await live).data, { n: 4 });

  // A resubscribe gets the value that is latest by then.
  s.sub.unsubscribe();
  await publish(channel, { n: 5 });
  const mark = s.log.mark();
  const again = await subscribe(s);
  assert.equal(again.recovered, true, JSON.stringify(again));
  await sleep(200);
  assert.deepEqual(s.log.all('publication', mark).map((p) => p.data), [{ n: 5 }]);
});

suite.test('cache recovery: without auto, a recoverable subscriber asking with since {} gets the latest; one not asking gets none', async () => {
  const channel = `cached:${uniq('price')}`;
  for (const n of [1, 2, 3]) await publish(channel, { n });
  const { h } = await connected('asker');
  const asking = suite.subscription(h, channel, { since: {}, recoverable: true });
  const ctx = await subscribe(asking);
  assert.equal(ctx.wasRecovering, true, JSON.stringify(ctx));
  assert.equal(ctx.recovered, true, JSON.stringify(ctx));
  const { h: other } = await connected('plain');
  const plain = suite.subscription(other, channel);
  await subscribe(plain);
  await sleep(200);
  assert.deepEqual(asking.log.all('publication').map((p) => p.data), [{ n: 3 }]);
  assert.deepEqual(plain.log.all('publication'), []);
});

suite.test('cache recovery: nothing kept yet is recovered: false, and the first publication then arrives live', async () => {
  const channel = `state:${uniq('empty')}`;
  const { h } = await connected('early');
  const s = suite.subscription(h, channel);
  const ctx = await subscribe(s);
  assert.equal(ctx.recovered, false, JSON.stringify(ctx));
  const live = s.log.waitFor('publication', { what: 'the first publication' });
  await publish(channel, { first: true });
  assert.deepEqual((await live).data, { first: true });
});

// ---- channel_regex --------------------------------------------------------

suite.test('channel_regex: a name that does not match is error 107 for subscribe and publish', async () => {
  const { h } = await connected('regex');
  const bad = suite.subscription(h, 'digits:abc');
  const since = bad.log.mark();
  bad.sub.subscribe();
  const gone = await bad.log.waitFor('unsubscribed', { since, what: 'the refusal' });
  assert.equal(gone.code, 107, JSON.stringify(gone));
  await assert.rejects(h.client.publish('digits:12x', { x: 1 }), (e) => e.code === 107);

  const good = suite.subscription(h, 'digits:123');
  await subscribe(good);
  const delivered = good.log.waitFor('publication', { what: 'the publication' });
  await within(h.client.publish('digits:123', { x: 2 }), 5_000, 'publish');
  assert.deepEqual((await delivered).data, { x: 2 });
});

// ---- the personal channel --------------------------------------------------

suite.test('personal channel: subscribed server-side at connect; the server API reaches the user there', async () => {
  const { h, user } = await connected('personal');
  const channel = `personal:#${user}`;
  const sub = await h.server.waitFor('subscribed', { pred: (c) => c.channel === channel, what: 'the personal channel' });
  assert.equal(sub.channel, channel);
  const delivered = h.server.waitFor('publication', { pred: (c) => c.channel === channel, what: 'the personal publication' });
  await publish(channel, { note: 'for you' });
  assert.deepEqual((await delivered).data, { note: 'for you' });
});

suite.test('personal channel single_connection: a new connection of the user closes the older one with 3504', async () => {
  const user = uniq('single');
  const { h: first } = await connected('first', user);
  await first.server.waitFor('subscribed', { what: 'the first personal subscription' });
  const mark = first.log.mark();
  const { h: second } = await connected('second', user);
  const closed = await first.log.waitFor('disconnected', { since: mark, what: 'the older connection closed' });
  assert.equal(closed.code, 3504, JSON.stringify(closed));
  assert.equal(first.client.state, 'disconnected', 'terminal: no reconnect');
  await sleep(300);
  assert.equal(second.client.state, 'connected');
  // Another user is not affected.
  const { h: other } = await connected('other');
  await sleep(300);
  assert.equal(other.client.state, 'connected');
  assert.equal(second.client.state, 'connected');
});

// ---- connect credentials ----------------------------------------------------

suite.test('disallow_anonymous_connection_tokens: a token without sub is closed with 3507', async () => {
  const h = suite.client({ label: 'anonymous', token: signHs256({ exp: Math.floor(Date.now() / 1000) + 600 }) });
  const since = h.log.mark();
  h.client.connect();
  const closed = await h.log.waitFor('disconnected', { since, what: 'the refusal' });
  assert.equal(closed.code, 3507, JSON.stringify(closed));
  await sleep(500);
  assert.equal(h.client.state, 'disconnected', 'terminal: no reconnect');
  assert.equal(h.log.all('connected').length, 0);
});

suite.test('user_id_http_header: a tokenless connection is the user the header names', async () => {
  const user = uniq('header-user');
  const h = suite.client({ label: 'header', websocket: withHeaders({ [USER_HEADER]: user }) });
  h.server = new EventLog(h.client, ['subscribed'], 'header server-side');
  await connect(h);
  // The personal channel of that user proves who the connection is.
  const sub = await h.server.waitFor('subscribed', { what: 'the personal channel' });
  assert.equal(sub.channel, `personal:#${user}`);
  // Without the header (and without a token) there is no user at all.
  const bare = suite.client({ label: 'no-header' });
  const since = bare.log.mark();
  bare.client.connect();
  const refused = await bare.log.waitFor('disconnected', { since, what: 'the refusal' });
  assert.equal(refused.code, 3501, JSON.stringify(refused));
});

suite.test('connect_include_server_time: the connect result carries the server time in ms', async () => {
  const before = Date.now();
  const { h } = await connected('clock');
  const after = Date.now();
  const reply = h.frames
    .filter((f) => f.dir === 'in')
    .flatMap((f) => f.text.split('\n'))
    .filter(Boolean)
    .map((line) => JSON.parse(line))
    .find((r) => r.connect);
  assert.ok(reply, JSON.stringify(h.frames));
  assert.equal(typeof reply.connect.time, 'number', JSON.stringify(reply));
  assert.ok(reply.connect.time >= before - 1_000 && reply.connect.time <= after + 1_000, `${before} ${reply.connect.time} ${after}`);
});

// ---- the subscribe proxy gets the subscribe data ---------------------------

suite.test('subscribe data reaches the subscribe proxy backend', async () => {
  const { h, user } = await connected('proxied');
  const channel = `sp:${uniq('room')}`;
  const s = suite.subscription(h, channel, { data: { invite: 'abc', n: 7 } });
  const ctx = await subscribe(s);
  assert.deepEqual(ctx.data, { welcome: channel }, JSON.stringify(ctx));
  const calls = (await backend.received()).filter((r) => r.path === '/subscribe' && r.call.channel === channel);
  assert.equal(calls.length, 1, JSON.stringify(calls));
  assert.deepEqual(calls[0].call.data, { invite: 'abc', n: 7 });
  assert.equal(calls[0].call.user, user);
});

// ---- node connection limits (their own servers) -----------------------------

/** One WebSocket upgrade attempt: resolves with the HTTP status (101 when it opened). */
function tryUpgrade(wsUrl) {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      resolve(res.statusCode);
    });
    ws.on('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.on('error', () => resolve(null));
  });
}

diagnosedTest(
  'connection_limit: past the node limit the upgrade is 503, the SDK retries and gets in once a place is free',
  async () => {
    const server = await startHerald({
      config: testConfig({ client: { connection_limit: 2 }, http_api: { key: API_KEY } }),
      label: 'herald (connection_limit)',
    });
    const { Centrifuge } = await import('centrifuge');
    const clients = [];
    try {
      const make = (label) => {
        const client = new Centrifuge(server.wsUrl, {
          websocket: WebSocket,
          token: connectionToken({ sub: uniq(label) }),
          minReconnectDelay: 100,
          maxReconnectDelay: 300,
        });
        clients.push(client);
        return client;
      };
      const isConnected = (client) =>
        new Promise((resolve) => {
          if (client.state === 'connected') resolve();
          client.on('connected', () => resolve());
        });
      const [a, b] = [make('a'), make('b')];
      a.connect();
      b.connect();
      await within(Promise.all([isConnected(a), isConnected(b)]), 5_000, 'two connections');
      assert.equal(await tryUpgrade(server.wsUrl), 503);
      const c = make('c');
      c.connect();
      await sleep(800);
      assert.equal(c.state, 'connecting', 'the third keeps trying');
      const refused = metricSample(await metricsText(server.apiUrl), 'herald_client_connection_limit_refusals_total', {
        limit: 'node',
      });
      assert.ok(refused >= 2, `refusals ${refused}`);
      a.disconnect();
      await within(isConnected(c), 5_000, 'the third connects once a place is free');
    } finally {
      for (const client of clients) client.disconnect();
      await server.stop();
    }
  },
  { timeout: 30_000, diagnostics: () => '', cleanup: async () => {} },
);

diagnosedTest(
  'connection_rate_limit: upgrades past the per-second budget are 503 and counted',
  async () => {
    const server = await startHerald({
      config: testConfig({ client: { connection_rate_limit: 2 } }),
      label: 'herald (connection_rate_limit)',
    });
    try {
      // Ten at once: a budget of two a second lets two (three if a token
      // came back meanwhile) through; the rest are refused.
      const statuses = await Promise.all(Array.from({ length: 10 }, () => tryUpgrade(server.wsUrl)));
      const opened = statuses.filter((s) => s === 101).length;
      const refused = statuses.filter((s) => s === 503).length;
      assert.equal(opened + refused, 10, JSON.stringify(statuses));
      assert.ok(opened >= 1 && refused >= 5, JSON.stringify(statuses));
      const counted = metricSample(await metricsText(server.apiUrl), 'herald_client_connection_limit_refusals_total', {
        limit: 'rate',
      });
      assert.equal(counted, refused);
      // The budget comes back.
      await sleep(1_200);
      assert.equal(await tryUpgrade(server.wsUrl), 101);
    } finally {
      await server.stop();
    }
  },
  { timeout: 30_000, diagnostics: () => '', cleanup: async () => {} },
);
