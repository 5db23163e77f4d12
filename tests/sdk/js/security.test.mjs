// Security properties seen from the outside, with the real centrifuge-js SDK:
//
// - wss://: herald serves a certificate made at test time (ECDSA P-256, signed by a test
//   CA); a Node process that trusts the CA (NODE_EXTRA_CA_CERTS) connects, subscribes,
//   publishes and receives over TLS, one that does not trust it cannot connect.
// - client.user_connection_limit is counted across the cluster (two nodes, one Redis): a
//   user's extra connection on another node is closed with 3504 (terminal for the SDK),
//   other users are not affected, and the slot is given back when the first one leaves.
// - log hygiene: at log level trace (text and JSON formats) herald's whole output holds no
//   token, token signature, HMAC secret, API key (right or wrong) or publication payload.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Centrifuge } from 'centrifuge';

import { appendDiagnostics, connectClient, nodesSuite } from './cluster_support.mjs';
import {
  EventLog,
  connectionToken,
  incomingReplies,
  nowSec,
  outgoingCommands,
  recordingWebSocket,
  sleep,
  startHerald,
  subscriptionToken,
  testConfig,
  uniq,
  makeTestCertificates,
  within,
} from './harness.mjs';

const CA_NAME = 'herald security test CA';

const here = path.dirname(fileURLToPath(import.meta.url));
const hex = (bytes) => randomBytes(bytes).toString('hex');

// ---------------------------------------------------------------------------
// 1. wss:// with the JS SDK, the CA given to Node through NODE_EXTRA_CA_CERTS


// The SDK part runs in a child `node` (NODE_EXTRA_CA_CERTS is read only at start), with
// cwd tests/sdk/js so that `centrifuge` and `ws` resolve. It first opens a bare TLS
// connection (the SDK reports only "transport closed", the probe tells why), then runs
// connect, subscribe, publish through the subscription and waits for its own publication.
// It prints one JSON line. SEC_PROTOBUF=1: the SDK's protobuf build (payloads are bytes).
const WSS_CHILD = String.raw`
import tls from 'node:tls';
import WebSocket from 'ws';

const { SEC_URL: url, SEC_TOKEN: token, SEC_CHANNEL: channel, SEC_MARKER: marker, SEC_PROTOBUF: protobuf } = process.env;
const { Centrifuge } = await import(protobuf === '1' ? 'centrifuge/build/protobuf' : 'centrifuge');
const encode = (value) => (protobuf === '1' ? new TextEncoder().encode(JSON.stringify(value)) : value);
const decode = (data) => (protobuf === '1' ? JSON.parse(new TextDecoder().decode(data)) : data);
const result = { probe: null, connected: false, subscribed: false, published: false, received: null, errors: [], disconnects: [] };
const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error('timed out: ' + what)), ms));

const target = new URL(url);
result.probe = await new Promise((resolve) => {
  const socket = tls.connect({ host: target.hostname, port: Number(target.port), ALPNProtocols: ['http/1.1'] });
  const timer = setTimeout(() => { socket.destroy(); resolve({ outcome: 'timeout' }); }, 5000);
  socket.once('secureConnect', () => {
    clearTimeout(timer);
    const cert = socket.getPeerCertificate();
    resolve({
      outcome: 'open',
      authorized: socket.authorized,
      protocol: socket.getProtocol(),
      fingerprint256: cert.fingerprint256,
      subjectaltname: cert.subjectaltname,
      curve: cert.asn1Curve,
    });
    socket.end();
  });
  socket.once('error', (err) => { clearTimeout(timer); resolve({ outcome: 'error', code: err.code, message: err.message }); });
});

const client = new Centrifuge(url, { token, websocket: WebSocket, timeout: 3000, minReconnectDelay: 200, maxReconnectDelay: 1000 });
client.on('error', (ctx) => result.errors.push((ctx.type || '') + ': ' + (ctx.error?.message ?? '')));
client.on('disconnected', (ctx) => result.disconnects.push(ctx.code));
const sub = client.newSubscription(channel);
const received = new Promise((resolve) => sub.on('publication', (ctx) => resolve(decode(ctx.data))));
try {
  client.connect();
  await client.ready(4000);
  result.connected = true;
  result.transport = client._transport?.name?.();
  result.format = client._transport?._transport?.protocol ?? null;
  sub.subscribe();
  await sub.ready(4000);
  result.subscribed = true;
  await Promise.race([sub.publish(encode({ marker })), timeout(4000, 'publish')]);
  result.published = true;
  result.received = await Promise.race([received, timeout(4000, 'own publication')]);
} catch (err) {
  result.errors.push('flow: ' + (err?.message ?? JSON.stringify(err)));
}
client.disconnect();
console.log(JSON.stringify(result));
process.exit(0);
`;

