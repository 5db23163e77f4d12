// The operator console (crates/gateway/assets/admin/, served under /admin/ on the
// internal listener) in a real browser: Debian Chromium, headless, driven by
// playwright-core, against real herald processes.
//
// A. Single nodes (startHerald):
//    - a wrong password is refused (alert, no cookie); the right one logs in, the
//      overview shows this node live from the stats stream, and the session cookie is
//      HttpOnly, SameSite=Strict, Path=/admin;
//    - CSRF: an auto-submitting text/plain form on another origin cannot publish (403
//      or 415, a subscriber receives nothing), a same-origin fetch without the
//      X-CSRF-Token header gets 403 {"reason":"csrf"}, with it the publication arrives;
//    - bad input: invalid JSON in the publish form is refused on the page without a
//      request; bodies over 64 KiB get 413, bodies that are not JSON 400;
//    - keyboard: Tab reaches the password field and Enter logs in; Tab reaches the
//      publish form and Enter/Space publish; every form control of every page is labelled;
//    - a session that ran out (session_ttl 4 s) leads to the login page saying so, and
//      the API answers 401 {"reason":"session_expired"};
//    - token login (admin.token_auth): a JWT with "admin": true logs in, one without is refused;
//    - 5 wrong passwords from one address make the 6th attempt (even the right
//      password) answer 429 (a node of its own, so the other tests are not locked out);
//    - admin.insecure shows the INSECURE banner.
// B. `scripts/cluster up` (three nodes on Redis), logged in on node 1's console:
//    the overview lists the three nodes and node 2's connection count follows five SDK
//    clients up and down live; a publication from the channel page reaches a subscriber
//    on node 3 with exactly its data; the channel page lists history (offsets, epoch)
//    and presence; disconnecting a user from the users page closes their SDK client
//    with 3503; the keys page shows key ids and states and no key material.
//
// Every page is saved as artifacts/console-<name>.png (the path is printed), also when
// a test fails; failures carry the page console, its /admin network log and the
// herald log tails. Missing chromium fails with an install message.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, CHROMIUM_MISSING } from './browser_support.mjs';
import {
  appendDiagnostics,
  ClientPool,
  CLUSTER_SCRIPT,
  connectClient,
  parseClusterSummary,
  runScriptsCluster,
  subscribeSub,
} from './cluster_support.mjs';
import { childEnv, connectionToken, heraldBin, nowSec, signHs256, sleep, startHerald, testConfig, uniq } from './harness.mjs';
import { freePort } from './nginx_support.mjs';


const PASSWORD = `pw-${uniq('console')}`;
const API_KEY = `api-key-${uniq('console')}`;
const CHANNEL_POLICY = {
  presence: true,
  join_leave: true,
  history_size: 100,
  history_ttl: '300s',
  allow_subscribe_for_client: true,
};

const shared = { browser: null, hash: null };

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(CHROMIUM_MISSING);
  shared.hash = hashPassword(PASSWORD);
  try {
    shared.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  } catch (err) {
    err.message = `cannot start ${CHROMIUM} through playwright-core: ${err.message}`;
    throw err;
  }
});

after(async () => {
  if (shared.browser) await shared.browser.close().catch(() => {});
});

// ---------------------------------------------------------------------------
// A. Single nodes

