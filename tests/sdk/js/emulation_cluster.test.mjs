// HTTP-streaming emulation across two herald nodes behind a round-robin nginx with no
// stickiness: one real redis-server, two nodes on it (the Redis engine), nginx with an
// `upstream` of both nodes. A centrifuge-js client in Node (global fetch and
// ReadableStream) holds its stream on one node while its commands, each a POST
// /emulation, alternate between the nodes: the node that does not hold the stream must
// route them to the owning node through Redis (the `node` field of the request), and
// everything (subscribe, publish, presence, history, RPC errors, API publications)
// keeps working. nginx's access log ($upstream_addr) proves that POSTs reached the
// other node.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Centrifuge } from 'centrifuge';

import { appendDiagnostics, startNodes } from './cluster_support.mjs';
import { apiCall, connectionToken, EventLog, sleep, uniq, within } from './harness.mjs';
import { nginxBin, startNginx, streamingProxy } from './nginx_support.mjs';

const API_KEY = `api-key-${uniq('emulation')}`;

const config = {
  client: { presence_update_interval: '1s' },
  http_api: { key: API_KEY },
  http_stream: { enabled: true },
  sse: { enabled: true },
  channel: {
    namespaces: [
      {
        name: 'emu',
        presence: true,
        history_size: 100,
        history_ttl: '600s',
        force_recovery: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_presence_for_client: true,
        allow_history_for_client: true,
      },
    ],
  },
};

const CLIENT_EVENTS = ['state', 'connecting', 'connected', 'disconnected', 'error'];
const SUB_EVENTS = ['state', 'subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error'];

const state = { cluster: null, nginx: null, clients: [], infoUids: [] };

before(async () => {
  nginxBin(); // throws the install message when missing
  state.cluster = await startNodes(2, 'standalone', { config, label: 'herald (emulation cluster)' });
  const upstreams = state.cluster.nodes.map((n) => new URL(n.wsUrl).host);
  try {
    state.nginx = await startNginx({
      // Plain round-robin: no ip_hash, no hash, no sticky cookie; no upstream keepalive,
      // so every request is balanced on its own.
      httpExtra: () => `  upstream herald {\n${upstreams.map((u) => `    server ${u};`).join('\n')}\n  }`,
      serverBlock: () => `
    location /connection/ {
${streamingProxy('herald')}
    }

    location = /emulation {
${streamingProxy('herald')}
    }

    location / {
      return 404;
    }
`,
    });
  } catch (err) {
    err.message = `${err.message}\n${state.cluster.logTails(30)}`;
    await state.cluster.stop();
    state.cluster = null;
    throw err;
  }
  // Wait until each node knows the other (the info API lists both): before that, a
  // POST routed to the other node could be answered 404 (unknown node).
  const deadline = Date.now() + 10_000;
  for (;;) {
    const counts = [];
    state.infoUids = [];
    for (const node of state.cluster.nodes) {
      const info = await apiCall(node.apiUrl, API_KEY, 'info', {});
      counts.push(info.result?.nodes?.length ?? 0);
      state.infoUids.push((info.result?.nodes ?? []).map((n) => n.uid));
    }
    if (counts.every((c) => c >= 2)) break;
    if (Date.now() > deadline) throw new Error(`the nodes did not see each other within 10 s (info lists ${counts})\n${state.cluster.logTails(30)}`);
    await sleep(100);
  }
});

after(async () => {
  for (const c of state.clients) {
    try {
      c.client.disconnect();
    } catch {
      // nothing to do
    }
  }
  await sleep(50);
  if (state.nginx) await state.nginx.stop().catch(() => {});
  if (state.cluster) await state.cluster.stop().catch(() => {});
});

/** A centrifuge-js client whose only transport is http_stream through nginx. */
function emulationClient(label, token) {
  const base = state.nginx.origin;
  const client = new Centrifuge([{ transport: 'http_stream', endpoint: `${base}/connection/http_stream` }], {
    emulationEndpoint: `${base}/emulation`,
    token,
    minReconnectDelay: 200,
    maxReconnectDelay: 1_000,
    timeout: 5_000,
  });
  const log = new EventLog(client, CLIENT_EVENTS, label);
  const handle = { client, log, label, subs: [] };
  state.clients.push(handle);
  return handle;
}

function subscription(handle, channel) {
  const sub = handle.client.newSubscription(channel);
  const log = new EventLog(sub, SUB_EVENTS, `${handle.label} sub ${channel}`);
  handle.subs.push(log);
  return { sub, log };
}