/** Runs WSS_CHILD; `ca`: the CA file for NODE_EXTRA_CA_CERTS, or null for Node's defaults only. */
function runWssChild({ ca, url, token, channel, marker, protobuf = false }) {
  const env = { ...process.env, SEC_URL: url, SEC_TOKEN: token, SEC_CHANNEL: channel, SEC_MARKER: marker };
  env.SEC_PROTOBUF = protobuf ? '1' : '0';
  // Nothing inherited may loosen or change certificate checks, or make the child a test runner.
  const drop = ['NODE_EXTRA_CA_CERTS', 'NODE_TLS_REJECT_UNAUTHORIZED', 'NODE_OPTIONS', 'NODE_TEST_CONTEXT'];
  for (const k of [...drop, 'SSL_CERT_FILE', 'SSL_CERT_DIR']) delete env[k];
  if (ca) env.NODE_EXTRA_CA_CERTS = ca;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', WSS_CHILD], {
      cwd: here,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() || '';
      try {
        resolve({ ...JSON.parse(line), raw: { code, sig, stdout, stderr } });
      } catch {
        const output = `stdout:\n${stdout}\nstderr:\n${stderr}`;
        reject(new Error(`the SDK child printed no result (exit ${code}, signal ${sig})\n${output}`));
      }
    });
  });
}

