// centrifuge-js in a real browser (Debian Chromium, headless, driven by playwright-core)
// falls back from WebSocket to herald's HTTP-streaming and SSE emulation transports
// behind an nginx that refuses WebSocket upgrades, the way a restrictive corporate
// proxy does. nginx serves the test page (tests/sdk/js/browser/) and the SDK's ESM build
// from node_modules, and proxies /connection/ and /emulation to herald, so the page,
// the streams and the emulation POSTs are same-origin.
//
// 1. transports [websocket, http_stream, sse]: the WebSocket is refused (403 from nginx),
//    the client connects with http_stream, subscribes (the subscribe command goes as a
//    POST /emulation) and receives publications sent through herald's server API.
// 2. transports [websocket, sse]: the same with SSE.
// 3. a plain EventSource on /connection/uni_sse with the token's `channels` claim
//    receives a publication sent through the API.
// Each page is saved as a PNG in tests/sdk/js/artifacts/ (the path is printed).
//
// Missing chromium or nginx fails the tests with an install message; scripts/test
// installs both with apt-get when run as root.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, CHROMIUM_MISSING } from './browser_support.mjs';
import { appendDiagnostics } from './cluster_support.mjs';
import { apiCall, connectionToken, signHs256, sleep, startHerald, testConfig, uniq } from './harness.mjs';
import { freePort, nginxBin, startNginx, streamingProxy } from './nginx_support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const API_KEY = `api-key-${uniq('browser')}`;

const state = { herald: null, nginx: null, context: null, userDataDir: null, origin: null };

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(CHROMIUM_MISSING);
  nginxBin(); // throws the install message when missing
  const port = await freePort();
  state.origin = `http://127.0.0.1:${port}`;
  state.herald = await startHerald({
    label: 'herald (browser)',
    config: testConfig({
      client: { allowed_origins: [state.origin] },
      http_api: { key: API_KEY },
      http_stream: { enabled: true },
      sse: { enabled: true },
      uni_sse: { enabled: true },
      channel: { without_namespace: { allow_subscribe_for_client: true } },
    }),
  });
  const heraldHost = new URL(state.herald.wsUrl).host;
  const nodeModules = path.join(here, 'node_modules');
  try {
    state.nginx = await startNginx({
      port,
      httpExtra: () => `  upstream herald {\n    server ${heraldHost};\n  }`,
      serverBlock: () => `
    # WebSocket upgrades are refused, as by a proxy that does not pass them.
    location = /connection/websocket {
      if ($http_upgrade) {
        return 403;
      }
${streamingProxy('herald')}
    }

    location /connection/ {
${streamingProxy('herald')}
    }

    location = /emulation {
${streamingProxy('herald')}
    }

    location = /vendor/centrifuge.mjs {
      alias ${nodeModules}/centrifuge/build/index.mjs;
    }

    location = /favicon.ico {
      return 204;
    }

    location / {
      root ${path.join(here, 'browser')};
      index index.html;
    }
`,
    });
  } catch (err) {
    err.message = `${err.message}\n${state.herald.logTail(40)}`;
    throw err;
  }
  state.userDataDir = mkdtempSync(path.join(tmpdir(), 'herald-chromium-'));
  try {
    state.context = await chromium.launchPersistentContext(state.userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1100, height: 760 },
      timeout: 30_000,
    });
  } catch (err) {
    err.message = `cannot start ${CHROMIUM} through playwright-core: ${err.message}`;
    throw err;
  }
});

after(async () => {
  if (state.context) await state.context.close().catch(() => {});
  if (state.nginx) await state.nginx.stop().catch(() => {});
  if (state.herald) await state.herald.stop().catch(() => {});
  if (state.userDataDir) rmSync(state.userDataDir, { recursive: true, force: true });
});

/**
 * Opens the test page with `query`, runs `check(page, seen)`, saves a screenshot as
 * artifacts/browser-<name>.png (also when the check fails) and, on failure, appends what
 * the page, nginx and herald saw.
 */
