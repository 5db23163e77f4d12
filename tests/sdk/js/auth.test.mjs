// Connection tokens with the real centrifuge-js SDK: refresh, expiry (3005),
// expired at connect (109), invalid signature (3500, terminal).

import assert from 'node:assert/strict';

import {
  connect,
  connectionToken,
  incomingReplies,
  nowSec,
  outgoingCommands,
  serverSuite,
  sleep,
  testConfig,
  uniq,
} from './harness.mjs';

const EXPIRED_CLOSE_DELAY_MS = 1_000;

const suite = serverSuite(
  testConfig({
    client: {
      expired_close_delay: '1s',
      expired_sub_close_delay: '1s',
      presence_update_interval: '1s',
    },
    channel: { without_namespace: { allow_subscribe_for_client: true } },
  }),
  { label: 'herald (auth)' },
);

function connectReply(handle) {
  return incomingReplies(handle.frames).find((r) => r.reply.connect)?.reply.connect;
}

suite.test(
  'refresh: a connection whose token is refreshed stays connected across 3 expiries',
  async () => {
    const user = uniq('refresher');
    let calls = 0;
    const h = suite.client({
      label: 'refresher',
      token: connectionToken({ sub: user, exp: nowSec() + 3 }),
      getToken: async () => {
        calls++;
        return connectionToken({ sub: user, exp: nowSec() + 3 });
      },
    });
    const since = h.log.mark();
    await connect(h);
    const reply = connectReply(h);
    assert.equal(reply?.expires, true, 'connect result says the connection expires');
    assert.ok(reply.ttl > 0 && reply.ttl <= 3, `connect result ttl in (0, 3], got ${reply.ttl}`);

    await sleep(10_500);

    assert.equal(h.client.state, 'connected');
    assert.deepEqual(h.log.all('disconnected', since), [], 'no disconnect');
    assert.deepEqual(h.log.all('connecting', since).filter((c) => c.code !== 0), [], 'no reconnect');
    assert.equal(h.log.all('connected', since).length, 1, 'one connection all along');
    assert.deepEqual(h.log.all('error', since), [], 'no SDK error (e.g. a failed refresh)');
    assert.ok(calls >= 3, `getToken called at least 3 times, got ${calls}`);

    const refreshIds = new Set(
      outgoingCommands(h.frames)
        .filter((c) => c.command.refresh)
        .map((c) => c.command.id),
    );
    assert.ok(refreshIds.size >= 3, `at least 3 refresh commands sent, got ${refreshIds.size}`);
    const answers = incomingReplies(h.frames).filter((r) => refreshIds.has(r.reply.id));
    assert.equal(answers.length, refreshIds.size, 'every refresh command was answered');
    for (const { reply: r } of answers) {
      assert.equal(r.error, undefined, `refresh answered without error: ${JSON.stringify(r)}`);
      assert.equal(r.refresh?.expires, true, `refresh result says expires: ${JSON.stringify(r)}`);
      assert.ok(r.refresh.ttl > 0, `refresh result has a ttl: ${JSON.stringify(r)}`);
    }
  },
  { timeout: 30_000 },
);

suite.test(
  'no refresh: the server closes with 3005 after exp + expired_close_delay',
  async () => {
    const user = uniq('lapsed');
    const exp = nowSec() + 2;
    let calls = 0;
    const h = suite.client({
      label: 'lapsed',
      token: connectionToken({ sub: user, exp }),
      // A plain rejection (not UnauthorizedError): the SDK reports it and retries later,
      // so the close observed below is the server's doing.
      getToken: async () => {
        calls++;
        throw new Error('test: no fresh token available');
      },
    });
    await connect(h);
    assert.equal(connectReply(h)?.expires, true, 'connect result says the connection expires');
    const since = h.log.mark();

    const closed = await h.log.waitFor(['connecting', 'disconnected'], {
      since,
      pred: (ctx) => ctx.code >= 3000,
      timeout: 12_000,
      what: 'server close after expiry',
    });
    const closedAt = h.log.entryOf(closed).at;
    assert.equal(closed.code, 3005, `closed with 3005 (connection expired), got ${closed.code} ${closed.reason}`);
    const deadline = exp * 1000 + EXPIRED_CLOSE_DELAY_MS;
    assert.ok(
      closedAt >= deadline - 300,
      `not closed before exp + expired_close_delay (closed ${deadline - closedAt} ms early)`,
    );
    assert.ok(closedAt <= deadline + 4_000, `closed shortly after the deadline (${closedAt - deadline} ms late)`);
    assert.ok(calls >= 1, 'the SDK tried to refresh (the server advertised the expiry)');
  },
  { timeout: 30_000 },
);

suite.test('expired token at connect: error 109, the SDK gets a new token and connects', async () => {
  const user = uniq('late');
  let calls = 0;
  const h = suite.client({
    label: 'late',
    token: connectionToken({ sub: user, exp: nowSec() - 60 }),
    getToken: async () => {
      calls++;
      return connectionToken({ sub: user });
    },
  });
  const since = h.log.mark();
  h.client.connect();
  await h.log.waitFor('connected', { since, timeout: 10_000, what: 'connect with the new token' });
  assert.equal(calls, 1, 'getToken called once');
  const refusal = incomingReplies(h.frames).find((r) => r.reply.error);
  assert.equal(refusal?.reply.error.code, 109, 'the first connect was answered with error 109');
  assert.equal(typeof refusal.reply.error.message, 'string');
});

suite.test('invalid token signature: disconnected with 3500 and no reconnect', async () => {
  const bad = connectionToken({ sub: uniq('mallory') }, 'not-the-server-secret-but-32-bytes-long');
  const h = suite.client({ label: 'mallory', token: bad });
  const since = h.log.mark();
  h.client.connect();
  const d = await h.log.waitFor('disconnected', { since, what: 'terminal disconnect' });
  assert.equal(d.code, 3500, `disconnected with 3500 (invalid token), got ${d.code} ${d.reason}`);
  const close = h.frames.find((f) => f.dir === 'close');
  assert.match(close?.text ?? '', /^code=3500 /, 'the server closed the WebSocket with code 3500');

  const mark = h.log.mark();
  await sleep(2_000);
  assert.deepEqual(h.log.all('connecting', mark), [], 'no reconnect attempt');
  assert.deepEqual(h.log.all('connected', since), [], 'never connected');
  assert.equal(h.client.state, 'disconnected');
});