describe('wss:// with the JS SDK and a CA trusted through NODE_EXTRA_CA_CERTS', () => {
  let dir = null;
  let certs = null;
  let server = null;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'herald-sec-tls-'));
    certs = makeTestCertificates(dir, CA_NAME);
    server = await startHerald({
      label: 'herald (tls)',
      config: testConfig({
        http_server: { tls: { enabled: true, cert_pem_file: certs.cert, key_pem_file: certs.key } },
        channel: { without_namespace: { allow_subscribe_for_client: true, allow_publish_for_client: true } },
      }),
    });
  });

  after(async () => {
    if (server) await server.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('connect, subscribe, publish and receive over wss:// (JSON and protobuf SDK); without the CA the SDK cannot connect', { timeout: 60_000 }, async () => {
    const outputs = [];
    try {
      assert.match(server.wsUrl, /^wss:\/\/127\.0\.0\.1:\d+\/connection\/websocket$/, 'herald announces a wss:// URL');
      const serverFingerprint = new X509Certificate(readFileSync(certs.cert)).fingerprint256;
      const channel = uniq('tls-room');

      // Trusting the test CA: the whole flow works.
      const marker = uniq('tls-payload');
      const trusted = await runWssChild({
        ca: certs.ca,
        url: server.wsUrl,
        token: connectionToken({ sub: uniq('tls-user') }),
        channel,
        marker,
      });
      outputs.push(['with NODE_EXTRA_CA_CERTS', trusted]);
      assert.equal(trusted.probe.outcome, 'open', `TLS handshake with the CA trusted: ${JSON.stringify(trusted.probe)}`);
      assert.equal(trusted.probe.authorized, true, 'the server certificate verified against the test CA');
      assert.equal(trusted.probe.fingerprint256, serverFingerprint, 'herald serves the certificate of its config');
      assert.equal(trusted.probe.curve, 'prime256v1', 'an ECDSA P-256 certificate');
      assert.match(trusted.probe.protocol, /^TLSv1\.[23]$/);
      assert.equal(trusted.connected, true, 'the SDK connected over wss://');
      assert.equal(trusted.subscribed, true, 'the SDK subscribed');
      assert.equal(trusted.published, true, 'the SDK published through the subscription');
      assert.deepEqual(trusted.received, { marker }, 'the SDK received its own publication');
      assert.deepEqual(trusted.disconnects, [0], 'no disconnect other than its own (code 0) at the end');

      // The protobuf SDK (what the mobile and .NET SDKs speak) over the same wss://.
      const protobufMarker = uniq('tls-protobuf-payload');
      const protobuf = await runWssChild({
        ca: certs.ca,
        url: server.wsUrl,
        token: connectionToken({ sub: uniq('tls-user') }),
        channel,
        marker: protobufMarker,
        protobuf: true,
      });
      outputs.push(['protobuf, with NODE_EXTRA_CA_CERTS', protobuf]);
      assert.equal(protobuf.probe.authorized, true, 'the server certificate verified against the test CA');
      assert.equal(protobuf.connected, true, `the protobuf SDK connected over wss://: ${JSON.stringify(protobuf.errors)}`);
      assert.equal(protobuf.format, 'centrifuge-protobuf', 'herald chose the protobuf subprotocol');
      assert.equal(protobuf.subscribed, true, 'the protobuf SDK subscribed');
      assert.equal(protobuf.published, true, 'the protobuf SDK published');
      assert.deepEqual(protobuf.received, { marker: protobufMarker }, 'the protobuf SDK received its own publication');
      assert.deepEqual(protobuf.disconnects, [0], 'no disconnect other than its own (code 0) at the end');

      // Node's default trust store only: the certificate is refused, the SDK never connects.
      const untrusted = await runWssChild({
        ca: null,
        url: server.wsUrl,
        token: connectionToken({ sub: uniq('tls-user') }),
        channel,
        marker: uniq('tls-payload'),
      });
      outputs.push(['without NODE_EXTRA_CA_CERTS', untrusted]);
      assert.equal(untrusted.probe.outcome, 'error', `TLS handshake without the CA fails: ${JSON.stringify(untrusted.probe)}`);
      assert.match(
        untrusted.probe.code ?? '',
        /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN)$/,
        `a certificate verification error: ${JSON.stringify(untrusted.probe)}`,
      );
      assert.equal(untrusted.connected, false, 'the SDK did not connect');
      assert.equal(untrusted.received, null);
      assert.ok(
        untrusted.errors.some((e) => e.startsWith('transport:')),
        `the SDK reported transport errors: ${JSON.stringify(untrusted.errors)}`,
      );
    } catch (err) {
      const diag = outputs
        .map(([what, r]) => `--- SDK child ${what} ---\n${JSON.stringify({ ...r, raw: undefined })}\nstderr:\n${r.raw.stderr}`)
        .join('\n');
      appendDiagnostics(err, `${diag}\n${server.logTail(80)}`);
      throw err;
    }
  });
});

// ---------------------------------------------------------------------------
// 2. client.user_connection_limit across two nodes (Redis standalone)

