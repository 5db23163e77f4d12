// The development profile's demo chat page (crates/gateway/assets/demo/) in a real
// browser: Debian Chromium, headless, driven by playwright-core, against a herald with
// `demo.enabled`. The page is served by herald itself on the public (WebSocket) port,
// under its CSP, and talks to herald over a same-origin WebSocket.
//
// 1. HTTP: GET / is the page (200, text/html, the CSP header); its assets are served;
//    POST /demo/token mints a 1 h token for a good name, 400 for a bad one, 415 for a
//    body that is not JSON.
// 2. A herald without the demo answers 404 on /, /demo/… and /demo/token.
// 3. Two users (two browser contexts) join the chat: each sees the other online, alice
//    sees bob's join line (bob, joining second, learns of alice from the presence list:
//    no join push exists for a member who was there before him); messages go both
//    ways, each shown once with the server-attested author.
// 4. Recovery: bob goes offline, alice sends 3 messages, bob comes back and gets
//    exactly those 3, in order, once, and the page says it recovered them.
// 5. Leave: alice closes her page; bob sees her leave.
// 6. Close codes: a server API disconnect with a reconnect code (4000) brings the page
//    back on a new connection; 3503 (the API's default disconnect) is terminal: the
//    page says disconnected and opens no new WebSocket.
// 7. Accessibility basics: every input has a label; the name form and the message form
//    work with the keyboard only.
// Each page is saved as a PNG in tests/sdk/js/artifacts/demo-<name>.png (the path is
// printed). No test may trigger a CSP violation or a page error.
//
// Missing chromium fails the tests with an install message; scripts/test installs it
// with apt-get when run as root.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, CHROMIUM_MISSING } from './browser_support.mjs';
import { appendDiagnostics } from './cluster_support.mjs';
import { apiCall, decodeJwtClaims, nowSec, sleep, startHerald, testConfig, uniq } from './harness.mjs';

const API_KEY = `api-key-${uniq('demo')}`;

const DEMO_CONFIG = {
  demo: { enabled: true },
  http_api: { key: API_KEY },
  channel: {
    without_namespace: {
      presence: true,
      join_leave: true,
      history_size: 100,
      history_ttl: '300s',
      force_recovery: true,
      allow_subscribe_for_client: true,
      allow_publish_for_client: true,
      allow_presence_for_client: true,
      allow_history_for_client: true,
    },
  },
};

const state = { demo: null, plain: null, browser: null, origin: null, plainOrigin: null };

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(CHROMIUM_MISSING);
  [state.demo, state.plain] = await Promise.all([
    startHerald({ label: 'herald (demo)', config: testConfig(DEMO_CONFIG) }),
    startHerald({ label: 'herald (no demo)', config: testConfig() }),
  ]);
  state.origin = `http://${new URL(state.demo.wsUrl).host}`;
  state.plainOrigin = `http://${new URL(state.plain.wsUrl).host}`;
  try {
    state.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  } catch (err) {
    err.message = `cannot start ${CHROMIUM} through playwright-core: ${err.message}`;
    throw err;
  }
});

after(async () => {
  if (state.browser) await state.browser.close().catch(() => {});
  if (state.demo) await state.demo.stop().catch(() => {});
  if (state.plain) await state.plain.stop().catch(() => {});
});

// ---------------------------------------------------------------------------
// HTTP

