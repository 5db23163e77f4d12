// WebSocket compression (permessage-deflate, RFC 7692) with `websocket.compression` on:
//
// 1. centrifuge-js over the `ws` package (perMessageDeflate, every command compressed):
//    the negotiated extension says no context takeover both ways; a publication above
//    `websocket.compression_min_size` crosses the wire compressed (RSV1, fewer bytes,
//    seen by a TCP proxy that parses the frames), one below it plain; the SDK gets
//    both, and herald understood the compressed commands (connect, subscribe, publish).
// 2. compression off (the default): `ws` offers it, nothing is negotiated.
// 3. a decompression bomb (10 MiB of zeros, ~10 KiB compressed) is closed with 1009,
//    counted as an inflation stopped at the limit.
// 4. Chromium: the page's WebSocket says permessage-deflate in `extensions`, its
//    (compressed) commands are understood, and a big publication arrives.
//
// Missing chromium fails test 4 with an install message.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import zlib from 'node:zlib';

import { Centrifuge } from 'centrifuge';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

import {
  apiCall,
  connect,
  connectionToken,
  diagnosedTest,
  EventLog,
  metricSample,
  metricsText,
  recordingWebSocket,
  serverSuite,
  sleep,
  startHerald,
  subscribe,
  testConfig,
  uniq,
  within,
} from './harness.mjs';

const API_KEY = `api-key-${uniq('deflate')}`;
const MIN_SIZE = 512;
const NEGOTIATED = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

const suite = serverSuite(
  testConfig({
    websocket: { compression: true, compression_min_size: MIN_SIZE, compression_level: 1 },
    http_api: { key: API_KEY },
    client: { allowed_origins: ['http://127.0.0.1:*'] },
    channel: { without_namespace: { allow_subscribe_for_client: true, allow_publish_for_client: true } },
  }),
  { label: 'herald (compression on)' },
);

// ---------------------------------------------------------------------------
// A TCP proxy that reads the WebSocket frames going each way

/** Whole frames at the start of `buf` (after the HTTP head), and what is left. */
function parseFrames(buf) {
  const frames = [];
  let at = 0;
  for (;;) {
    if (buf.length - at < 2) break;
    const b0 = buf[at];
    const b1 = buf[at + 1];
    let len = b1 & 0x7f;
    let pos = at + 2;
    if (len === 126) {
      if (buf.length - pos < 2) break;
      len = buf.readUInt16BE(pos);
      pos += 2;
    } else if (len === 127) {
      if (buf.length - pos < 8) break;
      len = Number(buf.readBigUInt64BE(pos));
      pos += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    const mask = masked ? buf.subarray(pos, pos + 4) : null;
    if (masked) pos += 4;
    if (buf.length - pos < len) break;
    const payload = Buffer.from(buf.subarray(pos, pos + len));
    if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
    frames.push({ fin: (b0 & 0x80) !== 0, rsv1: (b0 & 0x40) !== 0, opcode: b0 & 0x0f, wire: pos + len - at, payload });
    at = pos + len;
  }
  return { frames, rest: buf.subarray(at) };
}

/** One direction of the proxy: skips the HTTP head, then records every frame. */
function tap(record) {
  let buf = Buffer.alloc(0);
  let head = true;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (head) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      buf = buf.subarray(end + 4);
      head = false;
    }
    const { frames, rest } = parseFrames(buf);
    record.push(...frames);
    buf = Buffer.from(rest);
  };
}

/** A proxy to `target` (host:port); `fromServer`/`fromClient` collect the frames. */
async function frameProxy(target) {
  const [host, port] = target.split(':');
  const seen = { fromServer: [], fromClient: [] };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), host);
    const down = tap(seen.fromServer);
    const up = tap(seen.fromClient);
    client.on('data', (c) => {
      up(c);
      upstream.write(c);
    });
    upstream.on('data', (c) => {
      down(c);
      client.write(c);
    });
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.end());
    upstream.on('close', () => client.end());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { seen, address: `127.0.0.1:${server.address().port}`, close: () => server.close() };
}

const inflate = (payload) =>
  zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), {
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });

/** The text a server frame carries, inflated when it came compressed. */
const frameText = (f) => (f.rsv1 ? inflate(f.payload) : f.payload).toString('utf8');