describe('console on one node', () => {
  const nodes = { main: null, short: null, limit: null };
  const pool = new ClientPool();

  before(async () => {
    const admin = (extra = {}) => ({ enabled: true, password: shared.hash, stats_interval: '1s', ...extra });
    const config = (adminExtra) =>
      testConfig({ admin: admin(adminExtra), http_api: { key: API_KEY }, channel: { without_namespace: CHANNEL_POLICY } });
    // Three nodes: the 4 s session TTL and the login lockout would get in the way of
    // the other tests if they shared one node.
    [nodes.main, nodes.short, nodes.limit] = await Promise.all([
      startHerald({ label: 'herald (console)', config: config({ session_ttl: '120s' }) }),
      startHerald({ label: 'herald (console, 4 s sessions, token login)', config: config({ session_ttl: '4s', token_auth: true }) }),
      startHerald({ label: 'herald (console, login lockout)', config: config({ session_ttl: '120s' }) }),
    ]);
  });

  after(async () => {
    await pool.closeAll();
    await Promise.all(Object.values(nodes).map((n) => n && n.stop().catch(() => {})));
  });

  const consoleUrl = (server) => `${server.apiUrl}/admin/`;
  const logs = (server) => () => `${pool.diagnostics()}\n${server ? server.logTail(80) : '(herald not running)'}`;

  test('a wrong password is refused: the page says so in an alert and no cookie is set', { timeout: 20_000 }, async (t) => {
    const context = await shared.browser.newContext();
    try {
      await withConsole(t, { name: 'login-wrong-password', context, logs: logs(nodes.main) }, async (page, { shot }) => {
        await page.goto(consoleUrl(nodes.main));
        await page.waitForSelector('#login-password');
        await shot('login');
        const answer = page.waitForResponse((r) => r.url().endsWith('/admin/login'));
        await page.fill('#login-password', `${PASSWORD}-wrong`);
        await page.press('#login-password', 'Enter');
        const res = await answer;
        assert.equal(res.status(), 401, 'POST ./login with a wrong password');
        assert.equal((await res.json()).reason, 'invalid_credentials');
        await pageWait(page, () => document.querySelector('[role="alert"]#login-error')?.textContent.includes('Wrong password'), null, 5_000, 'the alert "Wrong password."');
        assert.deepEqual((await context.cookies()).map((c) => c.name), [], 'no cookie after a refused login');
        assert.equal(await page.evaluate(() => window.heraldConsole.state.view), 'login');
      });
    } finally {
      await context.close();
    }
  });

  test('the right password logs in: the overview shows this node live; the cookie is HttpOnly, SameSite=Strict, Path=/admin', { timeout: 20_000 }, async (t) => {
    const context = await shared.browser.newContext();
    try {
      await withConsole(t, { name: 'overview', context, logs: logs(nodes.main) }, async (page, { shot }) => {
        const session = await logIn(page, consoleUrl(nodes.main), PASSWORD);
        const row = `#nodes tbody tr[data-uid="${session.node.uid}"]`;
        await pageWait(page, (sel) => document.querySelector(`${sel} [data-field="status"]`)?.textContent === 'up', row, 8_000, 'this node reporting on the stream ("up")');
        const cells = await rowCells(page, row);
        assert.equal(cells.name.replace('this node', '').trim(), session.node.name, 'the row names this node');
        assert.match(cells.clients, /^\d+$/, 'connections from the snapshot');
        assert.equal(cells.engine, 'ok');
        assert.match(await page.textContent('#node-name'), new RegExp(session.node.name), 'the header names the node');
        assert.equal(await page.title(), 'Overview · herald console');
        // Rates need two snapshots.
        await pageWait(page, (sel) => /^\d/.test(document.querySelector(`${sel} [data-field="publications_rate"]`)?.textContent), row, 5_000, 'a publications/s figure');
        assert.ok(await page.$('#chart-publications-caption'), 'the publications chart is drawn');

        const cookies = await context.cookies();
        const cookie = cookies.find((c) => c.name === 'herald_admin');
        assert.ok(cookie, `the session cookie herald_admin is set: ${JSON.stringify(cookies.map((c) => c.name))}`);
        assert.equal(cookie.httpOnly, true, 'HttpOnly');
        assert.equal(cookie.sameSite, 'Strict', 'SameSite=Strict');
        assert.equal(cookie.path, '/admin', 'Path=/admin');
        assert.equal(await page.evaluate(() => document.cookie.includes('herald_admin')), false, 'scripts cannot read the cookie');
        await shot('overview');
      });
    } finally {
      await context.close();
    }
  });

  test('Log out ends the session: the login page says so, ./session answers 401 and the cookie is gone', { timeout: 20_000 }, async (t) => {
    const context = await shared.browser.newContext();
    try {
      await withConsole(t, { name: 'logout', context, logs: logs(nodes.main) }, async (page, { shot }) => {
        await logIn(page, consoleUrl(nodes.main), PASSWORD);
        const answer = page.waitForResponse((r) => r.url().endsWith('/admin/logout'));
        await page.click('#logout');
        assert.equal((await answer).status(), 204, 'POST ./logout');
        await pageWait(page, () => window.heraldConsole.state.view === 'login' && document.querySelector('#login-status[role="status"]')?.textContent === 'You logged out.', null, 3_000, 'the login page saying "You logged out."');
        assert.equal(await page.isVisible('nav'), false, 'no navigation while logged out');
        const status = await page.evaluate(async () => (await fetch('./session')).status);
        assert.equal(status, 401, './session after logout');
        assert.deepEqual((await context.cookies()).filter((c) => c.name === 'herald_admin' && c.value), [], 'the cookie is cleared');
        await shot('logged-out');
      });
    } finally {
      await context.close();
    }
  });

  test('CSRF: a form on another origin cannot publish; a same-origin fetch needs X-CSRF-Token', { timeout: 30_000 }, async (t) => {
    const context = await shared.browser.newContext();
    const channel = uniq('csrf');
    const sub = pool.client(nodes.main.wsUrl, { label: 'subscriber', token: connectionToken({ sub: uniq('csrf-watcher') }) });
    await connectClient(sub);
    const watch = pool.subscription(sub, channel);
    await subscribeSub(watch);
    const attacker = await startAttackerSite(`${nodes.main.apiUrl}/admin/api/publish`, channel);
    try {
      await withConsole(t, { name: 'csrf', context, logs: logs(nodes.main) }, async (page, { shot }) => {
        await logIn(page, consoleUrl(nodes.main), PASSWORD);
        const mark = watch.log.mark();

        // (1) The logged-in browser visits another origin whose form posts to the console.
        const answer = page.waitForResponse((r) => r.url().endsWith('/admin/api/publish'), { timeout: 10_000 });
        await page.goto(attacker.url);
        const res = await answer;
        assert.equal(res.request().method(), 'POST');
        assert.ok([403, 415].includes(res.status()), `the cross-origin form post is refused with 403 or 415, got ${res.status()} ${await res.text().catch(() => '')}`);
        await shot('csrf-refused');
        await sleep(1_500);
        assert.deepEqual(watch.log.all('publication', mark).map((p) => p.data), [], 'the subscriber received nothing from the cross-origin post');

        // (2) Same origin, no CSRF header (and a wrong one): refused.
        await page.goto(consoleUrl(nodes.main));
        await page.waitForSelector('#nodes');
        const post = (headers) =>
          page.evaluate(
            async ({ channel, headers }) => {
              const r = await fetch('./api/publish', {
                method: 'POST',
                headers: { 'Content-Type': 'application/json', ...headers },
                body: JSON.stringify({ channel, data: { from: 'fetch' } }),
              });
              return { status: r.status, body: await r.json().catch(() => null) };
            },
            { channel, headers },
          );
        const bare = await post({});
        assert.equal(bare.status, 403, `same-origin fetch without X-CSRF-Token: ${JSON.stringify(bare)}`);
        assert.equal(bare.body?.reason, 'csrf');
        const wrong = await post({ 'X-CSRF-Token': 'not-the-token' });
        assert.equal(wrong.status, 403, `same-origin fetch with a wrong X-CSRF-Token: ${JSON.stringify(wrong)}`);
        assert.equal(wrong.body?.reason, 'csrf');
        await sleep(300);
        assert.deepEqual(watch.log.all('publication', mark).map((p) => p.data), [], 'nothing was published by the refused requests');

        // With the token the same request publishes: the refusals above were about CSRF.
        const csrf = await page.evaluate(async () => (await (await fetch('./session')).json()).csrf);
        const ok = await post({ 'X-CSRF-Token': csrf });
        assert.equal(ok.status, 200, `with X-CSRF-Token: ${JSON.stringify(ok)}`);
        assert.ok(ok.body?.result, `the server API's answer: ${JSON.stringify(ok.body)}`);
        const got = await watch.log.waitFor('publication', { since: mark, timeout: 5_000, what: 'the publication sent with the CSRF token' });
        assert.deepEqual(got.data, { from: 'fetch' });

        // The audit line names who, what and where, never the payload.
        const marker = uniq('payload-marker');
        const audited = await page.evaluate(
          async ({ channel, csrf, marker }) => {
            const r = await fetch('./api/publish', {
              method: 'POST',
              headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
              body: JSON.stringify({ channel, data: { secret: marker } }),
            });
            return r.status;
          },
          { channel, csrf, marker },
        );
        assert.equal(audited, 200);
        await watch.log.waitFor('publication', { since: mark, timeout: 5_000, what: 'the audited publication', pred: (p) => p.data?.secret === marker });
        const log = nodes.main.logTail(400);
        const auditLines = log.split('\n').filter((l) => l.includes('herald::audit') && l.includes('action="publish"') && l.includes(`channel="${channel}"`));
        assert.ok(auditLines.some((l) => l.includes('who="admin"') && l.includes('outcome="ok"')), `an audit line for the console publish:\n${log.slice(-3000)}`);
        assert.ok(!log.includes(marker), 'the published payload appears in no log line');
        assert.ok(!log.includes(PASSWORD), 'the password appears in no log line');
      });
    } finally {
      await attacker.close();
      await pool.closeAll();
      await context.close();
    }
  });

  test('every console response carries the Content-Security-Policy and anti-framing headers', { timeout: 10_000 }, async () => {
    for (const path of ['', 'app.js', 'admin.css', 'session']) {
      const res = await fetch(`${consoleUrl(nodes.main)}${path}`);
      const csp = res.headers.get('content-security-policy') || '';
      for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) {
        assert.ok(csp.includes(directive), `${path || 'index'}: CSP ${JSON.stringify(csp)} has ${directive}`);
      }
      assert.equal(res.headers.get('x-frame-options'), 'DENY', path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
      await res.arrayBuffer();
    }
    const missing = await fetch(`${consoleUrl(nodes.main)}nope.js`);
    assert.equal(missing.status, 404);
    await missing.arrayBuffer();
  });

  test('bad input: invalid JSON is refused on the page without a request; 413 too_large, 400 invalid_json, 415 content_type', { timeout: 20_000 }, async (t) => {
    const context = await shared.browser.newContext();
    const channel = uniq('bad-input');
    try {
      await withConsole(t, { name: 'channel-invalid-json', context, logs: logs(nodes.main) }, async (page, { shot }) => {
        await logIn(page, consoleUrl(nodes.main), PASSWORD);
        const publishes = [];
        page.on('request', (r) => {
          if (r.url().endsWith('/admin/api/publish')) publishes.push(r.postData());
        });
        await page.goto(`${consoleUrl(nodes.main)}#/channel/${encodeURIComponent(channel)}`);
        await page.waitForSelector('#history-table');
        await page.fill('#publish-data', '{"text": "unterminated');
        await page.click('#publish-button');
        await pageWait(page, () => document.querySelector('#publish-error[role="alert"]')?.textContent.includes('not valid JSON'), null, 3_000, 'the invalid JSON alert');
        await sleep(300);
        assert.deepEqual(publishes, [], 'no publish request left the page');
        await shot('channel-invalid-json');

        // The same form with valid JSON sends exactly one request.
        await page.fill('#publish-data', '{"text": "fine"}');
        await page.click('#publish-button');
        await pageWait(page, () => /Published at offset 1\b/.test(document.querySelector('#publish-status')?.textContent), null, 5_000, 'published at offset 1');
        assert.equal(publishes.length, 1, 'one publish request');
        assert.deepEqual(JSON.parse(publishes[0]), { channel, data: { text: 'fine' } });
        assert.equal(await page.textContent('#publish-error'), '', 'the alert is cleared');

        const send = (body, contentType = 'application/json') =>
          page.evaluate(
            async ({ body, contentType }) => {
              const { csrf } = await (await fetch('./session')).json();
              const r = await fetch('./api/publish', { method: 'POST', headers: { 'Content-Type': contentType, 'X-CSRF-Token': csrf }, body });
              return { status: r.status, body: await r.json().catch(() => null) };
            },
            { body, contentType },
          );
        const big = await send(JSON.stringify({ channel, data: { blob: 'x'.repeat(70 * 1024) } }));
        assert.equal(big.status, 413, `a body over 64 KiB: ${JSON.stringify(big)}`);
        assert.equal(big.body?.reason, 'too_large');
        const broken = await send('{"channel": ');
        assert.equal(broken.status, 400, `a body that is not JSON: ${JSON.stringify(broken)}`);
        assert.equal(broken.body?.reason, 'invalid_json');
        const plain = await send(JSON.stringify({ channel, data: {} }), 'text/plain');
        assert.equal(plain.status, 415, `Content-Type text/plain: ${JSON.stringify(plain)}`);
        assert.equal(plain.body?.reason, 'content_type');
      });
    } finally {
      await context.close();
    }
  });

  test('keyboard: Tab reaches the password, Enter logs in; Tab reaches the publish form, Enter and Space publish; every control is labelled', { timeout: 30_000 }, async (t) => {
    const context = await shared.browser.newContext();
    const channel = uniq('keyboard');
    try {
      await withConsole(t, { name: 'keyboard', context, logs: logs(nodes.main) }, async (page, { shot }) => {
        await page.goto(consoleUrl(nodes.main));
        await page.waitForSelector('#login-password');
        assert.deepEqual(await unlabelledControls(page), [], 'every control of the login page has a label');
        const presses = await tabTo(page, 'login-password', 10);
        t.diagnostic(`Tab pressed ${presses} times to reach the password field`);
        await page.keyboard.type(PASSWORD);
        await page.keyboard.press('Enter');
        await pageWait(page, () => window.heraldConsole.state.view === 'page' && !!document.querySelector('#nodes tbody tr[data-uid]'), null, 5_000, 'the overview after Enter');

        const pages = [
          ['overview', '#/overview', '#nodes tbody tr[data-uid]', 'Overview'],
          ['channels', '#/channels', '#channels-search', 'Channels'],
          ['users', '#/users', '#disconnect-form', 'Users'],
          ['keys', '#/keys', '#keys-bus', 'Keys'],
          ['channel-empty', `#/channel/${encodeURIComponent(channel)}`, '#history-table', `Channel ${channel}`],
        ];
        for (const [name, hash, ready, title] of pages) {
          await page.goto(`${consoleUrl(nodes.main)}${hash}`);
          await page.waitForSelector(ready);
          assert.equal(await page.title(), `${title} · herald console`, `the title of ${hash}`);
          assert.deepEqual(await unlabelledControls(page), [], `every control of ${hash} has a label`);
          const levels = await headingLevels(page);
          assert.equal(levels[0], 1, `${hash} starts with the h1`);
          assert.ok(levels.every((l, i) => i === 0 || l <= levels[i - 1] + 1), `heading levels of ${hash} never skip one: ${levels.join(' ')}`);
          if (name !== 'overview') await shot(name); // the login test saves the overview
        }

        // On the channel page (focus starts on its heading): Tab to the textarea, type,
        // Tab to Publish, Enter; then again with Space.
        await page.evaluate(() => document.querySelector('main h2').focus());
        await tabTo(page, 'publish-data', 30);
        await page.keyboard.type('{"via": "enter"}');
        await page.keyboard.press('Tab');
        assert.equal(await page.evaluate(() => document.activeElement.id), 'publish-button', 'Tab from the textarea reaches Publish');
        await page.keyboard.press('Enter');
        await pageWait(page, () => /Published at offset 1\b/.test(document.querySelector('#publish-status')?.textContent), null, 5_000, 'published with Enter');
        await page.evaluate(() => document.querySelector('main h2').focus());
        await tabTo(page, 'publish-data', 30);
        await page.keyboard.press('Control+A');
        await page.keyboard.type('{"via": "space"}');
        await page.keyboard.press('Tab');
        await page.keyboard.press('Space');
        await pageWait(page, () => /Published at offset 2\b/.test(document.querySelector('#publish-status')?.textContent), null, 5_000, 'published with Space');
        await pageWait(page, () => document.querySelectorAll('#history-table tbody tr[data-offset]').length === 2, null, 5_000, 'two publications in the history table');
        assert.deepEqual(await historyRows(page), [
          { offset: '2', data: '{"via":"space"}' },
          { offset: '1', data: '{"via":"enter"}' },
        ]);
        await shot('channel-keyboard');
      });
    } finally {
      await context.close();
    }
  });

  test('an expired session leads to the login page saying so; the API answers 401 session_expired', { timeout: 30_000 }, async (t) => {
    const context = await shared.browser.newContext();
    try {
      await withConsole(t, { name: 'session-expired', context, logs: logs(nodes.short) }, async (page, { shot }) => {
        const session = await logIn(page, consoleUrl(nodes.short), PASSWORD);
        const csrf = await page.evaluate(async () => (await (await fetch('./session')).json()).csrf);
        const ttl = session.expires_at - Date.now();
        assert.ok(ttl > 0 && ttl <= 4_500, `expires_at is about 4 s ahead (session_ttl = "4s"): ${ttl} ms`);
        // Just past the expiry, click to another page (the page's own expiry check,
        // half a second later, may win the race: the login page is right either way).
        await sleep(Math.max(0, session.expires_at - Date.now()) + 150);
        if (await page.isVisible('nav a[data-route="channels"]')) {
          await page.click('nav a[data-route="channels"]', { timeout: 2_000 }).catch(() => {});
        }
        await pageWait(page, () => window.heraldConsole.state.view === 'login', null, 5_000, 'the login page');
        await pageWait(page, () => document.querySelector('#login-error[role="alert"]')?.textContent === 'Your session expired. Log in again.', null, 3_000, 'the "session expired" alert');
        await shot('session-expired');
        await sleep(Math.max(0, session.expires_at + 1_000 - Date.now()));
        const call = await page.evaluate(async (csrf) => {
          const r = await fetch('./api/info', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body: '{}' });
          return { status: r.status, body: await r.json().catch(() => null) };
        }, csrf);
        assert.equal(call.status, 401, `./api/info after expiry: ${JSON.stringify(call)}`);
        assert.equal(call.body?.reason, 'session_expired');
        await page.reload();
        await pageWait(page, () => document.querySelector('#login-error')?.textContent === 'Your session expired. Log in again.', null, 5_000, 'the alert after a reload');
      });
    } finally {
      await context.close();
    }
  });

  test('token login (admin.token_auth): a JWT with "admin": true logs in; one without is refused', { timeout: 20_000 }, async (t) => {
    const good = await shared.browser.newContext();
    const bad = await shared.browser.newContext();
    try {
      await withConsole(t, { name: 'login-token', context: good, logs: logs(nodes.short) }, async (page, { shot }) => {
        await page.goto(consoleUrl(nodes.short));
        await page.waitForSelector('#login-token');
        await shot('login-token');
        await page.fill('#login-token', signHs256({ sub: 'ops', admin: true, exp: nowSec() + 300 }));
        const answer = page.waitForResponse((r) => r.url().endsWith('/admin/login'));
        await page.click('#login-token-form button[type="submit"]');
        assert.equal((await answer).status(), 200, 'a token with admin: true');
        await pageWait(page, () => window.heraldConsole.state.view === 'page' && !!document.querySelector('#nodes tbody tr[data-uid]'), null, 3_000, 'the overview');
        assert.ok((await good.cookies()).some((c) => c.name === 'herald_admin'), 'the session cookie is set');
      });
      await withConsole(t, { name: 'login-token-refused', context: bad, logs: logs(nodes.short) }, async (page) => {
        await page.goto(consoleUrl(nodes.short));
        await page.waitForSelector('#login-token');
        await page.fill('#login-token', signHs256({ sub: 'ops', exp: nowSec() + 300 }));
        const answer = page.waitForResponse((r) => r.url().endsWith('/admin/login'));
        await page.click('#login-token-form button[type="submit"]');
        assert.equal((await answer).status(), 401, 'a token without admin: true');
        await pageWait(page, () => document.querySelector('#login-error')?.textContent.includes('refused'), null, 3_000, 'the refusal alert');
        assert.deepEqual((await bad.cookies()).map((c) => c.name), [], 'no cookie');
      });
    } finally {
      await good.close();
      await bad.close();
    }
  });

  test('after 5 wrong passwords the 6th attempt, even the right password, gets 429 and the page says so', { timeout: 30_000 }, async (t) => {
    const context = await shared.browser.newContext();
    try {
      await withConsole(t, { name: 'login-rate-limited', context, logs: logs(nodes.limit) }, async (page, { shot }) => {
        await page.goto(consoleUrl(nodes.limit));
        await page.waitForSelector('#login-password');
        const attempt = async (password) => {
          // Enter submits only while the button is enabled again after the last answer.
          await page.waitForSelector('#login-password-form button[type="submit"]:not([disabled])');
          const answer = page.waitForResponse((r) => r.url().endsWith('/admin/login'));
          await page.fill('#login-password', password);
          await page.press('#login-password', 'Enter');
          return answer;
        };
        for (let i = 1; i <= 5; i++) {
          const res = await attempt(`wrong-${i}`);
          assert.equal(res.status(), 401, `wrong password #${i}`);
        }
        const sixth = await attempt(PASSWORD);
        assert.equal(sixth.status(), 429, 'the 6th attempt with the right password');
        const body = await sixth.json();
        assert.equal(body.reason, 'too_many_attempts');
        assert.ok(Number(sixth.headers()['retry-after']) > 0, `Retry-After: ${sixth.headers()['retry-after']}`);
        await pageWait(page, () => document.querySelector('#login-error[role="alert"]')?.textContent.startsWith('Too many failed login attempts'), null, 3_000, 'the "too many attempts" alert');
        assert.deepEqual((await context.cookies()).map((c) => c.name), [], 'no cookie');
        await shot('login-rate-limited');
      });
    } finally {
      await context.close();
    }
  });

  test('admin.insecure: no login, and a loud INSECURE banner', { timeout: 20_000 }, async (t) => {
    const server = await startHerald({
      label: 'herald (console, insecure)',
      config: testConfig({ admin: { enabled: true, insecure: true, stats_interval: '1s' } }),
    });
    const context = await shared.browser.newContext();
    try {
      await withConsole(t, { name: 'insecure', context, logs: logs(server) }, async (page, { shot }) => {
        await page.goto(consoleUrl(server));
        await pageWait(page, () => !!document.querySelector('#nodes tbody tr[data-uid]'), null, 5_000, 'the overview without a login');
        const banner = await page.evaluate(() => {
          const b = document.querySelector('[role="alert"]#insecure-banner');
          return b && !b.hidden ? b.textContent : null;
        });
        assert.match(banner ?? '', /INSECURE/, 'a visible role="alert" banner saying INSECURE');
        assert.equal(await page.isVisible('#logout'), false, 'no logout button without a login');
        await pageWait(page, () => !!document.querySelector('#nodes tbody tr [data-field="engine"]')?.textContent.match(/ok/), null, 5_000, 'the node reporting');
        assert.equal(await page.textContent('#info-error'), '', 'the info call works without a login (no CSRF refusal)');
        await shot('insecure');
      });
    } finally {
      await context.close();
      await server.stop();
    }
  });
});