/** Requests in the nginx access log, counted by `METHOD uri -> upstream status`. */
function accessSummary() {
  if (!state.nginx) return '(nginx not running)';
  const counts = {};
  for (const e of state.nginx.accessEntries()) {
    const key = e.method ? `${e.method} ${e.uri} -> ${e.upstream} ${e.status}` : e.line;
    counts[key] = (counts[key] || 0) + 1;
  }
  return Object.entries(counts)
    .map(([k, n]) => `  ${n} × ${k}`)
    .join('\n');
}

function diagnostics() {
  const parts = [];
  parts.push(`--- node uids listed by the info API of each node ---\n${state.infoUids.map((u, i) => `  node ${i + 1}: ${JSON.stringify(u)}`).join('\n')}`);
  for (const h of state.clients) {
    // The SDK keeps the connect reply's session and node: it sends them in every POST /emulation.
    parts.push(`--- ${h.label}: connect reply session=${h.client._session} node=${h.client._node} ---`);
    parts.push(`--- ${h.label}: events ---\n${h.log.summary(40)}`);
    for (const s of h.subs) parts.push(`--- ${s.label}: events ---\n${s.summary(40)}`);
  }
  parts.push(`--- nginx access log summary (requests by upstream and status) ---\n${accessSummary()}`);
  parts.push(state.nginx ? state.nginx.diagnostics(30) : '(nginx not running)');
  parts.push(state.cluster ? state.cluster.logTails(40) : '(nodes not running)');
  return parts.join('\n');
}

/**
 * Runs `fn`; on failure appends its clients' events, nginx logs, both nodes' log tails.
 * Its clients are disconnected at the end either way.
 */
async function withDiagnostics(fn) {
  state.clients = [];
  try {
    await fn();
  } catch (err) {
    appendDiagnostics(err, diagnostics());
    throw err;
  } finally {
    for (const c of state.clients) {
      try {
        c.client.disconnect();
      } catch {
        // nothing to do
      }
    }
    await sleep(100);
  }
}

