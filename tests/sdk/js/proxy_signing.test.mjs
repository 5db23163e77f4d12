// Signed proxy requests (docs/proxy.md, "Signed proxy requests"): with
// [proxy_signing], every request herald sends the backend carries
// X-Herald-Signature, and the backend (tests/backends/proxy_backend.py
// --signing-key, which checks it as the docs' Python does) accepts it; the
// same request replayed after the window, or with its body or path changed,
// is refused. The keys rotate without a restart (SIGHUP), and a key the
// backend does not hold makes the call error 100.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';

import { connect, connectionToken, repoRoot, serverSuite, sleep, testConfig, toToml, uniq, within } from './harness.mjs';

const KEYS = {
  k1: randomBytes(32).toString('base64'),
  k2: randomBytes(32).toString('base64'),
  k3: randomBytes(32).toString('base64'),
};
const MAX_AGE = 30;
const backend = { child: null, log: '' };

/** Starts the backend holding k1 and k2 (not k3); resolves with its port. */
function startBackend() {
  const script = path.join(repoRoot, 'tests', 'backends', 'proxy_backend.py');
  const args = [script, '--max-age', String(MAX_AGE), '--signing-key', `k1=${KEYS.k1}`, '--signing-key', `k2=${KEYS.k2}`];
  const child = spawn('python3', args, { stdio: ['ignore', 'pipe', 'pipe'] });
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

const PORT = await within(startBackend(), 10_000, 'the proxy backend to listen');
after(() => backend.child?.kill());

const signing = (active, ids) => ({ active, keys: ids.map((id) => ({ id, secret: KEYS[id] })) });

const config = testConfig({
  rpc: {
    proxy: {
      endpoint: `http://127.0.0.1:${PORT}/rpc?tenant=t1`,
      timeout: '2s',
      // Never sent: herald's own signature is the only one.
      http: { static_headers: { 'X-Herald-Signature': 'v1,kid=k1,ts=0,sig=forged' } },
    },
    without_namespace: { proxy_enabled: true },
  },
  proxy_signing: signing('k1', ['k1', 'k2']),
});
const suite = serverSuite(config, { label: 'herald (signed proxy)' });

async function backendGet(what) {
  const res = await fetch(`http://127.0.0.1:${PORT}/${what}`);
  return res.json();
}

async function replay(ask) {
  const res = await fetch(`http://127.0.0.1:${PORT}/replay`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(ask),
  });
  assert.equal(res.status, 200, `replay ${JSON.stringify(ask)}`);
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

async function connected(label) {
  const user = uniq(label);
  const h = suite.client({ label, token: connectionToken({ sub: user }) });
  await connect(h);
  return { h, user };
}

/** The request the backend received for the rpc whose data is `{ mark }`. */
async function requestFor(mark) {
  const all = await backendGet('requests');
  const index = all.findIndex((r) => r.call?.data?.mark === mark && r.replay_of === undefined);
  assert.ok(index >= 0, `the backend got the request marked ${mark}: ${JSON.stringify(all)}`);
  return { index, request: all[index] };
}

/** Rewrites herald's config with `proxy_signing` and reloads it with SIGHUP. */
async function rotate(proxySigning) {
  const server = suite.server;
  const reloaded = () => server.logs().split('\n').filter((l) => l.includes('proxy signing keyring reloaded'));
  const before = reloaded().length;
  writeFileSync(path.join(server.dir, 'herald.toml'), toToml({ ...config, proxy_signing: proxySigning }));
  try {
    process.kill(-server.child.pid, 'SIGHUP');
  } catch {
    server.child.kill('SIGHUP');
  }
  const deadline = Date.now() + 5_000;
  while (reloaded().length <= before) {
    assert.ok(Date.now() < deadline, 'no "proxy signing keyring reloaded" line within 5 s');
    await sleep(50);
  }
  const line = reloaded().at(-1);
  assert.ok(line.includes(`Some("${proxySigning.active}")`), line);
  assert.ok(!Object.values(KEYS).some((k) => line.includes(k)), `no secret in the log: ${line}`);
}

suite.test('every request is signed with the active key, over the path and body sent, and verifies', async () => {
  const { h, user } = await connected('signed');
  const mark = uniq('m');
  const got = await rpc(h, 'echo', { mark });
  assert.equal(got.error, undefined, `the rpc succeeded: ${got.error?.message}`);
  assert.equal(got.data.user, user);

  const { request } = await requestFor(mark);
  assert.equal(request.path, '/rpc?tenant=t1');
  assert.equal(request.verified, true, `verified: ${request.reason}`);
  assert.match(request.signature, /^v1,kid=k1,ts=\d+,sig=[A-Za-z0-9_-]{43}$/);
  const ts = Number(/ts=(\d+)/.exec(request.signature)[1]);
  assert.ok(Math.abs(Date.now() / 1000 - ts) < 5, `ts ${ts} is herald's now`);
});

suite.test('a replay is accepted within the window only, and a changed body or path never', async () => {
  const { h } = await connected('replayed');
  const mark = uniq('m');
  assert.equal((await rpc(h, 'echo', { mark })).error, undefined);
  const { index, request } = await requestFor(mark);

  assert.deepEqual(await replay({ index }), { status: 200, verified: true, reason: null }, 'within the window');
  assert.deepEqual(
    await replay({ index, advance: MAX_AGE + 5 }),
    { status: 401, verified: false, reason: 'stale' },
    'after the window',
  );
  const changed = request.body.replace(mark, `${mark}x`);
  assert.notEqual(changed, request.body);
  assert.deepEqual(
    await replay({ index, body: changed }),
    { status: 401, verified: false, reason: 'bad_signature' },
    'a changed body',
  );
  assert.deepEqual(
    await replay({ index, path: '/rpc?tenant=t2' }),
    { status: 401, verified: false, reason: 'bad_signature' },
    'another path',
  );
});

suite.test('keys rotate without a restart; a key the backend lacks makes the call error 100', async () => {
  const { h } = await connected('rotated');

  await rotate(signing('k2', ['k1', 'k2']));
  const mark2 = uniq('m');
  assert.equal((await rpc(h, 'echo', { mark: mark2 })).error, undefined);
  const { request: signed2 } = await requestFor(mark2);
  assert.match(signed2.signature, /^v1,kid=k2,/);
  assert.equal(signed2.verified, true);

  await rotate(signing('k3', ['k2', 'k3']));
  const mark3 = uniq('m');
  const refused = await rpc(h, 'echo', { mark: mark3 });
  assert.equal(refused.error?.code, 100, `error 100: ${JSON.stringify(refused)}`);
  const { request: signed3 } = await requestFor(mark3);
  assert.match(signed3.signature, /^v1,kid=k3,/);
  assert.deepEqual([signed3.verified, signed3.reason], [false, 'unknown_key']);

  // Back to a key the backend holds: the same connection's calls go through again.
  await rotate(signing('k1', ['k1']));
  const mark1 = uniq('m');
  assert.equal((await rpc(h, 'echo', { mark: mark1 })).error, undefined);
  assert.equal((await requestFor(mark1)).request.verified, true);
});