// ---------------------------------------------------------------------------
// B. scripts/cluster

describe('console on scripts/cluster (three nodes)', () => {
  const cl = { tmp: null, dir: null, env: null, info: null, secrets: [], hmac: null, context: null, page: null, uids: {}, down: false };
  const pool = new ClientPool();
  const emergencyDown = () => {
    if (cl.env && !cl.down) spawnSync(CLUSTER_SCRIPT, ['down'], { env: cl.env, timeout: 20_000 });
  };

  before(async () => {
    cl.tmp = mkdtempSync(path.join(tmpdir(), 'herald-console-cluster-'));
    cl.dir = path.join(cl.tmp, 'cluster');
    cl.env = { ...process.env, HERALD_CLUSTER_DIR: cl.dir, HERALD_BIN: heraldBin() };
    process.on('exit', emergencyDown);
    const up = await runScriptsCluster(['up'], cl.env, { timeout: 120_000 });
    assert.equal(up.code, 0, `scripts/cluster up failed (exit ${up.code}):\n${up.stderr}\n${up.stdout}`);
    cl.info = parseClusterSummary(up.stdout);
    for (const key of ['admin_password', 'node1_admin', 'node2_admin', 'node3_admin', 'node2_ws', 'node3_ws', 'api_key']) {
      assert.ok(cl.info[key], `scripts/cluster up printed ${key}=...:\n${up.stdout}`);
    }
    const config = readFileSync(path.join(cl.dir, 'node1.toml'), 'utf8');
    cl.hmac = /hmac_secret_key\s*=\s*"([^"]+)"/.exec(config)?.[1];
    assert.ok(cl.hmac, 'node1.toml has client.token.hmac_secret_key');
    cl.secrets = [...config.matchAll(/\b(?:secret|key|hmac_secret_key)\s*=\s*"([^"]{12,})"/g)].map((m) => m[1]);
    cl.secrets.push(cl.info.admin_password);
    // Which uid is which node: each node's own /session says.
    for (const i of [1, 2, 3]) cl.uids[i] = (await sessionOverHttp(cl.info[`node${i}_admin`], cl.info.admin_password)).node.uid;
    cl.context = await shared.browser.newContext({ viewport: { width: 1200, height: 800 } });
  });

  after(async () => {
    await pool.closeAll();
    if (cl.context) await cl.context.close().catch(() => {});
    if (cl.env && !cl.down) {
      await runScriptsCluster(['down'], cl.env, { timeout: 60_000 });
      cl.down = true;
    }
    process.off('exit', emergencyDown);
    if (cl.tmp) rmSync(cl.tmp, { recursive: true, force: true });
  });

  const logs = () => `${pool.diagnostics()}\n${clusterLogs(cl.dir)}`;
  const token = (user) => signHs256({ sub: user, exp: nowSec() + 600 }, cl.hmac);
  const node1 = () => cl.info.node1_admin;

  test('the overview lists the three nodes; node 2\'s connection count follows 5 SDK clients up and down live', { timeout: 40_000 }, async (t) => {
    await withConsole(t, { name: 'cluster-overview', context: cl.context, logs }, async (page, { shot }) => {
      await logIn(page, node1(), cl.info.admin_password);
      await pageWait(page, (uids) => uids.every((uid) => document.querySelector(`#nodes tbody tr[data-uid="${uid}"] [data-field="status"]`)?.textContent === 'up'),
        Object.values(cl.uids), 8_000, 'the three nodes reporting');
      assert.equal(await page.$$eval('#nodes tbody tr[data-uid]', (rows) => rows.length), 3, 'three rows');
      const cell = `#nodes tbody tr[data-uid="${cl.uids[2]}"] [data-field="clients"]`;
      const before = Number(await page.textContent(cell));
      const watchCount = (want, what) => pageWait(page, ({ cell, want }) => document.querySelector(cell)?.textContent === String(want), { cell, want }, 6_000, what);

      const user = uniq('crowd');
      const handles = Array.from({ length: 5 }, (_, i) => pool.client(cl.info.node2_ws, { label: `crowd-${i}@node2`, token: token(user) }));
      await Promise.all(handles.map((h) => connectClient(h)));
      const reloads = [];
      page.on('framenavigated', (f) => f === page.mainFrame() && reloads.push(f.url()));
      await watchCount(before + 5, `node 2 shows ${before + 5} connections`);
      for (const h of handles) h.client.disconnect();
      await watchCount(before, `node 2 back to ${before} connections`);
      assert.deepEqual(reloads, [], 'the counts changed without a reload');
      await pageWait(page, () => document.querySelectorAll('#chart-publications path.chart-line').length === 3, null, 5_000, 'a chart line per node');
      await shot('cluster-overview');
    });
  });

  test('channel page: a publication reaches a subscriber on node 3 with exactly its data; history lists offsets and epoch; presence lists the subscriber', { timeout: 40_000 }, async (t) => {
    const channel = uniq('console-chan');
    const user = uniq('watcher');
    const watcher = pool.client(cl.info.node3_ws, { label: 'watcher@node3', token: token(user) });
    const connected = await connectClient(watcher);
    const watch = pool.subscription(watcher, channel);
    const subscribed = await subscribeSub(watch);
    try {
      await withConsole(t, { name: 'cluster-channel', context: cl.context, logs }, async (page, { shot }) => {
        await ensureLoggedIn(page, node1(), cl.info.admin_password);

        // The channels page lists it (cluster-wide).
        await page.goto(`${node1()}#/channels`);
        await page.fill('#channels-prefix', channel.slice(0, 14));
        await page.click('#channels-search button[type="submit"]');
        await pageWait(page, (ch) => !!document.querySelector(`#channels-table tr[data-channel="${ch}"]`), channel, 5_000, 'the channel in the search result');
        assert.equal(await page.textContent(`#channels-table tr[data-channel="${channel}"] td`), '1', 'one client in the channel');
        await shot('cluster-channels');
        await page.click(`#channels-table tr[data-channel="${channel}"] a`);
        await pageWait(page, (ch) => window.heraldConsole.state.route?.channel === ch, channel, 3_000, 'the channel page');

        // Presence: the subscriber on node 3.
        await pageWait(page, (client) => !!document.querySelector(`#presence-table tr[data-client="${client}"]`), connected.client, 5_000, 'the subscriber in presence');
        const presence = await page.$eval(`#presence-table tr[data-client="${connected.client}"]`, (tr) => [...tr.cells].map((c) => c.textContent));
        assert.equal(presence[1], user, 'presence shows the subscriber\'s user');
        assert.equal(await page.textContent('#presence-stats'), '1 client, 1 user');

        const items = [{ n: 1, text: 'from the console' }, { n: 2, nested: { ok: true, list: [1, 2] } }, { n: 3, text: '<b>not markup</b>' }];
        const mark = watch.log.mark();
        for (const [i, data] of items.entries()) {
          await page.fill('#publish-data', JSON.stringify(data, null, 2));
          await page.click('#publish-button');
          await pageWait(page, (n) => new RegExp(`Published at offset ${n}\\b`).test(document.querySelector('#publish-status')?.textContent), i + 1, 5_000, `publication ${i + 1} confirmed`);
        }
        await watch.log.waitFor('publication', { since: mark, pred: () => watch.log.all('publication', mark).length >= 3, timeout: 5_000, what: 'three publications on node 3' });
        await sleep(200);
        assert.deepEqual(watch.log.all('publication', mark).map((p) => p.data), items, 'the subscriber on node 3 got exactly the data, in order, once');

        await pageWait(page, () => document.querySelectorAll('#history-table tbody tr[data-offset]').length === 3, null, 5_000, 'three publications in history');
        const rows = await historyRows(page);
        assert.deepEqual(rows.map((r) => r.offset), ['3', '2', '1'], 'offsets, newest first');
        assert.deepEqual(rows.map((r) => JSON.parse(r.data)), [...items].reverse(), 'the data as text');
        const epoch = await page.textContent('#history-epoch');
        assert.equal(epoch, subscribed.streamPosition?.epoch, 'the epoch the subscriber got');
        assert.equal(await page.$('#history-table b'), null, 'publication data never becomes markup');
        await shot('cluster-channel');
      });
    } finally {
      await pool.closeAll();
    }
  });

  test('users page: disconnecting a user closes their SDK client with 3503 (no reconnect)', { timeout: 30_000 }, async (t) => {
    const user = uniq('victim');
    const victim = pool.client(cl.info.node2_ws, { label: 'victim@node2', token: token(user) });
    await connectClient(victim);
    try {
      await withConsole(t, { name: 'cluster-users', context: cl.context, logs }, async (page, { shot }) => {
        await ensureLoggedIn(page, node1(), cl.info.admin_password);
        await page.goto(`${node1()}#/users`);
        await page.fill('#disconnect-user', user);
        const mark = victim.log.mark();
        await page.click('#disconnect-form button[type="submit"]');
        await pageWait(page, (u) => document.querySelector('#disconnect-status[role="status"]')?.textContent === `Disconnected user ${u}.`, user, 5_000, 'the result line');
        const ctx = await victim.log.waitFor('disconnected', { since: mark, timeout: 5_000, what: 'the victim disconnected' });
        assert.equal(ctx.code, 3503, `disconnect code: ${JSON.stringify(ctx)}`);
        await sleep(500);
        assert.equal(victim.log.all('connecting', mark).length, 0, 'the SDK does not reconnect after 3503');
        await shot('cluster-users');
      });
    } finally {
      await pool.closeAll();
    }
  });

  test('keys page: bus and history key ids with their states, and no key material anywhere in the page', { timeout: 20_000 }, async (t) => {
    await withConsole(t, { name: 'cluster-keys', context: cl.context, logs }, async (page, { shot }) => {
      await ensureLoggedIn(page, node1(), cl.info.admin_password);
      await page.goto(`${node1()}#/keys`);
      await page.waitForSelector('#keys-bus table');
      const states = (kind) => page.$$eval(`#keys-${kind} tbody tr`, (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
      assert.deepEqual(await states('bus'), [['bus1', 'active']], 'bus keys');
      assert.deepEqual(await states('history'), [['hist1', 'active']], 'history keys');
      const html = await page.content();
      assert.ok(cl.secrets.length >= 2, `secrets read from node1.toml: ${cl.secrets.length}`);
      for (const secret of cl.secrets) assert.ok(!html.includes(secret), 'no secret of node1.toml in the page');
      const keysJson = await page.evaluate(async () => (await fetch('./keys')).text());
      for (const secret of cl.secrets) assert.ok(!keysJson.includes(secret), 'no secret in ./keys');
      await shot('cluster-keys');
    });
  });
});