test('demo HTTP: GET / is the page with the CSP, its assets are served, /demo/token mints for good names only', { timeout: 15_000 }, async () => {
  const { origin } = state;
  if (!origin) throw new Error('herald is not running (see the before hook failure)');
  try {
    const res = await fetch(`${origin}/`);
    assert.equal(res.status, 200, 'GET / answers 200');
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/, 'GET / is text/html');
    const csp = res.headers.get('content-security-policy') ?? '';
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"]) {
      assert.ok(csp.includes(directive), `the CSP header has ${directive}: ${JSON.stringify(csp)}`);
    }
    const html = await res.text();
    assert.match(html, /herald demo — development profile only/, 'the page says what it is');

    const assets = [...html.matchAll(/(?:src|href)="(\/demo\/[^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(assets.sort(), ['/demo/chat.js', '/demo/demo.css'], 'the page loads its script and style from /demo/');
    for (const [file, type] of [
      ['/demo/chat.js', /^text\/javascript/],
      ['/demo/client.js', /^text\/javascript/],
      ['/demo/demo.css', /^text\/css/],
    ]) {
      const r = await fetch(`${origin}${file}`);
      assert.equal(r.status, 200, `GET ${file}`);
      assert.match(r.headers.get('content-type') ?? '', type, `GET ${file} content type`);
      await r.arrayBuffer();
    }
    const missing = await fetch(`${origin}/demo/nope.js`);
    assert.equal(missing.status, 404, 'GET /demo/<unknown file> answers 404');
    await missing.arrayBuffer();

    const mint = (body, contentType = 'application/json') =>
      fetch(`${origin}/demo/token`, { method: 'POST', headers: { 'Content-Type': contentType }, body });

    const good = await mint(JSON.stringify({ user: 'alice' }));
    assert.equal(good.status, 200, 'POST /demo/token {"user":"alice"}');
    const minted = await good.json();
    assert.equal(minted.user, 'alice', `the answer names the user: ${JSON.stringify(minted)}`);
    const claims = decodeJwtClaims(minted.token);
    assert.equal(claims.sub, 'alice', `the token's sub is the user: ${JSON.stringify(claims)}`);
    assert.ok(Math.abs(claims.exp - (nowSec() + 3600)) <= 120, `the token lives 1 h: ${JSON.stringify(claims)}`);

    const longest = await mint(JSON.stringify({ user: 'x'.repeat(64) }));
    assert.equal(longest.status, 200, 'a 64-character user is accepted');
    await longest.arrayBuffer();

    for (const user of ['', 'a b', 'x'.repeat(65), 'x'.repeat(100), '<script>', 'ünïcode']) {
      const r = await mint(JSON.stringify({ user }));
      assert.equal(r.status, 400, `POST /demo/token with user ${JSON.stringify(user)} is refused`);
      const body = await r.json();
      assert.equal(body.reason, 'bad_request', `the refusal of ${JSON.stringify(user)}: ${JSON.stringify(body)}`);
    }
    const noUser = await mint('{}');
    assert.equal(noUser.status, 400, 'POST /demo/token without a user is refused');
    await noUser.arrayBuffer();

    const plain = await mint('alice', 'text/plain');
    assert.equal(plain.status, 415, 'POST /demo/token with Content-Type text/plain answers 415');
    await plain.arrayBuffer();
  } catch (err) {
    appendDiagnostics(err, state.demo.logTail(40));
    throw err;
  }
});

test('a herald without demo.enabled serves no demo: 404 on /, /demo/chat.js and /demo/token', { timeout: 15_000 }, async () => {
  const { plainOrigin } = state;
  if (!plainOrigin) throw new Error('herald is not running (see the before hook failure)');
  for (const [method, url, body] of [
    ['GET', '/', undefined],
    ['GET', '/demo/chat.js', undefined],
    ['POST', '/demo/token', JSON.stringify({ user: 'alice' })],
  ]) {
    const res = await fetch(`${plainOrigin}${url}`, { method, body, headers: body ? { 'Content-Type': 'application/json' } : {} });
    assert.equal(res.status, 404, `${method} ${url} without the demo`);
    await res.arrayBuffer();
  }
});

// ---------------------------------------------------------------------------
// The page

test('two users chat: each sees the other online, alice sees bob join, messages go both ways once with the attested author', { timeout: 30_000 }, async (t) => {
  await withUsers(t, 'chat', ['alice', 'bob'], async ({ alice, bob }) => {
    await joinChat(alice);
    await joinChat(bob);

    await waitPresence(alice, (users) => users.includes('bob') && users.includes('alice'), 'alice sees alice and bob online');
    await waitPresence(bob, (users) => users.includes('alice') && users.includes('bob'), 'bob sees alice and bob online');
    await waitLines(alice, (lines) => lines.includes('bob joined'), "alice sees the line 'bob joined'");

    const hello = `hello bob ${uniq('m')}`;
    await sendMessage(alice, hello);
    await waitMessage(bob, hello);
    const reply = `hi alice ${uniq('m')}`;
    await sendMessage(bob, reply);
    await waitMessage(alice, reply);
    await sleep(200); // a duplicate would show by now

    for (const u of [alice, bob]) {
      const shown = (await messagesOf(u)).filter((m) => m.text === hello || m.text === reply);
      assert.deepEqual(
        shown.map(({ author, text }) => ({ author, text })),
        [{ author: 'alice', text: hello }, { author: 'bob', text: reply }],
        `${u.user} shows both messages once, in order, with their authors`,
      );
    }
  });
});

