// herald-bench against a real herald: every scenario runs briefly and ends with the
// one-line JSON summary interface.md promises, with nothing lost.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';

import { SECRET, heraldBin, startHerald, testConfig } from './harness.mjs';

const run = promisify(execFile);

function benchBin() {
  const bin = path.join(path.dirname(heraldBin()), 'herald-bench');
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(`herald-bench not found at ${bin}: build it with 'cargo build --locked -p herald-bench'`);
  }
  return bin;
}

async function bench(args) {
  const { stdout, stderr } = await run(benchBin(), args, { timeout: 60_000 });
  const last = stdout.trim().split('\n').pop();
  let summary;
  try {
    summary = JSON.parse(last);
  } catch {
    throw new Error(`last stdout line is not JSON: ${last}\nstderr:\n${stderr}`);
  }
  for (const key of ['scenario', 'deliveries_per_sec', 'p50_ms', 'p90_ms', 'p99_ms', 'p999_ms', 'max_ms', 'errors']) {
    assert.ok(key in summary, `summary lacks ${key}: ${last}`);
  }
  return summary;
}

describe('herald-bench', () => {
  let server;
  const common = () => ['--url', server.wsUrl, '--secret', SECRET];

  before(async () => {
    server = await startHerald({
      config: testConfig({
        http_api: { key: 'bench-key' },
        channel: {
          without_namespace: { allow_subscribe_for_client: true, allow_publish_for_subscriber: true },
        },
        log: { level: 'warn' },
      }),
    });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('fanout through a client and through the API delivers everything', async () => {
    for (const extra of [[], ['--api-key', 'bench-key']]) {
      const s = await bench(['fanout', ...common(), '--subscribers', '20', '--rate', '20', '--duration', '2s', '--warmup', '500ms', ...extra]);
      assert.equal(s.scenario, 'fanout');
      assert.equal(s.errors, 0, JSON.stringify(s));
      assert.ok(s.publications >= 30, JSON.stringify(s));
      assert.equal(s.missing_deliveries, 0, JSON.stringify(s));
      assert.equal(s.expected_deliveries, s.publications * 20);
      assert.ok(s.deliveries_per_sec > 0 && s.p50_ms > 0 && s.p99_ms >= s.p50_ms, JSON.stringify(s));
    }
  });

  test('channels, connect and idle scenarios', async () => {
    const channels = await bench(['channels', ...common(), '--subscribers', '5', '--channels', '4', '--rate', '40', '--duration', '2s', '--warmup', '0s']);
    assert.equal(channels.missing_deliveries, 0, JSON.stringify(channels));
    const connect = await bench(['connect', ...common(), '--subscribers', '100']);
    assert.equal(connect.connections, 100);
    assert.equal(connect.errors, 0);
    assert.ok(connect.connects_per_sec > 0);
    const idle = await bench(['idle', ...common(), '--subscribers', '100', '--duration', '1s', '--server-pid', String(server.child.pid)]);
    assert.equal(idle.connections, 100);
    // The server's RSS is read from /proc before and after. On a server that
    // already served the scenarios above, 100 connections may fit in memory it
    // freed, so only the readings, not growth, are asserted here.
    assert.ok(idle.rss_before_kib > 0 && idle.rss_after_kib > 0, JSON.stringify(idle));
    assert.equal(typeof idle.rss_per_conn_kib, 'number', JSON.stringify(idle));
  });
});
