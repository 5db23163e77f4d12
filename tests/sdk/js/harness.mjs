// Test harness for the centrifuge-js compatibility suite.
//
// Starts the real `herald serve` binary on OS-chosen ports, mints HS256 tokens, builds
// SDK clients that record their events and WebSocket frames, and dumps the server's
// logs and the recorded frames into the error of any failing test.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');

/** A fresh 32-byte secret per test process. */
export const SECRET = randomBytes(32).toString('hex');

const LISTENING_RE = /herald listening ws=(wss?:\/\/\S+) api=(https?:\/\/\S+)/;
const JWT_RE = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/;
const START_TIMEOUT_MS = 20_000;

// ---------------------------------------------------------------------------
// Small utilities

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const nowSec = () => Math.floor(Date.now() / 1000);

/** A name unique to this run, so tests never share channels or users by accident. */
export const uniq = (prefix) => `${prefix}-${randomBytes(4).toString('hex')}`;

/** Rejects with a message naming `what` if `promise` does not settle within `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// Tokens (HS256, no library)

const b64url = (buf) => Buffer.from(buf).toString('base64url');

export function signHs256(claims, secret = SECRET) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

/** Connection token: `sub`, optional `exp` (unix seconds) and `info`. */
export function connectionToken({ sub, exp, info } = {}, secret = SECRET) {
  const claims = { sub };
  if (exp !== undefined) claims.exp = exp;
  if (info !== undefined) claims.info = info;
  return signHs256(claims, secret);
}

/** Subscription token: `sub`, `channel`, optional `exp`. */
export function subscriptionToken({ sub, channel, exp } = {}, secret = SECRET) {
  const claims = { sub, channel };
  if (exp !== undefined) claims.exp = exp;
  return signHs256(claims, secret);
}

export function decodeJwtClaims(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

// ---------------------------------------------------------------------------
// Config

/** Serialises a plain object to TOML: scalars, arrays of scalars, tables, arrays of tables. */
export function toToml(obj) {
  const out = [];
  const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const isTableArray = (v) => Array.isArray(v) && v.length > 0 && v.every(isTable);
  const scalar = (v) => {
    if (typeof v === 'string') return JSON.stringify(v);
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (Array.isArray(v)) return `[${v.map(scalar).join(', ')}]`;
    throw new Error(`cannot write ${JSON.stringify(v)} as a TOML value`);
  };
  const emit = (table, prefix) => {
    for (const [k, v] of Object.entries(table)) {
      if (v === undefined || isTable(v) || isTableArray(v)) continue;
      out.push(`${k} = ${scalar(v)}`);
    }
    for (const [k, v] of Object.entries(table)) {
      if (!isTable(v)) continue;
      const name = prefix ? `${prefix}.${k}` : k;
      out.push('', `[${name}]`);
      emit(v, name);
    }
    for (const [k, v] of Object.entries(table)) {
      if (!isTableArray(v)) continue;
      const name = prefix ? `${prefix}.${k}` : k;
      for (const item of v) {
        out.push('', `[[${name}]]`);
        emit(item, name);
      }
    }
  };
  emit(obj, '');
  return out.join('\n').trim() + '\n';
}

function merge(base, extra) {
  const result = { ...base };
  for (const [k, v] of Object.entries(extra || {})) {
    const isPlain = v !== null && typeof v === 'object' && !Array.isArray(v);
    result[k] = isPlain && result[k] && typeof result[k] === 'object' ? merge(result[k], v) : v;
  }
  return result;
}

/** The config every test server starts from: loopback, OS-chosen port, the test secret. */
export function testConfig(extra = {}) {
  return merge(
    {
      http_server: { address: '127.0.0.1', port: 0, internal_port: 0 },
      client: { token: { hmac_secret_key: SECRET } },
      log: { level: 'debug' },
      shutdown: { timeout: '1s' },
    },
    extra,
  );
}

// ---------------------------------------------------------------------------
// Test certificates

/** Runs the `openssl` CLI in `dir`; throws with its output when it fails. */
export function openssl(dir, args) {
  try {
    return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    if (err.code === 'ENOENT') throw new Error("the openssl CLI is missing: install it (e.g. 'apt-get install -y openssl')");
    throw new Error(`openssl ${args.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

/**
 * A test CA (`caName`) and a server certificate for localhost and 127.0.0.1 signed by
 * it, ECDSA P-256, made with openssl in `dir`. Returns the paths { ca, cert, key }.
 */
export function makeTestCertificates(dir, caName) {
  const ecKey = (out) => openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', out]);
  ecKey('ca.key');
  openssl(dir, [
    'req', '-x509', '-new', '-key', 'ca.key', '-sha256', '-days', '2', '-subj', `/CN=${caName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', 'ca.pem',
  ]);
  ecKey('server.key');
  openssl(dir, ['req', '-new', '-key', 'server.key', '-subj', '/CN=localhost', '-out', 'server.csr']);
  writeFileSync(
    path.join(dir, 'server.ext'),
    [
      'subjectAltName = DNS:localhost, IP:127.0.0.1',
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature',
      'extendedKeyUsage = serverAuth',
    ].join('\n') + '\n',
  );
  openssl(dir, [
    'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`,
    '-days', '2', '-sha256', '-extfile', 'server.ext', '-out', 'server.pem',
  ]);
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

// ---------------------------------------------------------------------------
// The server process

export function heraldBin() {
  const bin = process.env.HERALD_BIN || path.join(repoRoot, 'target', 'debug', 'herald');
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(
      `herald binary not found or not executable at ${bin}: ` +
        `build it with 'cargo build --locked -p herald' or point HERALD_BIN at it`,
    );
  }
  return bin;
}

/** The environment for a child herald: ours without any HERALD_* variable (the config env layer). */
export function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.toUpperCase().startsWith('HERALD_')) env[k] = v;
  }
  return { ...env, ...extra };
}