test('recovery: bob goes offline, alice sends 3 messages, bob comes back and shows exactly those 3 in order, and says he recovered them', { timeout: 30_000 }, async (t) => {
  await withUsers(t, 'recovery', ['alice', 'bob'], async ({ alice, bob }) => {
    await joinChat(alice);
    await joinChat(bob);
    await waitPresence(alice, (users) => users.includes('bob'), 'alice sees bob online');

    await bob.context.setOffline(true);
    await pageWait(bob.page, () => window.heraldDemo.state.connection === 'offline', null, 5_000, 'connection state offline');
    assert.match(await statusOf(bob), /offline/, "bob's status indicator says offline");

    const run = uniq('missed');
    const missed = [1, 2, 3].map((n) => `${run} #${n}`);
    for (const text of missed) {
      await sendMessage(alice, text);
      await waitMessage(alice, text); // published: alice got it back
    }
    const seenOffline = (await demoState(bob)).messages.filter((m) => m.text.startsWith(run));
    assert.deepEqual(seenOffline, [], 'bob receives nothing while offline');

    await bob.context.setOffline(false);
    await pageWait(
      bob.page,
      (r) => window.heraldDemo.state.messages.filter((m) => m.text.startsWith(r)).length >= 3,
      run,
      10_000,
      'the 3 missed messages shown',
    );
    await waitStatus(bob, /recovered 3 missed messages/, "bob's status says it recovered 3 missed messages");
    await sleep(300); // a late duplicate would show by now

    const shown = (await messagesOf(bob)).filter((m) => m.text.startsWith(run));
    assert.deepEqual(
      shown.map(({ author, text }) => ({ author, text })),
      missed.map((text) => ({ author: 'alice', text })),
      'bob shows the 3 missed messages in order, exactly once, authored by alice',
    );
    assert.ok(shown.every((m) => m.recovered), `each is marked recovered: ${JSON.stringify(shown)}`);

    const s = await demoState(bob);
    assert.equal(s.connection, 'connected', 'bob is connected again');
    assert.equal(s.recovered, true, `window.heraldDemo.state.recovered: ${JSON.stringify(s.recoveries)}`);
    assert.equal(s.recoveredCount, 3, 'window.heraldDemo.state.recoveredCount');
    const offsets = s.messages.map((m) => m.offset);
    assert.ok(offsets.every((o) => Number.isInteger(o)), `every message has an offset: ${JSON.stringify(offsets)}`);
    assert.equal(new Set(offsets).size, offsets.length, `no offset twice: ${JSON.stringify(offsets)}`);
    assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), `offsets increase: ${JSON.stringify(offsets)}`);
  });
});

test('leave: alice closes her page, bob sees her leave (presence without alice, a leave line)', { timeout: 30_000 }, async (t) => {
  await withUsers(t, 'leave', ['alice', 'bob'], async ({ alice, bob }) => {
    await joinChat(alice);
    await joinChat(bob);
    await waitPresence(bob, (users) => users.includes('alice'), 'bob sees alice online');
    const leftBefore = (await linesOf(bob)).filter((l) => l === 'alice left').length;

    await alice.page.close();
    alice.closed = true;

    await waitPresence(bob, (users) => !users.includes('alice') && users.includes('bob'), 'bob sees alice gone from the online list');
    await waitLines(bob, (lines) => lines.filter((l) => l === 'alice left').length > leftBefore, "bob sees the line 'alice left'");
  });
});

test('close codes: after a disconnect with 4000 the page reconnects; after 3503 it stays disconnected', { timeout: 30_000 }, async (t) => {
  await withUsers(t, 'disconnect', ['dave'], async ({ dave }) => {
    await joinChat(dave);
    const first = (await demoState(dave)).clientId;
    const sockets = () => dave.seen.console.filter((l) => l.startsWith('[test] websocket') && l.endsWith('opened')).length;
    assert.equal(sockets(), 1, 'one WebSocket so far');

    let reply = await apiCall(state.demo.apiUrl, API_KEY, 'disconnect', { user: 'dave', disconnect: { code: 4000, reason: 'come back' } });
    assert.ok(reply.result, `API disconnect with 4000: ${JSON.stringify(reply)}`);
    await pageWait(
      dave.page,
      (old) => window.heraldDemo.state.clientId !== old && window.heraldDemo.state.connection === 'connected' && window.heraldDemo.state.subscribed,
      first,
      10_000,
      'connected again on a new connection after 4000',
    );
    assert.equal(sockets(), 2, 'the page opened a second WebSocket after 4000');

    reply = await apiCall(state.demo.apiUrl, API_KEY, 'disconnect', { user: 'dave' });
    assert.ok(reply.result, `API disconnect (3503): ${JSON.stringify(reply)}`);
    await pageWait(dave.page, () => window.heraldDemo.state.connection === 'disconnected', null, 5_000, 'disconnected after 3503');
    assert.match((await demoState(dave)).reason, /3503/, 'the reason names the close code');
    await waitStatus(dave, /disconnected.*3503/, 'the status says disconnected with 3503');
    await sleep(1_500); // longer than the first backoff (0.5-0.75 s): no reconnect may start
    assert.equal((await demoState(dave)).connection, 'disconnected', 'still disconnected');
    assert.equal(sockets(), 2, 'no WebSocket opened after 3503');
  });
});

