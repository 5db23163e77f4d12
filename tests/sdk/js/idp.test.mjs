// Identity providers with the real centrifuge-js SDK:
//
// - JWKS (client.token.jwks_public_endpoint): a JWK set served by the test over loopback
//   http; tokens signed with node:crypto (ES256, ES384, EdDSA, RS*, PS*) by `kid`; keys
//   bound to their algorithm; issuer/audience/typ and refused headers; key rotation while
//   clients stay connected; refetch rate limit under a flood of unknown kids; refresh;
//   an endpoint that is down when herald starts; plain http refused for remote hosts.
// - OAuth2 token introspection (RFC 7662) against a real authorization server
//   (oidc-provider 9.x over https with a CA made at test time, trusted by herald through
//   SSL_CERT_FILE): opaque client-credentials tokens, channels granted by scope, expiry
//   and refresh, the authorization server going away and coming back.
// - `Authorization: Bearer <token>` on the WebSocket upgrade with an empty connect token.

import assert from 'node:assert/strict';
import { constants as cryptoConstants, createHmac, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

import {
  EventLog,
  connect,
  connectionToken,
  incomingReplies,
  nowSec,
  outgoingCommands,
  recordingWebSocket,
  serverSuite,
  sleep,
  startHerald,
  subscribe,
  testConfig,
  uniq,
  makeTestCertificates,
  within,
} from './harness.mjs';

const CA_NAME = 'herald idp test CA';

const hex = (bytes) => randomBytes(bytes).toString('hex');
const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** herald refetches a JWK set at most once per this window (per source). */
const REFETCH_WINDOW_MS = 5_000;

// ---------------------------------------------------------------------------
// Keys and JWTs (node:crypto only)

const GENERATE = {
  'P-256': () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  'P-384': () => generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  Ed25519: () => generateKeyPairSync('ed25519'),
  RSA: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
};

/**
 * A key pair and its public JWK. `alg`: the JWK's `alg` (absent when not given);
 * `use`: the JWK's `use` (`sig` unless given; `null` leaves it out).
 */
function newKey(kid, type, { alg, use = 'sig' } = {}) {
  const { publicKey, privateKey } = GENERATE[type]();
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid };
  if (alg) jwk.alg = alg;
  if (use !== null) jwk.use = use;
  return { kid, type, privateKey, publicKey, jwk };
}

function signature(alg, key, data) {
  const bits = alg.slice(2);
  switch (alg) {
    case 'ES256':
    case 'ES384':
      return sign(`sha${bits}`, data, { key, dsaEncoding: 'ieee-p1363' });
    case 'EdDSA':
      return sign(null, data, key);
    case 'RS256':
    case 'RS384':
    case 'RS512':
      return sign(`sha${bits}`, data, key);
    case 'PS256':
    case 'PS384':
    case 'PS512':
      return sign(`sha${bits}`, data, {
        key,
        padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
        saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST,
      });
    case 'HS256':
      return createHmac('sha256', key).update(data).digest();
    case 'none':
      return Buffer.alloc(0);
    default:
      throw new Error(`test bug: no signer for ${alg}`);
  }
}

/**
 * A JWT. `alg` (header and signature), `key` (one of newKey's; signs and gives the kid),
 * `signKey` (signs instead of key.privateKey), `kid` (overrides key.kid), `header`
 * (merged into the header; a value `undefined` drops the field), `claims`.
 */