// ---------------------------------------------------------------------------
// Helpers

/** `herald hashpassword` reads the password on stdin and prints its PHC hash. */
function hashPassword(password) {
  const run = spawnSync(heraldBin(), ['hashpassword'], { input: password, encoding: 'utf8', env: childEnv(), timeout: 30_000 });
  const hash = (run.stdout || '').split('\n')[0].trim();
  if (run.status !== 0 || !hash.startsWith('$')) {
    throw new Error(`herald hashpassword failed (exit ${run.status}): ${run.stderr}${run.stdout}`);
  }
  return hash;
}

/**
 * Opens a page in `context`, runs `check(page, { seen, shot })` and closes it. `shot(n)`
 * saves artifacts/console-<n>.png. A failure gets a screenshot, the page's console,
 * its /admin network log, the console state and `logs()`. Any CSP violation or page
 * error fails the test.
 */
async function withConsole(t, { name, context, logs }, check) {
  const seen = { console: [], network: [], errors: [] };
  const page = await context.newPage();
  // Only the console's own documents count (not an API answer the browser displays).
  const onConsolePage = () => !new URL(page.url()).pathname.startsWith('/admin/api/') && new URL(page.url()).pathname.startsWith('/admin');
  page.on('console', (msg) => {
    seen.console.push(`${msg.type()}: ${msg.text()}`);
    if (/Content Security Policy/i.test(msg.text()) && onConsolePage()) seen.errors.push(`CSP: ${msg.text()}`);
  });
  page.on('pageerror', (err) => {
    seen.console.push(`pageerror: ${err.message}`);
    seen.errors.push(`pageerror: ${err.message}`);
  });
  page.on('response', (res) => {
    const url = new URL(res.url());
    if (url.pathname.startsWith('/admin')) seen.network.push(`${res.request().method()} ${url.pathname}${url.hash} -> ${res.status()}`);
  });
  page.on('requestfailed', (req) => seen.network.push(`${req.method()} ${req.url()} failed: ${req.failure()?.errorText}`));
  const shot = async (label) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, `console-${label}.png`);
    try {
      await page.screenshot({ path: file, fullPage: true, timeout: 5_000 });
      t.diagnostic(`screenshot: ${file}`);
      console.log(`# screenshot: ${file}`);
    } catch (e) {
      console.log(`# screenshot console-${label} failed: ${e.message}`);
    }
  };
  try {
    await check(page, { seen, shot });
    assert.deepEqual(seen.errors, [], 'no page error and no CSP violation');
  } catch (err) {
    await shot(`${name}-failure`);
    let state = '(unavailable)';
    try {
      state = await page.evaluate(() => JSON.stringify(window.heraldConsole?.state ?? null, null, 1));
    } catch (e) {
      state = `(cannot read window.heraldConsole: ${e.message})`;
    }
    appendDiagnostics(
      err,
      [
        `--- page ${page.url()} ---`,
        `--- window.heraldConsole.state ---\n${state}`,
        `--- page console (last 60) ---\n${seen.console.slice(-60).join('\n')}`,
        `--- page network (/admin, last 80) ---\n${seen.network.slice(-80).join('\n')}`,
        logs(),
      ].join('\n'),
    );
    throw err;
  } finally {
    await page.close().catch(() => {});
  }
}