async function withPage(t, name, query, check) {
  const { context, origin } = state;
  if (!context) throw new Error('the browser is not running (see the before hook failure)');
  const seen = { console: [], network: [] };
  const page = await context.newPage();
  page.on('console', (msg) => seen.console.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => seen.console.push(`pageerror: ${err.message}`));
  page.on('response', (res) => {
    const url = new URL(res.url());
    if (/^\/(connection|emulation)/.test(url.pathname)) {
      seen.network.push(`${res.request().method()} ${url.pathname} -> ${res.status()}`);
    }
  });
  page.on('requestfailed', (req) => {
    seen.network.push(`${req.method()} ${new URL(req.url()).pathname} failed: ${req.failure()?.errorText}`);
  });
  page.on('websocket', (ws) => {
    seen.network.push(`websocket ${ws.url()} opened`);
    ws.on('socketerror', (e) => seen.network.push(`websocket ${ws.url()} error: ${e}`));
    ws.on('close', () => seen.network.push(`websocket ${ws.url()} closed`));
  });
  const url = `${origin}/index.html?${new URLSearchParams(query)}`;
  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = path.join(ARTIFACTS, `browser-${name}.png`);
  try {
    const res = await page.goto(url, { waitUntil: 'load', timeout: 10_000 });
    assert.equal(res?.status(), 200, `GET ${url} through nginx`);
    await check(page, seen);
  } catch (err) {
    let pageState = '(unavailable)';
    try {
      pageState = JSON.stringify(await page.evaluate(() => window.heraldTest), null, 1);
    } catch (e) {
      pageState = `(cannot read window.heraldTest: ${e.message})`;
    }
    appendDiagnostics(
      err,
      [
        `--- page ${url.replace(/token=[^&]+/, 'token=…')} ---`,
        `--- window.heraldTest ---\n${pageState}`,
        `--- page console (last 80) ---\n${seen.console.slice(-80).join('\n')}`,
        `--- page network (/connection, /emulation) ---\n${seen.network.slice(-60).join('\n')}`,
        state.nginx ? state.nginx.diagnostics(40) : '(nginx not running)',
        state.herald ? state.herald.logTail(80) : '(herald not running)',
      ].join('\n'),
    );
    throw err;
  } finally {
    try {
      await page.screenshot({ path: shot, fullPage: true, timeout: 5_000 });
      t.diagnostic(`screenshot: ${shot}`);
      console.log(`# screenshot: ${shot}`);
    } catch (e) {
      console.log(`# screenshot of ${name} failed: ${e.message}`);
    }
    await page.close().catch(() => {});
  }
}

/** Waits for `fn()` in the page to be truthy. */
async function pageWait(page, fn, arg, timeout, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (err) {
    throw new Error(`the page did not reach '${what}' within ${timeout} ms (${err.message.split('\n')[0]})`);
  }
}

const pageState = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.heraldTest)));

/** Publishes `items` on `channel` through the API and waits for the page to show them all. */
async function publishAndSee(page, channel, items) {
  const before = (await pageState(page)).publications.length;
  for (const data of items) {
    const reply = await apiCall(state.herald.apiUrl, API_KEY, 'publish', { channel, data });
    assert.ok(reply.result, `publish through the API: ${JSON.stringify(reply)}`);
  }
  await pageWait(
    page,
    (n) => window.heraldTest.publications.length >= n,
    before + items.length,
    10_000,
    `${items.length} publications received`,
  );
  await sleep(200); // nothing more may arrive
  const pubs = (await pageState(page)).publications.slice(before);
  assert.deepEqual(
    pubs.map((p) => p.data),
    items,
    'every publication sent through the API arrives once, in order',
  );
  return pubs;
}

/** The nginx access log lines of `method path` (written when the request ends). */
const logged = (method, uri) => state.nginx.accessEntries().filter((e) => e.method === method && e.uri === uri);

