// Token revocation across nodes (Redis engine): a token revoked or a user's tokens
// invalidated through the server API on node 2 closes the live connection on node 1
// with 3500 within 5 s, and the same token is refused at the next connect.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { connectClient, nodesSuite } from './cluster_support.mjs';
import { nowSec, signHs256, uniq } from './harness.mjs';

const API_KEY = 'revocation-test-key';

async function api(node, method, body) {
  const response = await fetch(`${node.apiUrl}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `${method}: HTTP ${response.status}`);
  const json = await response.json();
  assert.ok(!json.error, `${method}: ${JSON.stringify(json.error)}`);
  return json.result;
}

describe('token revocation across nodes (redis standalone)', () => {
  const env = nodesSuite({
    nodes: 2,
    mode: 'standalone',
    config: { http_api: { key: API_KEY } },
    label: 'herald (revocation)',
  });

  env.test('revoke_token on node 2 closes the connection on node 1 with 3500 within 5 s', async () => {
    const user = uniq('user');
    const jti = uniq('jti');
    const token = signHs256({ sub: user, jti, exp: nowSec() + 3600 });
    const handle = env.client(0, { token, label: 'holder' });
    await connectClient(handle);

    const since = handle.log.mark();
    const started = Date.now();
    await api(env.cluster.nodes[1], 'revoke_token', { uid: jti, expire_at: nowSec() + 3600 });
    const ctx = await handle.log.waitFor('disconnected', { since, timeout: 5_000, what: 'disconnect after revocation' });
    assert.equal(ctx.code, 3500, `close code: ${JSON.stringify(ctx)}`);
    assert.ok(Date.now() - started < 5_000);

    // The revoked token is refused at connect, on either node.
    const again = env.client(1, { token, label: 'retry' });
    const retrySince = again.log.mark();
    again.client.connect();
    const refused = await again.log.waitFor('disconnected', { since: retrySince, timeout: 5_000, what: 'refused connect' });
    assert.equal(refused.code, 3500);
  });

  env.test('invalidate_user_tokens closes the user\'s older connections; a newer token connects', async () => {
    const user = uniq('user');
    const old = signHs256({ sub: user, iat: nowSec() - 60, exp: nowSec() + 3600 });
    const handle = env.client(0, { token: old, label: 'old' });
    await connectClient(handle);

    const since = handle.log.mark();
    await api(env.cluster.nodes[1], 'invalidate_user_tokens', { user, issued_before: nowSec() - 1 });
    const ctx = await handle.log.waitFor('disconnected', { since, timeout: 5_000, what: 'disconnect after invalidation' });
    assert.equal(ctx.code, 3500);

    const fresh = signHs256({ sub: user, iat: nowSec(), exp: nowSec() + 3600 });
    const newer = env.client(1, { token: fresh, label: 'fresh' });
    await connectClient(newer);
  });
});