/** Waits for `fn(arg)` in the page to be truthy, polling every 50 ms. */
async function pageWait(page, fn, arg, timeout, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (err) {
    throw new Error(`the page did not reach '${what}' within ${timeout} ms (${err.message.split('\n')[0]})`);
  }
}

/** Logs in through the login form; resolves with the session the page then holds. */
async function logIn(page, url, password) {
  await page.goto(url);
  await page.waitForSelector('#login-password');
  await page.fill('#login-password', password);
  const answer = page.waitForResponse((r) => r.url().endsWith('/admin/login'));
  await page.click('#login-password-form button[type="submit"]');
  const res = await answer;
  assert.equal(res.status(), 200, `POST ./login: ${res.status()} ${await res.text().catch(() => '')}`);
  await pageWait(page, () => window.heraldConsole.state.view === 'page' && !!document.querySelector('#nodes tbody tr[data-uid]'), null, 5_000, 'the overview after login');
  return page.evaluate(() => window.heraldConsole.state.session);
}

/** Opens the console and logs in unless the context's cookie still holds a session. */
async function ensureLoggedIn(page, url, password) {
  await page.goto(url);
  await pageWait(page, () => ['page', 'login'].includes(window.heraldConsole?.state.view), null, 5_000, 'the console or its login page');
  if ((await page.evaluate(() => window.heraldConsole.state.view)) === 'login') await logIn(page, url, password);
}