// Children run in their own process group, so a wrapper script given as HERALD_BIN
// is stopped together with what it started.
function signal(child, sig) {
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  }
}

const liveChildren = new Set();
process.on('exit', () => {
  for (const child of liveChildren) signal(child, 'SIGKILL');
});

/**
 * Starts `herald serve` and resolves once its stdout announced the listening line.
 * `config`: an object written as TOML to a temp file and passed with --config; `null`
 * starts herald with no config at all (zero-config profile).
 * `waitForToken`: also wait for a JWT printed on stdout (zero-config banner).
 * `env`: extra environment variables for herald (e.g. SSL_CERT_FILE).
 */
export async function startHerald({ config, waitForToken = false, label = 'herald', env = {} } = {}) {
  const bin = heraldBin();
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-sdk-js-'));
  const args = ['serve'];
  if (config !== null) {
    const file = path.join(dir, 'herald.toml');
    writeFileSync(file, toToml(config));
    args.push('--config', file);
  }
  const child = spawn(bin, args, {
    cwd: dir,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  liveChildren.add(child);

  let stdout = '';
  let stderr = '';
  let exited = null;
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
    check();
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });

  let resolveReady;
  let rejectReady;
  const ready = new Promise((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });

  function check() {
    const m = LISTENING_RE.exec(stdout);
    if (!m) return;
    let token = null;
    if (waitForToken) {
      const afterListening = stdout.slice(m.index + m[0].length);
      const t = JWT_RE.exec(afterListening) || JWT_RE.exec(stdout.slice(0, m.index));
      if (!t) return;
      token = t[0];
    }
    resolveReady({ wsUrl: m[1], apiUrl: m[2], token });
  }

  const server = {
    bin,
    dir,
    child,
    wsUrl: null,
    apiUrl: null,
    token: null,
    logs: () => `--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`,
    logTail(lines = 200) {
      const tail = (s) => s.split('\n').slice(-lines).join('\n');
      return `--- herald stdout (tail) ---\n${tail(stdout)}\n--- herald stderr (last ${lines} lines) ---\n${tail(stderr)}`;
    },
    get exited() {
      return exited;
    },
    async stop() {
      if (exited === null) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        signal(child, 'SIGTERM');
        const stopped = await Promise.race([gone.then(() => true), sleep(5_000).then(() => false)]);
        if (!stopped) {
          signal(child, 'SIGKILL');
          await gone;
        }
      }
      // Whatever the process group still holds (a wrapper's children).
      signal(child, 'SIGKILL');
      liveChildren.delete(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };

  child.on('exit', (code, sig) => {
    exited = { code, signal: sig };
    liveChildren.delete(child);
    // Let the pipes drain first, so the error carries everything herald printed.
    const drained = new Promise((resolve) => child.once('close', resolve));
    Promise.race([drained, sleep(1_000)]).then(() =>
      rejectReady(new Error(`herald exited before listening (code ${code}, signal ${sig})`)),
    );
  });
  child.on('error', (err) => rejectReady(new Error(`cannot start ${bin}: ${err.message}`)));

  try {
    const found = await within(
      ready,
      START_TIMEOUT_MS,
      waitForToken
        ? 'herald did not print the listening line and a connection token on stdout'
        : "herald did not print 'herald listening ws=... api=...' on stdout",
    );
    server.wsUrl = found.wsUrl;
    server.apiUrl = found.apiUrl;
    server.token = found.token;
  } catch (err) {
    await server.stop();
    err.message = `[${label}] ${err.message}\n${server.logs()}`;
    throw err;
  }
  return server;
}

// ---------------------------------------------------------------------------
// Recording events and frames

function describeCtx(ctx) {
  if (!ctx || typeof ctx !== 'object') return '';
  const parts = [];
  for (const k of ['code', 'reason', 'newState', 'type', 'recovered', 'client']) {
    if (k in ctx) parts.push(`${k}=${JSON.stringify(ctx[k])}`);
  }
  if (ctx.error) parts.push(`error=${JSON.stringify(ctx.error)}`);
  if ('data' in ctx) parts.push(`data=${JSON.stringify(ctx.data)}`);
  if (ctx.info) parts.push(`info.client=${ctx.info.client}`);
  return parts.join(' ');
}

/** Records every named event of an emitter; waits on recorded or future events. */
export class EventLog {
  constructor(emitter, names, label) {
    this.label = label;
    this.entries = [];
    this.waiters = new Set();
    for (const name of names) {
      // Handlers must never throw: an exception in a handler makes the SDK disconnect.
      emitter.on(name, (ctx) => this.push(name, ctx));
    }
  }

  push(name, ctx) {
    const entry = { name, ctx, at: Date.now(), index: this.entries.length };
    this.entries.push(entry);
    for (const w of [...this.waiters]) {
      if (w.names.includes(name) && entry.index >= w.since && safePred(w.pred, ctx)) {
        this.waiters.delete(w);
        w.resolve(ctx);
      }
    }
  }

  /** Position to pass as `since` to look only at events after now. */
  mark() {
    return this.entries.length;
  }

  all(name, since = 0) {
    return this.entries.slice(since).filter((e) => e.name === name).map((e) => e.ctx);
  }

  entriesOf(name, since = 0) {
    return this.entries.slice(since).filter((e) => e.name === name);
  }

  /** The recorded entry (with its time `at`) of an event context. */
  entryOf(ctx) {
    return this.entries.find((e) => e.ctx === ctx);
  }

  /** Resolves with the context of the first event named `name` (or one of the names). */
  waitFor(name, { pred = () => true, since = 0, timeout = 5_000, what = '' } = {}) {
    const names = Array.isArray(name) ? name : [name];
    const hit = this.entries.slice(since).find((e) => names.includes(e.name) && safePred(pred, e.ctx));
    if (hit) return Promise.resolve(hit.ctx);
    return new Promise((resolve, reject) => {
      let timer = null;
      const w = {
        names,
        pred,
        since,
        resolve: (ctx) => {
          clearTimeout(timer);
          resolve(ctx);
        },
      };
      this.waiters.add(w);
      timer = setTimeout(() => {
        if (!this.waiters.delete(w)) return;
        reject(
          new Error(
            `timed out after ${timeout} ms waiting for ${this.label} '${names.join("' or '")}'` +
              (what ? ` (${what})` : '') +
              `; events so far:\n${this.summary()}`,
          ),
        );
      }, timeout);
    });
  }

  summary(last = 30) {
    return this.entries
      .slice(-last)
      .map((e) => `  ${e.name} ${describeCtx(e.ctx)}`)
      .join('\n');
  }
}

function safePred(pred, ctx) {
  try {
    return !!pred(ctx);
  } catch {
    return false;
  }
}

/** A WebSocket class (for the SDK's `websocket` option) that records every frame. */
export function recordingWebSocket(frames) {
  return class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('message', (data, isBinary) => {
        frames.push({ dir: 'in', at: Date.now(), text: isBinary ? binaryText(data) : data.toString('utf8'), binary: isBinary });
      });
      this.on('close', (code, reason) => {
        frames.push({ dir: 'close', at: Date.now(), text: `code=${code} reason=${reason.toString()}` });
      });
    }

    send(data, ...rest) {
      const binary = typeof data !== 'string';
      frames.push({ dir: 'out', at: Date.now(), text: binary ? binaryText(data) : data, binary });
      return super.send(data, ...rest);
    }
  };
}