describe('user_connection_limit = 1 across two nodes (redis standalone)', () => {
  const env = nodesSuite({
    nodes: 2,
    mode: 'standalone',
    config: { client: { user_connection_limit: 1, presence_update_interval: '1s' } },
    label: 'herald (user limit)',
  });

  /** Starts a connect on node `i`; resolves with the first `connected` or `disconnected` context. */
  async function attempt(i, user, label) {
    const handle = env.client(i, { token: connectionToken({ sub: user }), label });
    const since = handle.log.mark();
    handle.client.connect();
    const ctx = await handle.log.waitFor(['connected', 'disconnected'], { since, timeout: 8_000, what: 'connect outcome' });
    return { handle, ctx, connected: handle.log.all('connected', since).length > 0 };
  }

  env.test('a second connection of the user on another node is closed with 3504; the slot comes back', async () => {
    const alice = uniq('alice');
    const first = env.client(0, { token: connectionToken({ sub: alice }), label: 'alice@node1' });
    await connectClient(first);
    const firstSince = first.log.mark();

    // The same user on node 2: closed with 3504, which the SDK treats as terminal.
    const second = await attempt(1, alice, 'alice@node2');
    assert.equal(second.connected, false, 'the extra connection is never reported connected');
    assert.equal(second.ctx.code, 3504, `closed with 3504 (connection limit), got ${second.ctx.code} ${second.ctx.reason}`);
    const closedAt = second.handle.log.mark();
    await sleep(2_000);
    assert.deepEqual(second.handle.log.all('connecting', closedAt), [], 'the SDK does not reconnect after 3504');
    assert.equal(second.handle.client.state, 'disconnected');

    // Another user on node 2 is not limited; alice's first connection is untouched.
    const bob = await attempt(1, uniq('bob'), 'bob@node2');
    assert.equal(bob.connected, true, `another user connects on node 2: ${JSON.stringify(bob.ctx)}`);
    assert.equal(first.client.state, 'connected', "alice's first connection stays connected");
    assert.deepEqual(first.log.all('disconnected', firstSince), [], "alice's first connection was not closed");
    assert.deepEqual(first.log.all('connecting', firstSince), [], "alice's first connection did not reconnect");

    // Once the first connection is gone, alice can connect on node 2 (removal is asynchronous).
    first.client.disconnect();
    const deadline = Date.now() + 10_000;
    const outcomes = [];
    for (;;) {
      const next = await attempt(1, alice, `alice@node2 retry ${outcomes.length + 1}`);
      outcomes.push(next.connected ? 'connected' : `disconnected ${next.ctx.code}`);
      if (next.connected) break;
      assert.equal(next.ctx.code, 3504, `a refused retry is closed with 3504: ${JSON.stringify(next.ctx)}`);
      assert.ok(Date.now() < deadline, `alice could not connect within 10 s of leaving: ${outcomes.join(', ')}`);
      await sleep(500);
    }
  });
});

// ---------------------------------------------------------------------------
// 3. Log hygiene at log level trace

/** Every line of `text` holding one of `needles` ({ what, value }), as "what: line". */
function leaks(text, needles) {
  const found = [];
  const lines = text.split('\n');
  for (const { what, value } of needles) {
    const line = lines.find((l) => l.includes(value));
    if (line !== undefined) found.push(`${what} (${JSON.stringify(value)}) in: ${line.slice(0, 1_000)}`);
  }
  return found;
}

/** `value` itself and, when `windows`, each of its 16-character pieces (a truncated secret leaks too). */
function needle(what, value, { windows = false } = {}) {
  const out = [{ what, value }];
  if (windows) {
    for (let i = 0; i + 16 < value.length; i++) out.push({ what: `${what} (part)`, value: value.slice(i, i + 16) });
  }
  return out;
}