/** Presses Tab until the element with `id` has focus; returns the presses. */
async function tabTo(page, id, max) {
  for (let presses = 0; presses <= max; presses++) {
    if ((await page.evaluate(() => document.activeElement?.id)) === id) return presses;
    if (presses < max) await page.keyboard.press('Tab');
  }
  const at = await page.evaluate(() => document.activeElement?.outerHTML.slice(0, 120));
  throw new Error(`#${id} not reached with ${max} Tab presses (focus on ${at})`);
}

/** The form controls of the page that have neither a <label> nor an aria-label. */
function unlabelledControls(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('input, textarea, select')]
      .filter((c) => c.type !== 'hidden' && c.labels.length === 0 && !c.getAttribute('aria-label'))
      .map((c) => c.outerHTML.slice(0, 120)),
  );
}

/** The levels of the visible h1..h6 in document order. */
function headingLevels(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].filter((h) => h.offsetParent !== null).map((h) => Number(h.tagName[1])),
  );
}

/** The cells of a nodes-table row, by data-field. */
function rowCells(page, selector) {
  return page.$eval(selector, (tr) => Object.fromEntries([...tr.querySelectorAll('[data-field]')].map((c) => [c.dataset.field, c.textContent])));
}

/** The history table's rows: { offset, data } as shown. */
function historyRows(page) {
  return page.$$eval('#history-table tbody tr[data-offset]', (rows) => rows.map((r) => ({ offset: r.cells[0].textContent, data: r.cells[1].textContent })));
}