/** A binary (protobuf) frame as its size and first bytes in hex, for the diagnostics. */
function binaryText(data) {
  const bytes = Buffer.from(data);
  return `<binary ${bytes.length} bytes: ${bytes.subarray(0, 64).toString('hex')}${bytes.length > 64 ? '…' : ''}>`;
}

/** Splits recorded incoming text frames into the JSON replies they carry. */
export function incomingReplies(frames) {
  const replies = [];
  for (const f of frames) {
    if (f.dir !== 'in') continue;
    for (const line of f.text.trim().split('\n')) {
      if (!line.trim()) continue;
      try {
        replies.push({ at: f.at, reply: JSON.parse(line) });
      } catch {
        replies.push({ at: f.at, reply: { unparsable: line } });
      }
    }
  }
  return replies;
}

/** Splits recorded outgoing text frames into the JSON commands they carry. */
export function outgoingCommands(frames) {
  const commands = [];
  for (const f of frames) {
    if (f.dir !== 'out') continue;
    for (const line of f.text.trim().split('\n')) {
      if (!line.trim()) continue;
      try {
        commands.push({ at: f.at, command: JSON.parse(line) });
      } catch {
        commands.push({ at: f.at, command: { unparsable: line } });
      }
    }
  }
  return commands;
}

const CLIENT_EVENTS = ['state', 'connecting', 'connected', 'disconnected', 'error'];
const SUB_EVENTS = ['state', 'subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error'];