/** A `ws` WebSocket class for the SDK that compresses every message it sends. */
function compressingWebSocket(frames, handshake) {
  const Recording = recordingWebSocket(frames);
  return class extends Recording {
    constructor(url, protocols) {
      super(url, protocols, { perMessageDeflate: { threshold: 0 } });
      this.on('upgrade', (res) => {
        handshake.header = res.headers['sec-websocket-extensions'];
      });
      this.on('open', () => {
        handshake.extensions = this.extensions;
      });
    }
  };
}

/** An SDK client through `proxy`, compressing every command; `handshake` gets what was negotiated. */
function proxiedClient(proxy, label, handshake = {}) {
  const frames = [];
  const client = new Centrifuge(`ws://${proxy.address}/connection/websocket`, {
    token: connectionToken({ sub: label }),
    websocket: compressingWebSocket(frames, handshake),
    minReconnectDelay: 200,
    maxReconnectDelay: 1_000,
  });
  const log = new EventLog(client, ['state', 'connecting', 'connected', 'disconnected', 'error'], label);
  return { client, log, frames, label, subs: [] };
}

/** Polls `fn` until it is truthy. */
async function until(fn, what, timeout = 5_000) {
  const end = Date.now() + timeout;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms: ${what}`);
    await sleep(20);
  }
}

/** A JSON document of about `size` bytes that compresses well but is not one repeated byte. */
function document(size) {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'];
  const items = [];
  let length = 0;
  for (let i = 0; length < size; i++) {
    const item = { id: i, name: words[i % words.length], value: (i * 7919) % 1000 };
    items.push(item);
    length += JSON.stringify(item).length + 1;
  }
  return { items };
}

// ---------------------------------------------------------------------------

suite.test('ws negotiates permessage-deflate: big publications compressed, small ones plain, compressed commands understood', async () => {
  const proxy = await frameProxy(new URL(suite.server.wsUrl).host);
  const handshake = {};
  const h = proxiedClient(proxy, 'ws-deflate', handshake);
  try {
    const channel = uniq('deflate');
    await connect(h);
    assert.equal(handshake.header, NEGOTIATED, 'the 101 answer');
    assert.equal(handshake.extensions, 'permessage-deflate', 'what ws negotiated');

    const s = suite.subscription(h, channel);
    await subscribe(s);
    const big = document(8_000);
    const small = { n: 1 };
    const since = s.log.mark();
    await apiCall(suite.server.apiUrl, API_KEY, 'publish', { channel, data: big });
    await apiCall(suite.server.apiUrl, API_KEY, 'publish', { channel, data: small });
    // A publish by the client itself: a compressed command.
    const mine = document(2_000);
    await within(s.sub.publish(mine), 5_000, 'client publish');
    await until(() => s.log.all('publication', since).length >= 3, 'three publications');
    const got = s.log.all('publication', since).map((ctx) => ctx.data);
    assert.deepEqual(got, [big, small, mine], 'the SDK got every publication, in order');

    await sleep(100);
    const pushes = proxy.seen.fromServer
      .filter((f) => f.opcode === 1)
      .map((f) => ({ f, text: frameText(f) }))
      .filter(({ text }) => text.includes('"pub"'));
    assert.equal(pushes.length, 3, `three publication frames: ${pushes.map((p) => p.text.slice(0, 80)).join(' | ')}`);
    const [bigFrame, smallFrame, mineFrame] = pushes.map((p) => p.f);
    assert.ok(bigFrame.rsv1, 'the big publication is compressed');
    const bigLength = Buffer.byteLength(JSON.stringify(big));
    assert.ok(
      bigFrame.wire < bigLength / 3,
      `the big publication took ${bigFrame.wire} bytes on the wire for ${bigLength} bytes of data`,
    );
    assert.ok(!smallFrame.rsv1, `a publication below ${MIN_SIZE} bytes goes plain`);
    assert.ok(smallFrame.payload.length < MIN_SIZE);
    assert.ok(mineFrame.rsv1, 'the client’s own publication comes back compressed');

    // Every command the SDK sent went compressed (threshold 0), and herald answered them.
    const commands = proxy.seen.fromClient.filter((f) => f.opcode === 1);
    assert.ok(commands.length >= 3, `commands seen: ${commands.length}`);
    for (const c of commands) assert.ok(c.rsv1, `a command frame went compressed: ${inflate(c.payload)}`);
    const texts = commands.map((c) => inflate(c.payload).toString('utf8')).join('\n');
    assert.match(texts, /"connect"/);
    assert.match(texts, /"subscribe"/);
    assert.match(texts, /"publish"/);

    const metrics = await metricsText(suite.server.apiUrl);
    assert.ok(metricSample(metrics, 'herald_websocket_compression_negotiated_total') >= 1);
    assert.ok(metricSample(metrics, 'herald_websocket_compressions_total', { kind: 'shared' }) >= 2);
    assert.ok(metricSample(metrics, 'herald_websocket_inflations_total', { result: 'ok' }) >= 3);
  } finally {
    h.client.disconnect();
    proxy.close();
  }
});

suite.test('two subscribers of a big publication get the same compressed bytes', async () => {
  const proxies = [await frameProxy(new URL(suite.server.wsUrl).host), await frameProxy(new URL(suite.server.wsUrl).host)];
  const handles = proxies.map((proxy, i) => proxiedClient(proxy, `sub-${i}`));
  try {
    const channel = uniq('shared');
    const subs = [];
    for (const h of handles) {
      await connect(h);
      const s = suite.subscription(h, channel);
      await subscribe(s);
      subs.push(s);
    }
    const before = metricSample(await metricsText(suite.server.apiUrl), 'herald_websocket_compressions_total', { kind: 'shared' });
    const data = document(4_000);
    const marks = subs.map((s) => s.log.mark());
    await apiCall(suite.server.apiUrl, API_KEY, 'publish', { channel, data });
    for (const [i, s] of subs.entries()) await s.log.waitFor('publication', { since: marks[i], what: `sub ${i} publication` });
    await sleep(100);
    const frames = proxies.map((p) => p.seen.fromServer.filter((f) => f.rsv1 && frameText(f).includes('"pub"')).at(-1));
    assert.ok(frames[0] && frames[1], 'both got it compressed');
    assert.ok(frames[0].payload.equals(frames[1].payload), 'the same compressed bytes');
    const afterCount = metricSample(await metricsText(suite.server.apiUrl), 'herald_websocket_compressions_total', { kind: 'shared' });
    // Compressed once for both (other tests of this file do not run at the same time).
    assert.equal(afterCount - before, 1, 'one compression on the node for two subscribers');
  } finally {
    for (const h of handles) h.client.disconnect();
    for (const p of proxies) p.close();
  }
});

suite.test('a decompression bomb is closed with 1009 without being inflated whole', async () => {
  const before = metricSample(await metricsText(suite.server.apiUrl), 'herald_websocket_inflations_total', { result: 'too_big' });
  const ws = new WebSocket(suite.server.wsUrl, 'centrifuge-json', { perMessageDeflate: { threshold: 0 } });
  await within(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), 5_000, 'open');
  assert.equal(ws.extensions, 'permessage-deflate');
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  // 10 MiB that ws sends compressed to about 10 KiB: far below the 64 KiB limit on the
  // wire, far above it inflated.
  const bomb = ' '.repeat(10 << 20);
  const compressed = zlib.deflateRawSync(Buffer.from(bomb)).length;
  assert.ok(compressed < 65_536 / 2, `compressed to ${compressed} bytes`);
  ws.send(bomb);
  assert.equal(await within(closed, 10_000, 'close'), 1009);
  const afterCount = metricSample(await metricsText(suite.server.apiUrl), 'herald_websocket_inflations_total', { result: 'too_big' });
  assert.equal(afterCount - before, 1, 'refused while inflating, at the limit');
});

diagnosedTest('compression off: ws offers permessage-deflate, nothing is negotiated', async () => {
  const herald = await startHerald({ config: testConfig(), label: 'herald (compression off)' });
  try {
    const ws = new WebSocket(herald.wsUrl, 'centrifuge-json', { perMessageDeflate: { threshold: 0 } });
    const upgraded = new Promise((resolve, reject) => {
      ws.once('upgrade', (res) => resolve(res.headers['sec-websocket-extensions']));
      ws.once('error', reject);
    });
    const opened = new Promise((resolve) => ws.once('open', resolve));
    const header = await within(upgraded, 5_000, 'upgrade');
    await within(opened, 5_000, 'open');
    assert.equal(header, undefined, 'no extension in the 101');
    assert.equal(ws.extensions, '');
    const reply = new Promise((resolve) => ws.once('message', (m) => resolve(JSON.parse(m.toString()))));
    ws.send(JSON.stringify({ id: 1, connect: { token: connectionToken({ sub: 'plain' }) } }));
    const got = await within(reply, 5_000, 'connect reply');
    assert.equal(got.id, 1);
    assert.ok(got.connect, JSON.stringify(got));
    ws.close();
  } finally {
    await herald.stop();
  }
}, { diagnostics: () => '', cleanup: async () => {} });

// ---------------------------------------------------------------------------
// Chromium

const browser = { context: null, page: null, dir: null, server: null, origin: null };

before(async () => {
  if (!existsSync(CHROMIUM)) return;
  browser.server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>herald compression</title><p>compression</p>');
  });
  await new Promise((resolve) => browser.server.listen(0, '127.0.0.1', resolve));
  browser.origin = `http://127.0.0.1:${browser.server.address().port}`;
  browser.dir = mkdtempSync(path.join(tmpdir(), 'herald-chromium-deflate-'));
  browser.context = await chromium.launchPersistentContext(browser.dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 30_000,
  });
});