/**
 * A site on another origin (another port of 127.0.0.1) whose page auto-submits a
 * text/plain form to `target`: the body reads as JSON ({"channel":..,"data":{"x":"="}}),
 * the classic way to smuggle JSON past a server that does not check Origin or
 * Content-Type. The cookie goes along: SameSite does not separate ports.
 */
async function startAttackerSite(target, channel) {
  const port = await freePort();
  const name = `{"channel":${JSON.stringify(channel)},"data":{"x":"`;
  const page = [
    '<!doctype html><html lang="en"><head><title>elsewhere</title></head><body>',
    `<form id="f" method="post" action="${target}" enctype="text/plain">`,
    `<input type="hidden" name='${name}' value='"}}'>`,
    '</form><script>document.getElementById("f").submit()</script></body></html>',
  ].join('');
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page);
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** Logs in to a console over plain HTTP (no browser) and returns its ./session. */
async function sessionOverHttp(consoleUrl, password) {
  const login = await fetch(new URL('login', consoleUrl), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ password }),
    signal: AbortSignal.timeout(5_000),
  });
  assert.equal(login.status, 200, `POST ${consoleUrl}login: ${login.status} ${await login.clone().text()}`);
  const cookie = (login.headers.get('set-cookie') || '').split(';')[0];
  const res = await fetch(new URL('session', consoleUrl), { headers: { Cookie: cookie }, signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200, `GET ${consoleUrl}session`);
  return res.json();
}

/** The tails of the cluster nodes' logs. */
function clusterLogs(dir) {
  if (!dir || !existsSync(dir)) return `(cluster state dir ${dir} is gone)`;
  return readdirSync(dir)
    .filter((name) => /^node\d\.(log|out)$/.test(name))
    .sort()
    .map((name) => {
      const lines = readFileSync(path.join(dir, name), 'utf8').trimEnd().split('\n').slice(-30);
      return `--- ${name} (last ${lines.length} lines) ---\n${lines.join('\n')}`;
    })
    .join('\n');
}