async function fallbackCase(t, { name, transports, want }) {
  const channel = uniq(`browser-${name}`);
  const token = connectionToken({ sub: uniq('browser-user') });
  await withPage(t, name, { mode: 'client', token, channel, transports, debug: '1' }, async (page, seen) => {
    await pageWait(page, () => window.heraldTest && window.heraldTest.subscribed, null, 15_000, 'subscribed');
    const s = await pageState(page);
    assert.equal(s.transport, want, `the client connected with ${want} (transports ${transports})`);
    assert.ok(
      s.tried.some((e) => e.startsWith('websocket')),
      `the client reported the refused WebSocket as a transport error before falling back: ${JSON.stringify(s.tried)}`,
    );
    const refused = logged('GET', '/connection/websocket');
    assert.ok(refused.length >= 1 && refused.every((e) => e.status === 403),
      `nginx refused the WebSocket upgrade with 403: ${JSON.stringify(refused.map((e) => e.line))}`);

    await publishAndSee(page, channel, [
      { n: 1, text: `hello over ${want}` },
      { n: 2, text: 'second' },
      { n: 3, text: 'third' },
    ]);

    // The subscribe command was an emulation POST, answered with 204.
    const posts = seen.network.filter((l) => l.startsWith('POST /emulation'));
    assert.ok(posts.length >= 1, `the page sent commands as POST /emulation: ${JSON.stringify(seen.network)}`);
    assert.ok(posts.every((l) => l.endsWith('-> 204')), `every POST /emulation got 204: ${JSON.stringify(posts)}`);
    const stream = seen.network.filter((l) => l.includes(`/connection/${want}`));
    assert.ok(stream.length >= 1 && stream.every((l) => l.endsWith('-> 200')),
      `the ${want} stream request got 200: ${JSON.stringify(stream)}`);
  });
}

test('browser behind nginx without WebSocket: centrifuge-js falls back to http_stream, subscribes, receives API publications', { timeout: 40_000 }, async (t) => {
  await fallbackCase(t, { name: 'http_stream', transports: 'websocket,http_stream,sse', want: 'http_stream' });
});

test('browser behind nginx without WebSocket: with [websocket, sse] centrifuge-js falls back to sse, subscribes, receives API publications', { timeout: 40_000 }, async (t) => {
  await fallbackCase(t, { name: 'sse', transports: 'websocket,sse', want: 'sse' });
});

test('browser: a plain EventSource on /connection/uni_sse with a channels claim receives an API publication', { timeout: 40_000 }, async (t) => {
  const channel = uniq('browser-uni');
  const token = signHs256({ sub: uniq('uni-user'), channels: [channel] });
  await withPage(t, 'uni_sse', { mode: 'uni_sse', token, channel }, async (page) => {
    await pageWait(page, () => window.heraldTest && window.heraldTest.connected, null, 10_000, 'connect push');
    const s = await pageState(page);
    const connect = s.uniPushes.find((p) => p.connect)?.connect;
    assert.ok(connect?.client, `the first push is a connect with a client id: ${JSON.stringify(s.uniPushes[0])}`);
    assert.ok(connect.subs && channel in connect.subs, `the connect push lists the token's channel in subs: ${JSON.stringify(connect)}`);
    const pubs = await publishAndSee(page, channel, [{ n: 1, text: 'to uni_sse' }, { n: 2 }]);
    assert.ok(pubs.every((p) => p.channel === channel), `each pub push names its channel: ${JSON.stringify(pubs)}`);
  });
});

test('herald counted the browser connections per transport (metrics)', { timeout: 15_000 }, async () => {
  if (!state.herald) throw new Error('herald is not running (see the before hook failure)');
  const res = await fetch(`${state.herald.apiUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  const value = (name, labels) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
    return line ? Number(line.trim().split(/\s+/).pop()) : null;
  };
  const counts = Object.fromEntries(
    ['http_stream', 'sse', 'uni_sse'].map((transport) => [transport, value('herald_transport_connects_total', { transport })]),
  );
  const refusedOrigin = text.split('\n').filter((l) => l.startsWith('herald_transport_refusals_total{') && l.includes('reason="origin"'));
  try {
    for (const [transport, n] of Object.entries(counts)) {
      assert.ok(n >= 1, `herald_transport_connects_total{transport="${transport}"} >= 1 (got ${n})`);
    }
    assert.ok(
      refusedOrigin.every((l) => Number(l.trim().split(/\s+/).pop()) === 0),
      `no same-origin request was refused for its Origin: ${refusedOrigin.join('; ')}`,
    );
  } catch (err) {
    const ours = text.split('\n').filter((l) => /^herald_(transport|emulation)_/.test(l));
    appendDiagnostics(err, `--- /metrics herald_transport_* / herald_emulation_* (HTTP ${res.status}) ---\n${ours.join('\n') || '(none)'}`);
    throw err;
  }
});