test('accessibility basics: every input has a label; the name and message forms work with the keyboard only', { timeout: 30_000 }, async (t) => {
  await withUsers(t, 'keyboard', ['carol'], async ({ carol }) => {
    const { page } = carol;
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input, textarea, select')]
        .filter((el) => el.labels.length === 0 || [...el.labels].every((l) => !l.textContent.trim()))
        .map((el) => el.outerHTML),
    );
    assert.deepEqual(unlabelled, [], 'every input has a label with text');
    const nameless = await page.evaluate(() =>
      [...document.querySelectorAll('button')].filter((b) => !b.textContent.trim()).map((b) => b.outerHTML),
    );
    assert.deepEqual(nameless, [], 'every button has a text');

    await tabTo(page, 'name');
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.type('a b');
    await page.keyboard.press('Enter');
    await pageWait(page, () => document.getElementById('name-error').textContent.trim() !== '', null, 5_000, 'an error for a bad name');
    assert.equal(await page.getAttribute('#name-error', 'role'), 'alert', 'the name error is in a role=alert element');
    assert.equal(await page.isVisible('#chat'), false, 'a bad name does not open the chat');

    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.type('carol');
    await page.keyboard.press('Enter');
    await waitJoined(carol);

    await tabTo(page, 'message');
    const text = `typed with the keyboard ${uniq('m')}`;
    await page.keyboard.type(text);
    await page.keyboard.press('Enter');
    await waitMessage(carol, text);
    const shown = (await messagesOf(carol)).filter((m) => m.text === text);
    assert.deepEqual(shown.map((m) => m.author), ['carol'], 'the message is shown once, authored by carol');
    assert.equal(await page.inputValue('#message'), '', 'the message field is cleared after sending');
  });
});

// ---------------------------------------------------------------------------
// Helpers

/**
 * Opens the demo page for each of `users`, each in its own browser context, runs
 * `check({ [user]: session })`, saves every open page as artifacts/demo-<name>-<user>.png
 * (also when the check fails) and, on failure, appends what each page logged, its
 * window.heraldDemo and herald's log tail. A session is { user, context, page, seen }.
 */
async function withUsers(t, name, users, check) {
  const { browser, origin } = state;
  if (!browser) throw new Error('the browser is not running (see the before hook failure)');
  mkdirSync(ARTIFACTS, { recursive: true });
  const sessions = {};
  try {
    for (const user of users) {
      const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
      const seen = { console: [] };
      const session = { user, context, page: null, seen, closed: false };
      sessions[user] = session;
      const page = await context.newPage();
      session.page = page;
      page.on('console', (msg) => seen.console.push(`${msg.type()}: ${msg.text()}`));
      page.on('pageerror', (err) => seen.console.push(`pageerror: ${err.message}`));
      page.on('websocket', (ws) => {
        seen.console.push(`[test] websocket ${ws.url()} opened`);
        ws.on('close', () => seen.console.push(`[test] websocket ${ws.url()} closed`));
      });
      const res = await page.goto(`${origin}/`, { waitUntil: 'load', timeout: 10_000 });
      assert.equal(res?.status(), 200, `GET ${origin}/`);
    }
    await check(sessions);
    for (const s of Object.values(sessions)) {
      const bad = s.seen.console.filter((l) => /Content Security Policy|pageerror/i.test(l));
      assert.deepEqual(bad, [], `${s.user}'s page had no CSP violation and no page error`);
    }
  } catch (err) {
    const parts = [];
    for (const s of Object.values(sessions)) {
      let demo = '(page closed)';
      if (s.page && !s.closed) {
        try {
          demo = JSON.stringify(await s.page.evaluate(() => window.heraldDemo?.state), null, 1);
        } catch (e) {
          demo = `(cannot read window.heraldDemo: ${e.message})`;
        }
      }
      parts.push(`--- ${s.user}: window.heraldDemo.state ---\n${demo}`);
      parts.push(`--- ${s.user}: page console (last 60) ---\n${s.seen.console.slice(-60).join('\n')}`);
    }
    parts.push(state.demo ? state.demo.logTail(80) : '(herald not running)');
    appendDiagnostics(err, parts.join('\n'));
    throw err;
  } finally {
    for (const s of Object.values(sessions)) {
      if (!s.page || s.closed) continue;
      const shot = path.join(ARTIFACTS, `demo-${name}-${s.user}.png`);
      try {
        await s.page.screenshot({ path: shot, fullPage: true, timeout: 5_000 });
        t.diagnostic(`screenshot: ${shot}`);
        console.log(`# screenshot: ${shot}`);
      } catch (e) {
        console.log(`# screenshot of ${name}/${s.user} failed: ${e.message}`);
      }
    }
    for (const s of Object.values(sessions)) await s.context.close().catch(() => {});
  }
}