function jwt({ alg, key, signKey, kid, header = {}, claims }) {
  const h = { alg, typ: 'JWT', kid: kid ?? key?.kid, ...header };
  for (const k of Object.keys(h)) if (h[k] === undefined) delete h[k];
  const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(signature(alg, signKey ?? key.privateKey, input))}`;
}

// ---------------------------------------------------------------------------
// A JWK set server (loopback http) that counts the requests herald makes

class JwksServer {
  constructor() {
    this.keys = [];
    this.requests = [];
    this.status = 200;
    // While down, every connection is reset before a byte is read (a provider that
    // is down behind its address); `resets` counts them.
    this.down = false;
    this.resets = 0;
    this.server = http.createServer((req, res) => {
      this.requests.push({ at: Date.now(), method: req.method, url: req.url });
      if (this.status !== 200) {
        res.writeHead(this.status, { 'content-type': 'text/plain' });
        res.end('JWKS unavailable (test)');
        return;
      }
      const body = JSON.stringify({ keys: this.keys.map((k) => k.jwk) });
      // 60 s: herald clamps it to at least 5 min, so no background refetch during a test.
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=60' });
      res.end(body);
    });
    this.server.on('connection', (socket) => {
      if (this.down) {
        this.resets += 1;
        socket.resetAndDestroy();
      }
    });
  }

  get port() {
    return this.server.address().port;
  }

  async start(port = 0) {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', resolve);
    });
    this.url = `http://127.0.0.1:${this.server.address().port}/.well-known/jwks.json`;
  }

  setKeys(keys) {
    this.keys = keys;
  }

  get count() {
    return this.requests.length;
  }

  get lastAt() {
    return this.requests.length ? this.requests[this.requests.length - 1].at : 0;
  }

  describe() {
    const t0 = this.requests[0]?.at ?? 0;
    return `JWKS requests (${this.count}, ${this.resets} reset while down): ${this.requests.map((r) => `${r.method} ${r.url} +${r.at - t0}ms`).join(', ')}`;
  }

  /** Waits until herald's refetch rate limit allows a new fetch (window after the last one). */
  async openWindow() {
    const wait = this.lastAt + REFETCH_WINDOW_MS + 400 - Date.now();
    if (wait > 0) await sleep(wait);
  }

  async waitCount(n, timeout, what) {
    const deadline = Date.now() + timeout;
    while (this.count < n) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeout} ms waiting for ${n} JWKS request(s) (${what}); ${this.describe()}`);
      }
      await sleep(25);
    }
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/**
 * A `start` for serverSuite: serves `jwks` first and points herald's `client.<section>`
 * at it; checks the initial fetch.
 */
function startWithJwks(jwks, section = 'token') {
  return async ({ config, label }) => {
    await jwks.start();
    config.client[section].jwks_public_endpoint = jwks.url;
    const server = await startHerald({ config, label });
    try {
      await jwks.waitCount(1, 5_000, 'herald fetches the JWK set at start');
    } catch (err) {
      await server.stop();
      err.message = `[${label}] ${err.message}\n${server.logs()}`;
      throw err;
    }
    return server;
  };
}

// ---------------------------------------------------------------------------
// Raw WebSocket sessions (the `ws` package; replies are JSON lines)

const liveSockets = new Set();

/** A raw client: records replies and the close, answers server pings. */
function rawSession(url, { headers } = {}) {
  const ws = new WebSocket(url, { headers });
  liveSockets.add(ws);
  const session = {
    ws,
    replies: [],
    close: null,
    error: null,
    waiters: new Set(),
    send(obj) {
      ws.send(JSON.stringify(obj));
    },
    /** Resolves with the first reply matching `pred`, or null once closed/timed out. */
    next(pred, timeout) {
      const hit = session.replies.find(pred);
      if (hit || session.close) return Promise.resolve(hit ?? null);
      return new Promise((resolve) => {
        const w = { pred, resolve };
        const timer = setTimeout(() => {
          session.waiters.delete(w);
          resolve(null);
        }, timeout);
        w.resolve = (v) => {
          clearTimeout(timer);
          session.waiters.delete(w);
          resolve(v);
        };
        session.waiters.add(w);
      });
    },
    /** Resolves with the close { code, reason, at }, or null after `timeout`. */
    closed(timeout) {
      return within(session.closedPromise, timeout, 'close').catch(() => null);
    },
    end() {
      try {
        ws.terminate();
      } catch {
        // gone
      }
      liveSockets.delete(ws);
    },
  };
  session.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', (err) => {
      session.error = err;
      reject(err);
    });
  });
  session.opened.catch(() => {});
  session.closedPromise = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      session.close = { code, reason: reason.toString(), at: Date.now() };
      liveSockets.delete(ws);
      for (const w of [...session.waiters]) w.resolve(null);
      resolve(session.close);
    });
  });
  ws.on('message', (data) => {
    for (const line of data.toString('utf8').trim().split('\n')) {
      if (!line.trim()) continue;
      let reply;
      try {
        reply = JSON.parse(line);
      } catch {
        reply = { unparsable: line };
      }
      if (Object.keys(reply).length === 0) {
        session.send({}); // ping → pong
        continue;
      }
      reply.at = Date.now();
      session.replies.push(reply);
      for (const w of [...session.waiters]) if (w.pred(reply)) w.resolve(reply);
    }
  });
  return session;
}

/** Connects raw with `connect` (the connect command's body) and returns the first reply or the close. */
async function rawConnect(url, connectBody, { headers, timeout = 5_000 } = {}) {
  const s = rawSession(url, { headers });
  try {
    await within(s.opened, timeout, 'WebSocket open');
  } catch (err) {
    s.end();
    return { session: s, outcome: `no WebSocket (${err.message})` };
  }
  s.send({ id: 1, connect: connectBody });
  const reply = await s.next((r) => r.id === 1, timeout);
  return { session: s, reply, close: s.close, outcome: describeRaw(reply, s.close) };
}

function describeRaw(reply, close) {
  if (reply?.connect) return 'connect result';
  if (reply?.error) return `error ${reply.error.code}${reply.error.temporary ? ' temporary' : ''}`;
  if (close) return `close ${close.code}`;
  return 'no reply and no close';
}

after(() => {
  for (const ws of liveSockets) ws.terminate();
});

// ---------------------------------------------------------------------------
// SDK helpers

function connectReply(handle) {
  return incomingReplies(handle.frames).find((r) => r.reply.connect)?.reply.connect;
}

/** SDK 'error' events other than a temporary connect error 100 (the retryable one). */
function unexpectedErrors(handle, since = 0) {
  return handle.log
    .all('error', since)
    .filter((e) => !(e.type === 'connect' && e.error?.code === 100 && e.error?.temporary === true))
    .map((e) => `${e.type}: ${JSON.stringify(e.error)}`);
}

/**
 * Starts `handle`'s connect and resolves with what it came to: 'connected', 'closed <code>'
 * or 'no outcome'. Temporary errors 100 on the way are retried by the SDK.
 */
async function connectOutcome(handle, { timeout = 5_000 } = {}) {
  const since = handle.log.mark();
  handle.client.connect();
  try {
    const ctx = await handle.log.waitFor(['connected', 'disconnected'], { since, timeout, what: 'connect outcome' });
    return handle.log.all('connected', since).length > 0 ? 'connected' : `closed ${ctx.code}`;
  } catch {
    return `no outcome in ${timeout} ms`;
  }
}

/** Refresh commands sent by an SDK client and the replies to them. */
function refreshExchanges(handle) {
  const ids = new Set(
    outgoingCommands(handle.frames)
      .filter((c) => c.command.refresh)
      .map((c) => c.command.id),
  );
  return { ids, answers: incomingReplies(handle.frames).filter((r) => ids.has(r.reply.id)).map((r) => r.reply) };
}

// ---------------------------------------------------------------------------
// 1, 3, 4. JWKS: algorithms, claims and headers, flood of unknown kids, refresh

const ISSUER = 'https://idp.herald.test';
const AUDIENCE = 'herald-e2e';

describe('JWKS: keys by kid, algorithms, claims, flood of unknown kids, refresh', () => {
  const keys = {
    es256: newKey(uniq('es256'), 'P-256', { alg: 'ES256' }),
    es384: newKey(uniq('p384-noalg'), 'P-384', { use: null }), // alg from crv, no `use`
    eddsa: newKey(uniq('ed25519'), 'Ed25519', { alg: 'EdDSA' }),
    ed25519: newKey(uniq('ed25519-noalg'), 'Ed25519'), // alg from kty/crv
    rs256: newKey(uniq('rs256'), 'RSA', { alg: 'RS256' }),
    ps256: newKey(uniq('ps256'), 'RSA', { alg: 'PS256' }),
    rsa: newKey(uniq('rsa-noalg'), 'RSA'), // RS* or PS*
    enc: newKey(uniq('enc'), 'P-256', { alg: 'ES256', use: 'enc' }), // not a signing key
  };
  const attacker = {
    ec: newKey('attacker-ec', 'P-256', { alg: 'ES256' }),
    rsa: newKey('attacker-rsa', 'RSA', { alg: 'RS256' }),
  };
  const jwks = new JwksServer();
  jwks.setKeys(Object.values(keys));
  after(() => jwks.stop());

  const suite = serverSuite(
    testConfig({
      client: {
        token: { jwks_public_endpoint: 'set at start', issuer: ISSUER, audience: AUDIENCE },
        expired_close_delay: '1s',
      },
      channel: { without_namespace: { allow_subscribe_for_client: true } },
    }),
    { label: 'herald (jwks)', start: startWithJwks(jwks) },
  );

  const claims = (extra = {}) => ({ sub: uniq('user'), iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600, ...extra });

  suite.test('every supported algorithm connects through the SDK; mismatched algorithms, claims and headers get 3500', async () => {
    const fetchesBefore = jwks.count;
    const rows = [
      // [case, token, expected]
      ['ES256 (JWK alg ES256)', jwt({ alg: 'ES256', key: keys.es256, claims: claims() }), 'connected'],
      ['ES384 (P-384 JWK without alg/use)', jwt({ alg: 'ES384', key: keys.es384, claims: claims() }), 'connected'],
      ['EdDSA (JWK alg EdDSA), no typ', jwt({ alg: 'EdDSA', key: keys.eddsa, header: { typ: undefined }, claims: claims() }), 'connected'],
      ['EdDSA (Ed25519 JWK without alg)', jwt({ alg: 'EdDSA', key: keys.ed25519, claims: claims() }), 'connected'],
      ['RS256, typ at+jwt, aud array', jwt({ alg: 'RS256', key: keys.rs256, header: { typ: 'at+jwt' }, claims: claims({ aud: ['other', AUDIENCE] }) }), 'connected'],
      ['PS256, typ application/AT+JWT', jwt({ alg: 'PS256', key: keys.ps256, header: { typ: 'application/AT+JWT' }, claims: claims() }), 'connected'],
      ['RS384 (RSA JWK without alg)', jwt({ alg: 'RS384', key: keys.rsa, claims: claims() }), 'connected'],
      ['PS512 (RSA JWK without alg), no exp, no sub', jwt({ alg: 'PS512', key: keys.rsa, claims: { iss: ISSUER, aud: AUDIENCE } }), 'connected'],

      ['PS256 header on the RS256 JWK', jwt({ alg: 'PS256', key: keys.rs256, claims: claims() }), 'closed 3500'],
      ['RS256 header on the PS256 JWK', jwt({ alg: 'RS256', key: keys.ps256, claims: claims() }), 'closed 3500'],
      ['ES384 header on the ES256 JWK', jwt({ alg: 'ES384', key: keys.es256, claims: claims() }), 'closed 3500'],
      ['RS256 header and RSA signature, kid of the ES256 JWK', jwt({ alg: 'RS256', key: keys.es256, signKey: attacker.rsa.privateKey, claims: claims() }), 'closed 3500'],
      ['ES256 header, kid of the Ed25519 JWK', jwt({ alg: 'ES256', key: keys.eddsa, signKey: attacker.ec.privateKey, claims: claims() }), 'closed 3500'],
      ['HS256 with the RSA public key PEM as secret', jwt({ alg: 'HS256', key: keys.rs256, signKey: keys.rs256.publicKey.export({ type: 'spki', format: 'pem' }), claims: claims() }), 'closed 3500'],
      ['alg none', jwt({ alg: 'none', key: keys.es256, claims: claims() }), 'closed 3500'],
      ['ES256 signed by another key, same kid', jwt({ alg: 'ES256', key: keys.es256, signKey: attacker.ec.privateKey, claims: claims() }), 'closed 3500'],
      ['wrong issuer', jwt({ alg: 'ES256', key: keys.es256, claims: claims({ iss: 'https://evil.example' }) }), 'closed 3500'],
      ['no audience', jwt({ alg: 'ES256', key: keys.es256, claims: claims({ aud: undefined }) }), 'closed 3500'],
      ['typ dpop+jwt', jwt({ alg: 'ES256', key: keys.es256, header: { typ: 'dpop+jwt' }, claims: claims() }), 'closed 3500'],
      ['header jku', jwt({ alg: 'ES256', key: keys.es256, header: { jku: 'https://evil.example/jwks.json' }, claims: claims() }), 'closed 3500'],
      ['header x5u', jwt({ alg: 'ES256', key: keys.es256, header: { x5u: 'https://evil.example/cert.pem' }, claims: claims() }), 'closed 3500'],
      ['header jwk', jwt({ alg: 'ES256', key: keys.es256, header: { jwk: attacker.ec.jwk }, claims: claims() }), 'closed 3500'],
      ['header x5c', jwt({ alg: 'ES256', key: keys.es256, header: { x5c: [b64url(randomBytes(64)).replace(/[-_]/g, 'A')] }, claims: claims() }), 'closed 3500'],
      ['header crit', jwt({ alg: 'ES256', key: keys.es256, header: { crit: ['exp'] }, claims: claims() }), 'closed 3500'],
    ];
    const got = [];
    const replies = {};
    for (const [what, token] of rows) {
      const h = suite.client({ label: what, token });
      const outcome = await connectOutcome(h, { timeout: 5_000 });
      got.push([what, outcome, ...unexpectedErrors(h)]);
      replies[what] = connectReply(h);
      h.client.disconnect();
    }
    const wrong = got
      .map(([what, outcome, ...errors], i) => ({ what, outcome, errors, expected: rows[i][2] }))
      .filter((r) => r.outcome !== r.expected || r.errors.length > 0)
      .map((r) => `${r.what}: expected ${r.expected}, got ${r.outcome}${r.errors.length ? ` with SDK errors ${r.errors.join('; ')}` : ''}`);
    assert.deepEqual(wrong, [], `tokens with an unexpected outcome:\n${wrong.join('\n')}`);
    const noExp = replies['PS512 (RSA JWK without alg), no exp, no sub'];
    assert.ok(!noExp.expires, `a token without exp makes a connection that does not expire: ${JSON.stringify(noExp)}`);
    assert.equal(jwks.count, fetchesBefore, `kids in the set need no refetch; ${jwks.describe()}`);
  });

  suite.test('a kid whose JWK has use "enc" is not a signing key: 3500 after a fresh fetch', async () => {
    await jwks.openWindow();
    const before = jwks.count;
    const h = suite.client({ label: 'enc kid', token: jwt({ alg: 'ES256', key: keys.enc, claims: claims() }) });
    const outcome = await connectOutcome(h, { timeout: 10_000 });
    assert.equal(outcome, 'closed 3500', 'the token of an encryption key is refused');
    assert.deepEqual(unexpectedErrors(h), [], 'no SDK error but temporary connect errors 100');
    assert.equal(jwks.count, before + 1, `one refetch for the unknown kid; ${jwks.describe()}`);
  });

  suite.test('flood: 200 connects with random kids in ~1 s make at most 2 JWKS fetches; herald keeps serving', async () => {
    await jwks.openWindow();
    const before = jwks.count;
    const started = Date.now();
    const attempts = [];
    for (let i = 0; i < 200; i++) {
      const token = jwt({ alg: 'ES256', key: keys.es256, kid: `flood-${hex(8)}`, claims: claims() });
      attempts.push(rawConnect(suite.server.wsUrl, { token }, { timeout: 10_000 }));
      await sleep(5);
    }
    const results = await Promise.all(attempts);
    const spread = Date.now() - started;
    for (const r of results) r.session.end();

    const tally = {};
    for (const r of results) tally[r.outcome] = (tally[r.outcome] ?? 0) + 1;
    const delta = jwks.count - before;
    const other = Object.keys(tally).filter((k) => k !== 'error 100 temporary' && k !== 'close 3500');
    assert.deepEqual(other, [], `every flood connect gets error 100 (temporary) or close 3500: ${JSON.stringify(tally)}`);
    assert.ok(delta >= 1 && delta <= 2, `1 or 2 JWKS fetches for the flood (spread ${spread} ms), got ${delta}; ${jwks.describe()}`);
    assert.ok(tally['close 3500'] >= 1, `the connects answered after the fresh fetch are closed with 3500: ${JSON.stringify(tally)}`);
    assert.ok(tally['error 100 temporary'] >= 1, `the rate-limited ones get error 100: ${JSON.stringify(tally)}`);

    const h = suite.client({ label: 'after flood', token: jwt({ alg: 'ES256', key: keys.es256, claims: claims() }) });
    await connect(h);
    const s = suite.subscription(h, uniq('after-flood'));
    await subscribe(s);
    assert.equal(jwks.count - before, delta, 'a known kid after the flood needs no fetch');
  });

  suite.test('refresh: getToken with JWKS ES256 tokens keeps the connection across 3 expiries; no refresh → 3005', async () => {
    const user = uniq('jwks-refresher');
    let calls = 0;
    const mint = (exp) => jwt({ alg: 'ES256', key: keys.es256, claims: claims({ sub: user, exp }) });
    const h = suite.client({
      label: 'refresher',
      token: mint(nowSec() + 3),
      getToken: async () => {
        calls++;
        return mint(nowSec() + 3);
      },
    });

    // In parallel, a raw client that never refreshes.
    const lapsedExp = nowSec() + 2;
    const lapsed = await rawConnect(suite.server.wsUrl, { token: mint(lapsedExp) });
    const t0 = Date.now();
    try {
      assert.equal(lapsed.outcome, 'connect result', `raw connect: ${JSON.stringify(lapsed.reply)}`);
      assert.equal(lapsed.reply.connect.expires, true, 'the raw connection expires');

      const since = h.log.mark();
      await connect(h);
      const reply = connectReply(h);
      assert.equal(reply?.expires, true, 'connect result says the connection expires');
      assert.ok(reply.ttl > 0 && reply.ttl <= 3, `connect result ttl in (0, 3], got ${reply.ttl}`);

      const closed = await lapsed.session.closed(10_000);
      assert.equal(closed?.code, 3005, `the connection without refresh is closed with 3005, got ${JSON.stringify(closed)}`);
      const deadline = lapsedExp * 1000 + 1_000;
      assert.ok(closed.at >= deadline - 300, `not closed before exp + expired_close_delay (${deadline - closed.at} ms early)`);
      assert.ok(closed.at <= deadline + 4_000, `closed shortly after exp + expired_close_delay (${closed.at - deadline} ms late)`);

      await sleep(Math.max(0, 10_500 - (Date.now() - t0)));

      assert.equal(h.client.state, 'connected');
      assert.deepEqual(h.log.all('disconnected', since), [], 'no disconnect');
      assert.equal(h.log.all('connected', since).length, 1, 'one connection all along');
      assert.deepEqual(h.log.all('error', since).map((e) => `${e.type}: ${JSON.stringify(e.error)}`), [], 'no SDK error');
      assert.ok(calls >= 3, `getToken called at least 3 times, got ${calls}`);
      const { ids, answers } = refreshExchanges(h);
      assert.ok(ids.size >= 3, `at least 3 refresh commands sent, got ${ids.size}`);
      assert.equal(answers.length, ids.size, 'every refresh command was answered');
      for (const r of answers) {
        assert.equal(r.error, undefined, `refresh answered without error: ${JSON.stringify(r)}`);
        assert.equal(r.refresh?.expires, true, `refresh result says expires: ${JSON.stringify(r)}`);
        assert.ok(r.refresh.ttl > 0 && r.refresh.ttl <= 3, `refresh ttl in (0, 3]: ${JSON.stringify(r)}`);
      }
    } finally {
      lapsed.session.end();
    }
  });
});

// ---------------------------------------------------------------------------
// 2. Rotation while clients stay connected

describe('JWKS rotation: k1 → {k1, k2} → {k2} with clients connected', () => {
  const API_KEY = `api-${hex(16)}`;
  const k1 = newKey(uniq('k1'), 'P-256', { alg: 'ES256' });
  const k2 = newKey(uniq('k2'), 'Ed25519', { alg: 'EdDSA' });
  const jwks = new JwksServer();
  jwks.setKeys([k1]);
  after(() => jwks.stop());

  const suite = serverSuite(
    testConfig({
      http_api: { key: API_KEY },
      client: { token: { jwks_public_endpoint: 'set at start' } },
      channel: { without_namespace: { allow_subscribe_for_client: true } },
    }),
    { label: 'herald (jwks rotation)', start: startWithJwks(jwks) },
  );

  async function publish(channel, data) {
    const res = await within(
      fetch(`${suite.server.apiUrl}/api/publish`, {
        method: 'POST',
        headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel, data }),
      }),
      5_000,
      'POST /api/publish',
    );
    const text = await res.text();
    assert.equal(res.status, 200, `API publish: HTTP ${res.status} ${text}`);
    assert.ok(!JSON.parse(text).error, `API publish: ${text}`);
  }

  const tokenOf = (key, sub = uniq('user'), kid = key.kid) =>
    jwt({ alg: key.jwk.alg, key, kid, claims: { sub, exp: nowSec() + 600 } });

  suite.test('new kid learned by refetch; removed kid refused with 3500; connected clients unaffected', async () => {
    const channel = uniq('rotation');
    const old = [];
    for (const label of ['k1 client A', 'k1 client B']) {
      const h = suite.client({ label, token: tokenOf(k1) });
      await connect(h);
      const s = suite.subscription(h, channel);
      await subscribe(s);
      old.push({ h, s, since: h.log.mark(), subSince: s.log.mark() });
    }

    // {k1, k2}: a k2 token makes herald refetch (maybe after temporary errors 100).
    jwks.setKeys([k1, k2]);
    const fetchesBefore = jwks.count;
    const c2 = suite.client({ label: 'k2 client', token: tokenOf(k2) });
    assert.equal(await connectOutcome(c2, { timeout: 10_000 }), 'connected', 'the k2 client ends connected');
    assert.deepEqual(unexpectedErrors(c2), [], 'no SDK error but temporary connect errors 100');
    assert.equal(jwks.count, fetchesBefore + 1, `one refetch taught herald k2; ${jwks.describe()}`);
    const s2 = suite.subscription(c2, channel);
    await subscribe(s2);
    const c2Since = c2.log.mark();
    const s2Since = s2.log.mark();

    // {k2}: a never-seen kid makes herald refetch once the window allows it.
    jwks.setKeys([k2]);
    await jwks.openWindow();
    let before = jwks.count;
    const probe = await rawConnect(suite.server.wsUrl, { token: tokenOf(k2, uniq('probe'), `never-seen-${hex(6)}`) });
    probe.session.end();
    assert.equal(probe.outcome, 'close 3500', `an unknown kid after a fresh fetch is closed with 3500 (${JSON.stringify(probe.reply)})`);
    assert.equal(jwks.count, before + 1, `the unknown kid caused one fetch; ${jwks.describe()}`);

    // A fresh k1 token is refused now (after temporary errors 100 while the window is closed).
    before = jwks.count;
    const late = suite.client({ label: 'fresh k1 client', token: tokenOf(k1) });
    assert.equal(await connectOutcome(late, { timeout: 12_000 }), 'closed 3500', 'a k1 token is refused once k1 is gone');
    assert.deepEqual(unexpectedErrors(late), [], 'no SDK error but temporary connect errors 100');
    assert.ok(jwks.count <= before + 1, `at most one more fetch for the k1 retries; ${jwks.describe()}`);

    // A k2 token still connects at once.
    const c3 = suite.client({ label: 'second k2 client', token: tokenOf(k2) });
    await connect(c3);

    // The clients connected with k1 stay connected and receive publications.
    const marker = uniq('after-rotation');
    await publish(channel, { marker });
    for (const { h, s, since, subSince } of [...old, { h: c2, s: s2, since: c2Since, subSince: s2Since }]) {
      const p = await s.log.waitFor('publication', { since: subSince, pred: (c) => c.data?.marker === marker, what: `${h.label}: API publication` });
      assert.deepEqual(p.data, { marker });
      assert.equal(h.client.state, 'connected', `${h.label} still connected`);
      assert.deepEqual(h.log.all('disconnected', since), [], `${h.label} was not disconnected`);
      assert.deepEqual(h.log.all('connecting', since), [], `${h.label} did not reconnect`);
    }

    // JWKS endpoint down: a failed refetch keeps the last good set.
    jwks.status = 503;
    await jwks.openWindow();
    before = jwks.count;
    const probe2 = await rawConnect(suite.server.wsUrl, { token: tokenOf(k2, uniq('probe'), `never-seen-${hex(6)}`) });
    probe2.session.end();
    await jwks.waitCount(before + 1, 3_000, 'refetch attempt while the endpoint answers 503');
    assert.notEqual(probe2.outcome, 'connect result', 'an unknown kid does not connect while the endpoint is down');
    const c4 = suite.client({ label: 'k2 client while JWKS is down', token: tokenOf(k2) });
    await connect(c4);
    const k1Again = suite.client({ label: 'k1 client while JWKS is down', token: tokenOf(k1) });
    assert.notEqual(await connectOutcome(k1Again, { timeout: 2_000 }), 'connected', 'k1 stays removed while JWKS is down');
    jwks.status = 200;
  }, { timeout: 60_000 });
});

describe('JWKS for subscription tokens: a kid published after herald fetched the set', () => {
  const k1 = newKey(uniq('sub-k1'), 'P-256', { alg: 'ES256' });
  const k2 = newKey(uniq('sub-k2'), 'Ed25519', { alg: 'EdDSA' });
  const jwks = new JwksServer();
  jwks.setKeys([k1]);
  after(() => jwks.stop());

  // Connection tokens are HMAC (the harness default); subscription tokens come from JWKS.
  const suite = serverSuite(testConfig({ client: { subscription_token: { enabled: true, jwks_public_endpoint: 'set at start' } } }), {
    label: 'herald (subscription jwks)',
    start: startWithJwks(jwks, 'subscription_token'),
  });

  suite.test('subscribe waits for one refetch: a new kid subscribes, an absent kid gets 103', async () => {
    const user = uniq('subscriber');
    const h = suite.client({ label: 'subscriber', token: connectionToken({ sub: user }) });
    await connect(h);
    const subToken = (key, channel, kid = key.kid) =>
      jwt({ alg: key.jwk.alg, key, kid, claims: { sub: user, channel, exp: nowSec() + 600 } });
    const resubscribe = { minResubscribeDelay: 200, maxResubscribeDelay: 1_000 };

    const first = `$${uniq('k1-channel')}`;
    await subscribe(suite.subscription(h, first, { token: subToken(k1, first), ...resubscribe }));

    // The provider publishes k2 and a token signed with it arrives before herald refetched.
    jwks.setKeys([k1, k2]);
    await jwks.openWindow();
    let before = jwks.count;
    const second = `$${uniq('k2-channel')}`;
    const s2 = suite.subscription(h, second, { token: subToken(k2, second), ...resubscribe });
    const since2 = s2.log.mark();
    s2.sub.subscribe();
    await s2.log.waitFor('subscribed', { since: since2, timeout: 5_000, what: `subscribed with a k2 token (${jwks.describe()})` });
    assert.deepEqual(s2.log.all('error', since2), [], 'the subscribe waited for the refetch: no error, not even a temporary one');
    assert.equal(jwks.count, before + 1, `one refetch taught herald k2; ${jwks.describe()}`);

    // A kid the provider never published: one more refetch, then a terminal 103.
    await jwks.openWindow();
    before = jwks.count;
    const third = `$${uniq('never-channel')}`;
    const s3 = suite.subscription(h, third, { token: subToken(k2, third, `never-seen-${hex(6)}`), ...resubscribe });
    const since3 = s3.log.mark();
    s3.sub.subscribe();
    const gone = await s3.log.waitFor('unsubscribed', { since: since3, timeout: 5_000, what: 'unsubscribed after a fresh set lacks the kid' });
    assert.equal(gone.code, 103, `the SDK reports permission denied: ${JSON.stringify(gone)}`);
    assert.equal(jwks.count, before + 1, `one refetch for the unknown kid; ${jwks.describe()}`);

    assert.equal(h.client.state, 'connected', 'the connection stays up through all of it');
    assert.deepEqual(h.log.all('disconnected'), [], 'never disconnected');
  }, { timeout: 60_000 });
});

// ---------------------------------------------------------------------------
// JWKS endpoint configuration and an endpoint that is down when herald starts

describe('JWKS endpoint: plain http only to loopback; down at start', () => {
  const key = newKey(uniq('late'), 'P-256', { alg: 'ES256' });
  // The endpoint holds its port for the whole test and resets every connection while
  // it is down: a port released now and bound again later can be taken meanwhile by
  // any socket on the machine, herald's own included.
  const jwks = new JwksServer();
  jwks.setKeys([key]);
  jwks.down = true;
  after(() => jwks.stop());

  const suite = serverSuite(testConfig({ client: { token: { jwks_public_endpoint: 'set at start' } } }), {
    label: 'herald (jwks down at start)',
    start: async ({ config, label }) => {
      await jwks.start();
      config.client.token.jwks_public_endpoint = `http://127.0.0.1:${jwks.port}/keys`;
      return startHerald({ config, label });
    },
  });

  test('plain http to a host that is not loopback is a config error', async () => {
    const config = testConfig({ client: { token: { jwks_public_endpoint: 'http://jwks.example.com/keys' } } });
    let server = null;
    try {
      server = await startHerald({ config, label: 'herald (jwks over http to a remote host)' });
    } catch (err) {
      assert.match(err.message, /exited before listening/, `herald refuses to start: ${err.message.slice(0, 2_000)}`);
      assert.match(err.message, /jwks_public_endpoint[^\n]*https/, `the error names the setting and https: ${err.message.slice(0, 2_000)}`);
      return;
    }
    await server.stop();
    assert.fail('herald started with jwks_public_endpoint = http://jwks.example.com/keys');
  });

  suite.test('no key set loaded yet: connects get temporary error 100 until the endpoint answers', async () => {
    const h = suite.client({ label: 'early client', token: jwt({ alg: 'ES256', key, claims: { sub: uniq('early') } }) });
    const since = h.log.mark();
    h.client.connect();
    await h.log.waitFor('error', { since, pred: (e) => e.error?.code === 100, timeout: 5_000, what: 'connect error 100' });
    await sleep(1_500);
    assert.deepEqual(unexpectedErrors(h, since), [], `only temporary connect errors 100 while no key set is loaded; ${jwks.describe()}`);
    assert.deepEqual(h.log.all('connected', since), [], 'not connected without a key set');
    assert.deepEqual(h.log.all('disconnected', since), [], 'the SDK keeps retrying');
    assert.ok(jwks.resets >= 1, `herald tried the endpoint while it was down; ${jwks.describe()}`);

    jwks.down = false;
    // The next fetch comes at most one refetch window after the last one (a connect
    // naming the kid, or the background retry), and the SDK retries within 1 s; the
    // rest is slack for a loaded machine.
    await h.log.waitFor('connected', {
      since,
      timeout: 2 * REFETCH_WINDOW_MS + 10_000,
      what: `connected once the JWKS endpoint answers (${jwks.describe()})`,
    });
    assert.ok(jwks.count >= 1, `herald fetched the set; ${jwks.describe()}`);
    assert.ok(
      jwks.requests.every((r) => r.method === 'GET' && r.url === '/keys'),
      `herald fetches the configured URL: ${jwks.describe()}`,
    );
  }, { timeout: 60_000 });
});