/** POST /api/<method>; resolves with { status, body }. */
async function post(apiUrl, method, headers, body) {
  const res = await within(
    fetch(`${apiUrl}/api/${method}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify(body),
    }),
    5_000,
    `POST /api/${method}`,
  );
  return { status: res.status, body: await res.text() };
}

for (const format of ['text', 'json']) {
  test(`log hygiene (trace, ${format}): no token, secret, API key or payload in herald's output`, { timeout: 60_000 }, async () => {
    // log.level is only the filter when RUST_LOG is unset.
    delete process.env.RUST_LOG;
    const hmacSecret = `hmac-${hex(32)}`;
    const apiKey = `apikey-${hex(24)}`;
    const wrongKeys = [`wrongkey-${hex(24)}`, `wrongauth-${hex(24)}`];
    const markers = {
      'client publication payload': `client-payload-${hex(12)}`,
      'API publication payload': `api-payload-${hex(12)}`,
      'payload of a rejected API call': `rejected-payload-${hex(12)}`,
    };
    const tokens = [];
    const minted = (what, token) => {
      tokens.push({ what, token });
      return token;
    };
    const user = uniq('logger');
    const channel = uniq('private-room');

    const server = await startHerald({
      label: `herald (log ${format})`,
      config: testConfig({
        log: { level: 'trace', format },
        http_api: { key: apiKey },
        client: { token: { hmac_secret_key: hmacSecret }, expired_close_delay: '1s' },
        // No allow_subscribe_for_client: subscribing takes a subscription token.
        channel: { without_namespace: { allow_publish_for_client: true } },
      }),
    });
    let stopped = false;
    const clients = [];
    const newClient = (label, options) => {
      const frames = [];
      const client = new Centrifuge(server.wsUrl, {
        websocket: recordingWebSocket(frames),
        minReconnectDelay: 200,
        maxReconnectDelay: 1_000,
        ...options,
      });
      const log = new EventLog(client, ['state', 'connecting', 'connected', 'disconnected', 'error'], label);
      const handle = { client, log, frames, label, subs: [] };
      clients.push(handle);
      return handle;
    };

    try {
      // A connection whose token expires in 3 s and is refreshed through getToken.
      const h = newClient('logger', {
        token: minted('connection token', connectionToken({ sub: user, exp: nowSec() + 3 }, hmacSecret)),
        getToken: async () =>
          minted('refreshed connection token', connectionToken({ sub: user, exp: nowSec() + 60 }, hmacSecret)),
      });
      const since = h.log.mark();
      h.client.connect();
      await h.log.waitFor('connected', { since, timeout: 5_000, what: 'connect' });

      const sub = h.client.newSubscription(channel, {
        token: minted('subscription token', subscriptionToken({ sub: user, channel, exp: nowSec() + 3_600 }, hmacSecret)),
      });
      const subEvents = ['state', 'subscribing', 'subscribed', 'unsubscribed', 'publication', 'error'];
      const subLog = new EventLog(sub, subEvents, `logger sub ${channel}`);
      h.subs.push(subLog);
      sub.subscribe();
      await subLog.waitFor('subscribed', { timeout: 5_000, what: 'subscribe with a subscription token' });

      // The SDK refreshes the connection token before it expires.
      const refreshDeadline = Date.now() + 10_000;
      for (;;) {
        const ids = new Set(outgoingCommands(h.frames).filter((c) => c.command.refresh).map((c) => c.command.id));
        const answered = incomingReplies(h.frames).filter((r) => ids.has(r.reply.id));
        if (answered.length > 0) {
          const reply = answered[0].reply;
          assert.equal(reply.error, undefined, `refresh answered without error: ${JSON.stringify(reply)}`);
          break;
        }
        assert.ok(Date.now() < refreshDeadline, 'the SDK refreshed the connection token within 10 s');
        await sleep(200);
      }

      // A publication through the subscription, received back.
      const clientMarker = markers['client publication payload'];
      await within(sub.publish({ text: clientMarker }), 5_000, 'publish through the subscription');
      await subLog.waitFor('publication', { pred: (c) => c.data?.text === clientMarker, what: 'own publication' });

      // A publication through the server API, received by the subscriber.
      const apiMarker = markers['API publication payload'];
      const ok = await post(server.apiUrl, 'publish', { 'X-API-Key': apiKey }, { channel, data: { text: apiMarker } });
      assert.equal(ok.status, 200, `API publish: HTTP ${ok.status} ${ok.body}`);
      assert.ok(!JSON.parse(ok.body).error, `API publish: ${ok.body}`);
      await subLog.waitFor('publication', { pred: (c) => c.data?.text === apiMarker, what: 'API publication' });

      // A connection token signed with a wrong secret: refused with 3500.
      const mallory = newClient('mallory', {
        token: minted('token with a wrong signature', connectionToken({ sub: uniq('mallory') }, `wrong-${hex(32)}`)),
      });
      const malSince = mallory.log.mark();
      mallory.client.connect();
      const refused = await mallory.log.waitFor('disconnected', { since: malSince, what: 'refused connect' });
      assert.equal(refused.code, 3500, `wrong-secret token refused with 3500, got ${refused.code} ${refused.reason}`);

      // API calls with wrong keys (both header forms), carrying a payload: refused.
      const rejected = markers['payload of a rejected API call'];
      for (const headers of [{ 'X-API-Key': wrongKeys[0] }, { Authorization: `apikey ${wrongKeys[1]}` }]) {
        const bad = await post(server.apiUrl, 'publish', headers, { channel, data: { text: rejected } });
        assert.equal(bad.status, 401, `API call with a wrong key refused with 401: HTTP ${bad.status} ${bad.body}`);
      }
      const published = subLog.all('publication').filter((c) => c.data?.text === rejected);
      assert.deepEqual(published, [], 'nothing published with a wrong key');
      assert.ok(tokens.some((t) => t.what === 'refreshed connection token'), 'getToken minted a fresh token');

      // Stop herald and collect everything it printed.
      for (const c of clients) c.client.disconnect();
      await sleep(200);
      const closed = new Promise((resolve) => server.child.once('close', resolve));
      stopped = true;
      await server.stop();
      await within(closed, 5_000, 'herald output closed');
      const output = server.logs();

      // The capture works: a non-trivial log with trace/debug lines in the asked format.
      const errLines = output.split('--- stderr ---\n')[1].split('\n').filter((l) => l.trim());
      assert.ok(errLines.length > 20, `herald logged (${errLines.length} lines on stderr)`);
      if (format === 'json') {
        const unparsable = errLines.filter((l) => {
          try {
            JSON.parse(l);
            return false;
          } catch {
            return true;
          }
        });
        assert.deepEqual(unparsable.slice(0, 5), [], 'every stderr line is a JSON object');
        const levels = new Set(errLines.map((l) => JSON.parse(l).level));
        assert.ok(levels.has('TRACE') || levels.has('DEBUG'), `trace/debug entries logged (levels ${[...levels]})`);
      } else {
        assert.ok(errLines.some((l) => /\b(TRACE|DEBUG)\b/.test(l)), 'trace/debug lines logged');
      }

      const needles = [
        ...needle('HMAC secret', hmacSecret, { windows: true }),
        ...needle('API key', apiKey, { windows: true }),
        ...wrongKeys.flatMap((k) => needle('wrong API key', k, { windows: true })),
        ...Object.entries(markers).map(([what, value]) => ({ what, value })),
      ];
      for (const { what, token } of tokens) {
        needles.push({ what, value: token });
        needles.push(...needle(`${what} signature`, token.split('.')[2], { windows: true }));
      }
      const found = leaks(output, needles);
      assert.deepEqual(found, [], `herald's output leaks secrets:\n${found.join('\n')}`);
    } catch (err) {
      const parts = [];
      for (const c of clients) {
        parts.push(`--- ${c.label}: events ---\n${c.log.summary()}`);
        for (const s of c.subs) parts.push(`--- ${s.label}: events ---\n${s.summary()}`);
      }
      parts.push(server.logTail(60));
      appendDiagnostics(err, parts.join('\n'));
      throw err;
    } finally {
      for (const c of clients) c.client.disconnect();
      if (!stopped) await server.stop();
    }
  });
}