after(async () => {
  if (browser.context) await browser.context.close().catch(() => {});
  if (browser.server) browser.server.close();
  if (browser.dir) rmSync(browser.dir, { recursive: true, force: true });
});

suite.test('Chromium negotiates permessage-deflate and gets a compressed publication', async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`chromium not found at ${CHROMIUM}: install it with 'apt-get install -y chromium', or set CHROMIUM_BIN`);
  }
  const inflatedBefore = metricSample(await metricsText(suite.server.apiUrl), 'herald_websocket_inflations_total', { result: 'ok' });
  const page = await browser.context.newPage();
  try {
    await page.goto(`${browser.origin}/`, { waitUntil: 'load', timeout: 10_000 });
    const channel = uniq('chromium');
    const token = connectionToken({ sub: 'chromium' });
    const opened = await page.evaluate(
      ({ url, token, channel }) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url, 'centrifuge-json');
          window.deflateTest = { lines: [], ws };
          ws.onmessage = (e) => {
            for (const line of String(e.data).split('\n')) {
              if (line === '{}') ws.send('{}');
              else if (line) window.deflateTest.lines.push(JSON.parse(line));
            }
          };
          ws.onerror = () => reject(new Error('websocket error'));
          ws.onopen = () => {
            // Padding makes the commands worth compressing: Chromium compresses them.
            const pad = 'p'.repeat(600);
            ws.send(`${JSON.stringify({ id: 1, connect: { token, name: pad } })}\n${JSON.stringify({ id: 2, subscribe: { channel } })}`);
            resolve({ extensions: ws.extensions, protocol: ws.protocol });
          };
        }),
      { url: `${suite.server.wsUrl}`, token, channel },
    );
    assert.equal(opened.protocol, 'centrifuge-json');
    assert.match(opened.extensions, /^permessage-deflate/, `extensions: ${opened.extensions}`);
    assert.match(opened.extensions, /server_no_context_takeover/);
    await page.waitForFunction(() => window.deflateTest.lines.some((l) => l.id === 2 && l.subscribe), null, {
      timeout: 5_000,
    });
    const data = document(6_000);
    await apiCall(suite.server.apiUrl, API_KEY, 'publish', { channel, data });
    await page.waitForFunction(() => window.deflateTest.lines.some((l) => l.push?.pub), null, { timeout: 5_000 });
    const pub = await page.evaluate(() => window.deflateTest.lines.find((l) => l.push?.pub).push.pub.data);
    assert.deepEqual(pub, data);
    const metrics = await metricsText(suite.server.apiUrl);
    assert.ok(
      metricSample(metrics, 'herald_websocket_inflations_total', { result: 'ok' }) > inflatedBefore,
      'Chromium’s commands came compressed and were inflated',
    );
  } finally {
    await page.close().catch(() => {});
  }
});