/** Waits for `fn(arg)` in the page to be truthy. */
async function pageWait(page, fn, arg, timeout, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (err) {
    throw new Error(`the page did not reach '${what}' within ${timeout} ms (${err.message.split('\n')[0]})`);
  }
}

/** Types the session's user into the name field (found by its label), presses Enter, waits until joined. */
async function joinChat(session) {
  const name = session.page.getByLabel('Your name', { exact: true });
  await name.fill(session.user);
  await name.press('Enter');
  await waitJoined(session);
}

async function waitJoined(session) {
  await pageWait(
    session.page,
    () => window.heraldDemo?.state.connection === 'connected' && window.heraldDemo.state.subscribed,
    null,
    10_000,
    `${session.user} connected and subscribed to chat`,
  );
}

async function sendMessage(session, text) {
  const input = session.page.getByLabel('Message', { exact: true });
  await input.fill(text);
  await input.press('Enter');
  // The field is cleared once the server accepted the publish.
  await pageWait(session.page, () => document.getElementById('message').value === '', null, 5_000, `${session.user} sent "${text}"`);
}

const waitMessage = (session, text) =>
  pageWait(
    session.page,
    (t) => [...document.querySelectorAll('#messages li.message .text')].some((el) => el.textContent === t),
    text,
    10_000,
    `${session.user} shows the message "${text}"`,
  );

/** Presses Tab (at most 12 times) until the element with `id` has the focus. */
async function tabTo(page, id) {
  for (let i = 0; i < 12; i++) {
    if (await page.evaluate((want) => document.activeElement?.id === want, id)) return;
    await page.keyboard.press('Tab');
  }
  const at = await page.evaluate(() => document.activeElement?.outerHTML.slice(0, 120));
  throw new Error(`Tab did not reach #${id} within 12 presses (focus is on ${at})`);
}

const messagesOf = (session) =>
  session.page.$$eval('#messages li.message', (items) =>
    items.map((li) => ({
      author: li.querySelector('.author')?.textContent,
      text: li.querySelector('.text')?.textContent,
      offset: li.dataset.offset,
      recovered: li.classList.contains('recovered'),
    })),
  );

const linesOf = (session) => session.page.$$eval('#messages li.event', (items) => items.map((li) => li.textContent));

const statusOf = (session) => session.page.$eval('#status', (el) => el.textContent.replace(/\s+/g, ' ').trim());

const demoState = (session) => session.page.evaluate(() => JSON.parse(JSON.stringify(window.heraldDemo.state)));

async function waitPresence(session, pred, what) {
  const deadline = Date.now() + 10_000;
  let users = [];
  while (Date.now() < deadline) {
    users = await session.page.$$eval('#presence li', (items) => items.map((li) => li.textContent));
    if (pred(users)) return users;
    await sleep(50);
  }
  throw new Error(`timed out: ${what}; the online list shows ${JSON.stringify(users)}`);
}

async function waitLines(session, pred, what) {
  const deadline = Date.now() + 10_000;
  let lines = [];
  while (Date.now() < deadline) {
    lines = await linesOf(session);
    if (pred(lines)) return lines;
    await sleep(50);
  }
  throw new Error(`timed out: ${what}; the join/leave lines are ${JSON.stringify(lines)}`);
}

async function waitStatus(session, re, what) {
  const deadline = Date.now() + 10_000;
  let text = '';
  while (Date.now() < deadline) {
    text = await statusOf(session);
    if (re.test(text)) return text;
    await sleep(50);
  }
  throw new Error(`timed out: ${what}; the status shows ${JSON.stringify(text)}`);
}