// ---------------------------------------------------------------------------
// 5. OAuth2 introspection against oidc-provider over https


/** oidc-provider 9.x under https on a loopback port; counts the introspection requests. */
class AuthorizationServer {
  constructor(certs, clients) {
    this.certs = certs;
    this.clients = clients;
    this.introspections = [];
    this.tlsErrors = [];
  }

  async start() {
    let Provider;
    try {
      ({ default: Provider } = await import('oidc-provider'));
    } catch (err) {
      throw new Error(`the npm package oidc-provider (9.x) is missing: run 'npm ci' in tests/sdk/js (${err.message})`);
    }
    this.server = https.createServer({ key: readFileSync(this.certs.key), cert: readFileSync(this.certs.cert) });
    this.server.on('tlsClientError', (err) => this.tlsErrors.push(`${err.code ?? ''} ${err.message}`));
    await this.listen(0);
    this.port = this.server.address().port;
    this.issuer = `https://localhost:${this.port}`;
    const shortLived = new Set(this.clients.filter((c) => c.short).map((c) => c.client_id));
    this.provider = new Provider(this.issuer, {
      clients: this.clients.map(({ short, ...c }) => c),
      scopes: ['herald:sub:news', 'herald:sub:weather'],
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        introspection: { enabled: true, allowedPolicy: async (ctx, client) => client.clientId === 'herald' },
      },
      ttl: { ClientCredentials: (ctx, token, client) => (shortLived.has(client.clientId) ? 3 : 600) },
    });
    const callback = this.provider.callback();
    this.server.on('request', (req, res) => {
      if (req.url.startsWith('/token/introspection')) {
        this.introspections.push({ at: Date.now(), authorization: req.headers.authorization ?? '' });
      }
      callback(req, res);
    });
    this.introspectionUrl = `${this.issuer}/token/introspection`;
  }

  listen(port) {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  async stop() {
    if (!this.server?.listening) return;
    const closed = new Promise((resolve) => this.server.close(resolve));
    this.server.closeAllConnections();
    await closed;
  }

  /** Listens again on the same port (the provider keeps its tokens). */
  restart() {
    return this.listen(this.port);
  }

  /** POST /token with client_credentials for client `id`; resolves with the access token. */
  async clientCredentials(id, secret, scope) {
    const body = new URLSearchParams({ grant_type: 'client_credentials', ...(scope ? { scope } : {}) }).toString();
    const res = await new Promise((resolve, reject) => {
      const req = https.request(
        `${this.issuer}/token`,
        {
          method: 'POST',
          ca: readFileSync(this.certs.ca),
          agent: false,
          headers: {
            authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`,
            'content-type': 'application/x-www-form-urlencoded',
            'content-length': Buffer.byteLength(body),
          },
        },
        (r) => {
          let text = '';
          r.setEncoding('utf8');
          r.on('data', (c) => (text += c));
          r.on('end', () => resolve({ status: r.statusCode, text }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(res.status, 200, `POST /token for ${id}: HTTP ${res.status} ${res.text}`);
    const json = JSON.parse(res.text);
    assert.ok(json.access_token && !json.access_token.startsWith('eyJ'), `an opaque access token: ${res.text}`);
    return json;
  }
}

describe('OAuth2 introspection against oidc-provider over https', () => {
  const HERALD_SECRET = `rs-${hex(16)}`;
  const APP_SECRET = `app-${hex(16)}`;
  const SHORT_SECRET = `short-${hex(16)}`;
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-idp-'));
  let as = null;
  let certs = null;
  after(async () => {
    if (as) await as.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const base = {
    client: {
      expired_close_delay: '1s',
      introspection: {
        endpoint: 'set at start',
        client_id: 'herald',
        client_secret: HERALD_SECRET,
        cache_ttl: '60s',
        subscribe_scope_prefix: 'herald:sub:',
      },
    },
    // No allow_subscribe_for_client: only the scopes grant channels.
    channel: { without_namespace: { presence: true, allow_presence_for_subscriber: true } },
  };

  const suite = serverSuite(testConfig(base), {
    label: 'herald (introspection)',
    start: async ({ config, label }) => {
      certs = makeTestCertificates(dir, CA_NAME);
      as = new AuthorizationServer(certs, [
        {
          client_id: 'app',
          client_secret: APP_SECRET,
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
          token_endpoint_auth_method: 'client_secret_basic',
          scope: 'herald:sub:news herald:sub:weather',
        },
        {
          client_id: 'app-short',
          client_secret: SHORT_SECRET,
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
          token_endpoint_auth_method: 'client_secret_basic',
          scope: 'herald:sub:news',
          short: true,
        },
        {
          client_id: 'herald',
          client_secret: HERALD_SECRET,
          grant_types: [],
          response_types: [],
          redirect_uris: [],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ]);
      await as.start();
      config.client.introspection.endpoint = as.introspectionUrl;
      return startHerald({ config, label, env: { SSL_CERT_FILE: certs.ca } });
    },
  });

  const appToken = async () => (await as.clientCredentials('app', APP_SECRET, 'herald:sub:news')).access_token;
  const shortToken = async () => (await as.clientCredentials('app-short', SHORT_SECRET, 'herald:sub:news')).access_token;

  suite.test('refresh: a new introspected token keeps the connection; a token of another user is refused with 3500', async () => {
    let calls = 0;
    const keeper = suite.client({
      label: 'app-short refresher',
      token: await shortToken(),
      getToken: async () => {
        calls++;
        return shortToken();
      },
    });
    const switcher = suite.client({
      label: 'app-short → app',
      token: await shortToken(),
      getToken: async () => appToken(),
    });
    const since = keeper.log.mark();
    const t0 = Date.now();
    await connect(keeper);
    const reply = connectReply(keeper);
    assert.equal(reply?.expires, true, `the connection expires with the token: ${JSON.stringify(reply)}`);
    assert.ok(reply.ttl > 0 && reply.ttl <= 3, `connect ttl in (0, 3] (token TTL 3 s), got ${reply.ttl}`);

    const swSince = switcher.log.mark();
    await connect(switcher);
    const d = await switcher.log.waitFor('disconnected', { since: swSince, timeout: 8_000, what: 'refresh naming another user' });
    assert.equal(d.code, 3500, `refresh with a token of another client closes with 3500, got ${d.code} ${d.reason}`);

    await sleep(Math.max(0, 7_500 - (Date.now() - t0)));
    assert.equal(keeper.client.state, 'connected');
    assert.deepEqual(keeper.log.all('disconnected', since), [], 'no disconnect');
    assert.equal(keeper.log.all('connected', since).length, 1, 'one connection all along');
    assert.deepEqual(keeper.log.all('error', since).map((e) => `${e.type}: ${JSON.stringify(e.error)}`), [], 'no SDK error');
    assert.ok(calls >= 2, `getToken called at least twice, got ${calls}`);
    const { ids, answers } = refreshExchanges(keeper);
    assert.ok(ids.size >= 2, `at least 2 refresh commands, got ${ids.size}`);
    assert.equal(answers.length, ids.size, 'every refresh answered');
    for (const r of answers) {
      assert.equal(r.error, undefined, `refresh answered without error: ${JSON.stringify(r)}`);
      assert.equal(r.refresh?.expires, true, `refresh result expires: ${JSON.stringify(r)}`);
    }
  }, { timeout: 30_000 });

  suite.test('opaque token: user = client_id, channels by scope (news ok, sport 103), inactive 3500, AS down → 100', async () => {
    const introspectedBefore = as.introspections.length;
    const h = suite.client({ label: 'app', token: await appToken() });
    await connect(h);
    const reply = connectReply(h);
    assert.equal(reply?.expires, true, `the connection expires with the token: ${JSON.stringify(reply)}`);
    assert.ok(reply.ttl > 500 && reply.ttl <= 600, `connect ttl ≈ the token's 600 s, got ${reply.ttl}`);
    const calls = as.introspections.slice(introspectedBefore);
    assert.ok(calls.length >= 1, 'herald asked the authorization server');
    assert.equal(
      calls[0].authorization,
      `Basic ${Buffer.from(`herald:${HERALD_SECRET}`).toString('base64')}`,
      'herald authenticates with client_secret_basic',
    );

    // news: granted by the scope herald:sub:news; the user is the client_id.
    const news = suite.subscription(h, 'news');
    await subscribe(news);
    const presence = await within(news.sub.presence(), 5_000, 'presence of news');
    const users = Object.values(presence.clients).map((c) => c.user);
    assert.deepEqual(users, ['app'], `the connection's user is the client_id: ${JSON.stringify(presence)}`);

    // sport: no scope for it.
    const sport = suite.subscription(h, 'sport');
    const sportSince = sport.log.mark();
    sport.sub.subscribe();
    const un = await sport.log.waitFor('unsubscribed', { since: sportSince, what: 'subscribe to sport refused' });
    assert.equal(un.code, 103, `subscribe to sport refused with 103, got ${un.code} ${un.reason}`);
    const refusal = incomingReplies(h.frames).find((r) => r.reply.error && outgoingCommands(h.frames).some((c) => c.command.id === r.reply.id && c.command.subscribe?.channel === 'sport'));
    assert.equal(refusal?.reply.error.code, 103, 'the subscribe reply carries error 103');

    // A random opaque string: inactive → 3500.
    const stranger = suite.client({ label: 'random opaque token', token: hex(24) });
    assert.equal(await connectOutcome(stranger), 'closed 3500', 'an inactive token is refused with 3500');
    assert.deepEqual(unexpectedErrors(stranger), []);

    // Authorization server down: a new client gets temporary error 100 and keeps retrying.
    const fresh = await appToken(); // never introspected, so not cached
    const since = h.log.mark();
    await as.stop();
    const late = suite.client({ label: 'while the AS is down', token: fresh });
    const lateSince = late.log.mark();
    late.client.connect();
    await late.log.waitFor('error', {
      since: lateSince,
      pred: (e) => e.type === 'connect' && e.error?.code === 100,
      timeout: 6_000,
      what: 'connect error 100',
    });
    await sleep(2_500);
    const errors = late.log.all('error', lateSince);
    assert.ok(errors.length >= 2, `the SDK keeps retrying (${errors.length} connect errors)`);
    for (const e of errors) {
      assert.deepEqual([e.type, e.error?.code, e.error?.temporary], ['connect', 100, true], `a temporary error 100: ${JSON.stringify(e)}`);
    }
    assert.deepEqual(late.log.all('connected', lateSince), [], 'not connected while the AS is down');
    assert.deepEqual(late.log.all('disconnected', lateSince), [], 'not given up either');
    assert.equal(late.client.state, 'connecting');

    // The established connection is untouched.
    assert.equal(h.client.state, 'connected');
    assert.deepEqual(h.log.all('disconnected', since), [], 'the earlier client was not disconnected');
    const again = await within(news.sub.presence(), 5_000, 'presence while the AS is down');
    assert.deepEqual(Object.values(again.clients).map((c) => c.user), ['app']);

    // The AS comes back: the retrying client connects with the same token.
    await as.restart();
    await late.log.waitFor('connected', { since: lateSince, timeout: 8_000, what: 'connect once the AS is back' });
  }, { timeout: 40_000 });

  suite.test("herald verifies the authorization server's certificate (no SSL_CERT_FILE: error 100, no request)", async () => {
    const config = testConfig(base);
    config.client.introspection.endpoint = as.introspectionUrl;
    const untrusting = await startHerald({ config, label: 'herald (introspection, CA not trusted)' });
    const frames = [];
    const client = new Centrifuge(untrusting.wsUrl, {
      token: await appToken(),
      websocket: recordingWebSocket(frames),
      minReconnectDelay: 200,
      maxReconnectDelay: 1_000,
    });
    const log = new EventLog(client, ['connecting', 'connected', 'disconnected', 'error'], 'untrusting client');
    const before = as.introspections.length;
    const tlsBefore = as.tlsErrors.length;
    try {
      client.connect();
      const e = await log.waitFor('error', { pred: (c) => c.type === 'connect', timeout: 8_000, what: 'connect error' });
      assert.deepEqual([e.error?.code, e.error?.temporary], [100, true], `temporary error 100: ${JSON.stringify(e)}`);
      assert.deepEqual(log.all('connected'), [], 'not connected');
      assert.equal(as.introspections.length, before, 'no introspection request reached the AS (TLS refused)');
      const deadline = Date.now() + 2_000;
      while (as.tlsErrors.length === tlsBefore && Date.now() < deadline) await sleep(50);
      assert.ok(
        as.tlsErrors.slice(tlsBefore).some((e) => /unknown ca|bad certificate|certificate/i.test(e)),
        `herald aborted the TLS handshake over the certificate: ${JSON.stringify(as.tlsErrors.slice(tlsBefore))}`,
      );
    } catch (err) {
      err.message = `${err.message}\n--- client events ---\n${log.summary()}\n${untrusting.logTail(60)}`;
      throw err;
    } finally {
      client.disconnect();
      await untrusting.stop();
    }
  });
});

// ---------------------------------------------------------------------------
// 6. Authorization: Bearer on the WebSocket upgrade

describe('Authorization: Bearer on the WebSocket upgrade', () => {
  const suite = serverSuite(
    testConfig({
      channel: { without_namespace: { allow_subscribe_for_client: true, presence: true, allow_presence_for_subscriber: true } },
    }),
    { label: 'herald (bearer header)' },
  );

  /** Subscribes a raw session to `channel` and returns the users in its presence. */
  async function usersIn(session, channel) {
    session.send({ id: 2, subscribe: { channel } });
    const sub = await session.next((r) => r.id === 2, 5_000);
    assert.ok(sub?.subscribe, `subscribe: ${JSON.stringify(sub)}`);
    session.send({ id: 3, presence: { channel } });
    const p = await session.next((r) => r.id === 3, 5_000);
    assert.ok(p?.presence, `presence: ${JSON.stringify(p)}`);
    return Object.values(p.presence.presence).map((c) => c.user);
  }

  suite.test('a bearer token on the upgrade with an empty connect token connects; without it the connect is refused', async () => {
    const sessions = [];
    try {
      const user = uniq('bearer');
      const withHeader = await rawConnect(suite.server.wsUrl, {}, { headers: { Authorization: `Bearer ${connectionToken({ sub: user })}` } });
      sessions.push(withHeader.session);
      assert.equal(withHeader.outcome, 'connect result', `connect with the header: ${JSON.stringify(withHeader.reply)} ${JSON.stringify(withHeader.close)}`);
      assert.equal(typeof withHeader.reply.connect.client, 'string');
      const channel = uniq('bearer-room');
      assert.deepEqual(await usersIn(withHeader.session, channel), [user], 'the connection is the header token\'s user');

      // A token in the connect command wins over the header.
      const other = uniq('command-user');
      const both = await rawConnect(
        suite.server.wsUrl,
        { token: connectionToken({ sub: other }) },
        { headers: { Authorization: `Bearer ${connectionToken({ sub: uniq('header-user') })}` } },
      );
      sessions.push(both.session);
      assert.equal(both.outcome, 'connect result', `connect with both: ${JSON.stringify(both.reply)}`);
      const room2 = uniq('both-room');
      assert.deepEqual(await usersIn(both.session, room2), [other], 'the connect command token wins');

      const without = await rawConnect(suite.server.wsUrl, {});
      sessions.push(without.session);
      if (!without.close) await without.session.closed(3_000);
      assert.equal(without.reply?.connect, undefined, 'no connect result without the header');
      assert.equal(without.session.close?.code, 3501, `without a token: closed with 3501, got ${JSON.stringify(without.session.close)} reply ${JSON.stringify(without.reply)}`);

      const forged = await rawConnect(suite.server.wsUrl, {}, { headers: { Authorization: `Bearer ${connectionToken({ sub: user }, `wrong-${hex(32)}`)}` } });
      sessions.push(forged.session);
      if (!forged.close) await forged.session.closed(3_000);
      assert.equal(forged.reply?.connect, undefined, 'no connect result with a forged header token');
      assert.equal(forged.session.close?.code, 3500, `a forged header token: closed with 3500, got ${JSON.stringify(forged.session.close)}`);
    } finally {
      for (const s of sessions) s.end();
    }
  });
});