// ---------------------------------------------------------------------------
// A suite: one herald per test file, clients cleaned up after every test

/**
 * Declares the file's server (started in `before`, stopped in `after`) and returns
 * helpers. Every test made with `suite.test` disconnects its clients when it ends and,
 * when it fails, gets the server's log tail and the clients' frames appended to its error.
 */
export function serverSuite(config, { label = 'herald', start = startHerald } = {}) {
  const state = { server: null, startError: null, clients: [] };

  before(async () => {
    state.server = await start({ config, label });
  });

  after(async () => {
    await closeClients(state);
    if (state.server) await state.server.stop();
  });

  return {
    get server() {
      if (!state.server) throw new Error('herald is not running (see the before hook failure)');
      return state.server;
    },

    /** Creates a tracked SDK client (not yet connected); `protobuf`: the SDK's protobuf build. */
    client({ label = 'client', protobuf = false, ...options } = {}) {
      const frames = [];
      const Sdk = protobuf ? CentrifugeProtobuf : Centrifuge;
      const client = new Sdk(this.server.wsUrl, {
        websocket: recordingWebSocket(frames),
        minReconnectDelay: 200,
        maxReconnectDelay: 1_000,
        ...options,
      });
      const log = new EventLog(client, CLIENT_EVENTS, label);
      const handle = { client, log, frames, label, subs: [] };
      state.clients.push(handle);
      return handle;
    },

    /** Creates a subscription on a tracked client, with its own event log. */
    subscription(handle, channel, options = {}) {
      const sub = handle.client.newSubscription(channel, options);
      const log = new EventLog(sub, SUB_EVENTS, `${handle.label} sub ${channel}`);
      handle.subs.push(log);
      return { sub, log };
    },

    test(name, fn, { timeout = 30_000 } = {}) {
      diagnosedTest(name, fn, {
        timeout,
        diagnostics: () => diagnostics(state),
        cleanup: () => closeClients(state),
      });
    },
  };
}