/** `herald_emulation_requests_total` by result, per node (null: not exported). */
async function emulationMetrics() {
  const out = [];
  for (const node of state.cluster.nodes) {
    const text = await (await fetch(`${node.apiUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    const byResult = {};
    for (const line of text.split('\n')) {
      const m = /^herald_emulation_requests_total\{[^}]*result="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
      if (m) byResult[m[1]] = Number(m[2]);
    }
    out.push(byResult);
  }
  return out;
}

test('two nodes behind round-robin nginx: an http_stream client\'s commands land on both nodes and all work', { timeout: 40_000 }, async () => {
  await withDiagnostics(async () => {
    const channel = `emu:${uniq('rr')}`;
    const user = uniq('emu-user');
    const a = emulationClient('http_stream client', connectionToken({ sub: user }));
    const s = subscription(a, channel);
    s.sub.subscribe();
    const since = a.log.mark();
    a.client.connect();
    const connected = await a.log.waitFor('connected', { since, timeout: 10_000, what: 'connect through nginx' });
    assert.equal(connected.transport, 'http_stream', 'the only transport is http_stream');
    await s.log.waitFor('subscribed', { timeout: 10_000, what: 'subscribe (a POST /emulation)' });

    // Several commands one after another: each is its own POST /emulation, balanced
    // round-robin between the two nodes.
    const pubSince = s.log.mark();
    const published = [];
    for (let n = 1; n <= 6; n++) {
      await within(a.client.publish(channel, { n, from: 'client' }), 6_000, `client publish n=${n}`);
      published.push({ n, from: 'client' });
    }
    const presence = await within(a.client.presence(channel), 6_000, 'presence');
    const clients = Object.values(presence.clients);
    assert.equal(clients.length, 1, `presence lists the one subscriber: ${JSON.stringify(presence)}`);
    assert.equal(clients[0].client, connected.client, 'presence lists our client id');
    assert.equal(clients[0].user, user, 'presence lists our user');
    const stats = await within(a.client.presenceStats(channel), 6_000, 'presence stats');
    assert.deepEqual({ clients: stats.numClients, users: stats.numUsers }, { clients: 1, users: 1 }, 'presence stats');
    const hist = await within(a.client.history(channel, { limit: 10 }), 6_000, 'history');
    assert.deepEqual(
      hist.publications.map((p) => p.data),
      published,
      'history holds the client publications in order',
    );
    await assert.rejects(
      within(a.client.rpc('no-such-method', { x: 1 }), 6_000, 'rpc'),
      (err) => typeof err.code === 'number' && err.code > 0,
      'an RPC without a proxy is answered with an error reply (not a timeout)',
    );

    // Publications from each node's server API reach the subscriber on its stream.
    for (const [i, node] of state.cluster.nodes.entries()) {
      const reply = await apiCall(node.apiUrl, API_KEY, 'publish', { channel, data: { n: 100 + i, from: `api node ${i + 1}` } });
      assert.ok(reply.result, `API publish on node ${i + 1}: ${JSON.stringify(reply)}`);
      published.push({ n: 100 + i, from: `api node ${i + 1}` });
    }
    await s.log.waitFor('publication', {
      since: pubSince,
      pred: () => s.log.all('publication', pubSince).length >= published.length,
      timeout: 10_000,
      what: `${published.length} publications on the stream`,
    });
    await sleep(300); // nothing more may arrive
    assert.deepEqual(
      s.log.all('publication', pubSince).map((p) => p.data),
      published,
      'every publication (client and API, through both nodes) arrives once, in order',
    );
    assert.equal(a.log.all('disconnected', since).length, 0, 'the client never disconnected');
    assert.equal(a.log.all('connecting', since).filter((c) => c.code !== 0).length, 0, 'the client never reconnected');

    // The stream's access-log line is written when it ends: disconnect first.
    a.client.disconnect();
    const deadline = Date.now() + 5_000;
    let streams = [];
    while (Date.now() < deadline) {
      streams = state.nginx.accessEntries().filter((e) => e.method === 'POST' && e.uri === '/connection/http_stream');
      if (streams.length >= 1) break;
      await sleep(100);
    }
    assert.equal(streams.length, 1, `one stream request: ${JSON.stringify(streams.map((e) => e.line))}`);
    const streamNode = streams[0].upstream;
    const posts = state.nginx.accessEntries().filter((e) => e.method === 'POST' && e.uri === '/emulation');
    const byNode = {};
    for (const p of posts) byNode[p.upstream] = (byNode[p.upstream] || 0) + 1;
    console.log(`# stream on ${streamNode}; POST /emulation per upstream: ${JSON.stringify(byNode)}`);
    assert.ok(posts.length >= 10, `at least 10 commands went as POST /emulation (got ${posts.length})`);
    const elsewhere = posts.filter((p) => p.upstream !== streamNode);
    assert.ok(
      elsewhere.length >= 1,
      `at least one POST /emulation went to the node not holding the stream (${streamNode}): ${JSON.stringify(byNode)}`,
    );
    assert.deepEqual(
      [...new Set(posts.map((p) => p.status))],
      [204],
      `every POST /emulation was answered 204: ${JSON.stringify(posts.map((p) => `${p.upstream} ${p.status}`))}`,
    );

    // The node that received the forwarded POSTs counted them (contract metric).
    const metrics = await emulationMetrics();
    const forwarded = metrics.reduce((sum, m) => sum + (m.forwarded || 0), 0);
    assert.ok(
      forwarded >= elsewhere.length,
      `herald_emulation_requests_total{result="forwarded"} summed over the nodes >= ${elsewhere.length}: ${JSON.stringify(metrics)}`,
    );
  });
});

test('two nodes behind round-robin nginx: a second client\'s publications reach the first across nodes', { timeout: 40_000 }, async () => {
  await withDiagnostics(async () => {
    const channel = `emu:${uniq('pair')}`;
    const reader = emulationClient('reader', connectionToken({ sub: uniq('reader') }));
    const writer = emulationClient('writer', connectionToken({ sub: uniq('writer') }));
    const rs = subscription(reader, channel);
    rs.sub.subscribe();
    reader.client.connect();
    await rs.log.waitFor('subscribed', { timeout: 10_000, what: 'reader subscribed' });
    writer.client.connect();
    await writer.log.waitFor('connected', { timeout: 10_000, what: 'writer connected' });
    const since = rs.log.mark();
    const want = [];
    for (let n = 1; n <= 10; n++) {
      await within(writer.client.publish(channel, { n }), 6_000, `writer publish n=${n}`);
      want.push({ n });
    }
    await rs.log.waitFor('publication', {
      since,
      pred: () => rs.log.all('publication', since).length >= want.length,
      timeout: 10_000,
      what: '10 publications at the reader',
    });
    await sleep(300);
    assert.deepEqual(rs.log.all('publication', since).map((p) => p.data), want, 'all 10, once, in order');
    const presence = await within(writer.client.presence(channel), 6_000, 'presence from the writer');
    assert.equal(Object.keys(presence.clients).length, 1, `presence lists the reader: ${JSON.stringify(presence)}`);
    reader.client.disconnect();
    writer.client.disconnect();
  });
});
