// Zero-config dev profile: `herald serve` with no config and no HERALD_* env listens on
// 127.0.0.1:8000 and prints a ready-to-use connection token. Run alone: it needs port 8000.

import assert from 'node:assert/strict';
import net from 'node:net';

import { connect, decodeJwtClaims, serverSuite, startHerald, subscribe, within } from './harness.mjs';

const PORT = 8000;

function portIsFree(port) {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

const suite = serverSuite(null, {
  label: 'herald (zero-config)',
  start: async ({ label }) => {
    if (!(await portIsFree(PORT))) {
      throw new Error(`port ${PORT} is busy: the zero-config test needs it`);
    }
    return startHerald({ config: null, waitForToken: true, label });
  },
});

suite.test('zero-config: banner token connects, subscribe to news, publish, receive', async () => {
  const { server } = suite;
  assert.equal(server.wsUrl, `ws://127.0.0.1:${PORT}/connection/websocket`, 'listens on 127.0.0.1:8000');
  assert.ok(server.token, 'the banner prints a connection token');
  const claims = decodeJwtClaims(server.token);

  const h = suite.client({ label: 'dev', token: server.token });
  const connected = await connect(h);

  const s = suite.subscription(h, 'news');
  const subscribed = await subscribe(s);
  assert.equal(subscribed.recoverable, true, 'the dev profile forces recovery');

  const since = s.log.mark();
  await within(s.sub.publish({ headline: 'herald is up' }), 5_000, 'publish reply');
  const pub = await s.log.waitFor('publication', { since, what: 'own publication on news' });
  assert.deepEqual(pub.data, { headline: 'herald is up' });
  assert.equal(pub.info?.client, connected.client);
  assert.equal(pub.info?.user, claims.sub ?? '');

  const hist = await within(s.sub.history({ limit: 10 }), 5_000, 'history reply');
  assert.deepEqual(
    hist.publications.map((p) => p.data),
    [{ headline: 'herald is up' }],
    'the dev profile keeps history',
  );
});