/**
 * A node:test test whose failure carries `diagnostics()` (what the clients and
 * the server saw) in its message and stack; `cleanup` runs after it either way.
 */
export function diagnosedTest(name, fn, { timeout = 30_000, diagnostics: diag, cleanup }) {
  test(name, { timeout }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      // Reporters print the stack, which was captured with the original message.
      const text = diag();
      if (err && typeof err === 'object') {
        err.message = `${err.message}\n${text}`;
        if (typeof err.stack === 'string') err.stack = `${err.stack}\n${text}`;
      }
      throw err;
    } finally {
      await cleanup();
    }
  });
}

function diagnostics(state) {
  const parts = [];
  for (const h of state.clients) {
    parts.push(`--- ${h.label}: events ---\n${h.log.summary()}`);
    for (const s of h.subs) parts.push(`--- ${s.label}: events ---\n${s.summary()}`);
    const frames = h.frames.slice(-40).map((f) => `  ${f.dir} ${f.text.slice(0, 400)}`);
    parts.push(`--- ${h.label}: last frames ---\n${frames.join('\n')}`);
  }
  parts.push(state.server ? state.server.logTail(150) : '(herald not running)');
  return parts.join('\n');
}

async function closeClients(state) {
  for (const h of state.clients) {
    try {
      h.client.disconnect();
    } catch {
      // nothing to do
    }
  }
  state.clients = [];
  // Let close frames go out before the next test or the server stop.
  await sleep(50);
}

/** POST /api/<method> on `apiUrl` with the key; resolves with the parsed reply (HTTP 200 required). */
export async function apiCall(apiUrl, key, method, body) {
  const res = await within(
    fetch(`${apiUrl}/api/${method}`, {
      method: 'POST',
      headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    }),
    5_000,
    `POST /api/${method}`,
  );
  const text = await res.text();
  assert.equal(res.status, 200, `POST /api/${method} ${JSON.stringify(body)}: HTTP ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Connects a tracked client and waits for `connected`. Returns the connected context. */
export async function connect(handle, { timeout = 5_000 } = {}) {
  const since = handle.log.mark();
  handle.client.connect();
  return handle.log.waitFor('connected', { since, timeout, what: 'connect' });
}

/** Subscribes and waits for `subscribed`. Returns the subscribed context. */
export async function subscribe({ sub, log }, { timeout = 5_000 } = {}) {
  const since = log.mark();
  sub.subscribe();
  return log.waitFor('subscribed', { since, timeout, what: 'subscribe' });
}

// ---------------------------------------------------------------------------
// Metrics

/** `GET /metrics` of the server whose internal listener is `apiUrl`; its text. */
export async function metricsText(apiUrl) {
  const res = await within(fetch(`${apiUrl}/metrics`), 5_000, 'GET /metrics');
  assert.equal(res.status, 200, 'GET /metrics');
  return res.text();
}

/** The value of one series of a Prometheus text exposition, null when absent. */
export function metricSample(text, name, labels = {}) {
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) got[l[1]] = l[2];
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return null;
}

/** The lines of `name`'s series, for a failure message. */
export const metricLines = (text, name) =>
  text.split('\n').filter((l) => l.startsWith(name)).join('\n') || `(no ${name} series)`;
