// Server pings with the real centrifuge-js SDK: an idle connection survives several
// ping intervals because the server pings at the advertised interval and accepts pongs.

import assert from 'node:assert/strict';

import {
  connect,
  connectionToken,
  incomingReplies,
  outgoingCommands,
  serverSuite,
  sleep,
  testConfig,
  uniq,
} from './harness.mjs';

const suite = serverSuite(testConfig({ client: { ping_interval: '1s', pong_timeout: '500ms' } }), {
  label: 'herald (ping)',
});

const isEmpty = (obj) => obj && typeof obj === 'object' && Object.keys(obj).length === 0;

suite.test('an idle connection survives 3 ping intervals (pings sent, pongs accepted)', async () => {
  const h = suite.client({
    label: 'idle',
    token: connectionToken({ sub: uniq('idle') }),
    // The SDK gives up on the connection if no ping arrives within ping + 1 s.
    maxServerPingDelay: 1_000,
  });
  await connect(h);
  const since = h.log.mark();
  const connectedAt = Date.now();

  const result = incomingReplies(h.frames).find((r) => r.reply.connect)?.reply.connect;
  assert.equal(result?.ping, 1, 'connect result advertises ping = 1 (seconds)');
  assert.equal(result.pong, true, 'connect result asks for pongs');

  await sleep(3_600);

  assert.equal(h.client.state, 'connected');
  assert.deepEqual(h.log.all('connecting', since), [], 'no reconnect (no ping timeout, no 3012)');
  assert.deepEqual(h.log.all('disconnected', since), [], 'no disconnect');

  const pings = incomingReplies(h.frames).filter((r) => r.at >= connectedAt && isEmpty(r.reply));
  const pongs = outgoingCommands(h.frames).filter((c) => c.at >= connectedAt && isEmpty(c.command));
  assert.ok(pings.length >= 3, `at least 3 pings ({}) in 3.6 s, got ${pings.length}`);
  assert.ok(pongs.length >= pings.length - 1, `the SDK answered the pings (${pongs.length} pongs)`);
});
