// Redis Sentinel for the centrifuge-js suites: a master, a replica and three Sentinels
// as real processes on free ports. Debian's package has no separate redis-sentinel
// binary everywhere, so each Sentinel is `redis-server <conf> --sentinel`. Timings are
// short (1 s to call the master down, 4 s failover timeout) so a failover takes a few
// seconds. The object returned fits `startNodes(n, mode, { redis })` of cluster_support.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { freeServicePort, REDIS_MISSING, redisCli } from './cluster_support.mjs';
import { sleep, uniq } from './harness.mjs';

export const MASTER_NAME = 'herald-master';
export const SENTINEL_PASSWORD = 'sentinel-secret';

const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** One redis-server process (data server or Sentinel) with its output kept. */
class Proc {
  constructor({ port, dir, args, label, password = null }) {
    Object.assign(this, { port, dir, args, label, password });
    this.child = null;
    this.output = '';
  }

  cli(args, opts) {
    const auth = this.password ? ['-a', this.password, '--no-auth-warning'] : [];
    return redisCli(this.port, [...auth, ...args], opts);
  }

  async start({ timeout = 15_000 } = {}) {
    const child = spawn('redis-server', this.args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    live.add(child);
    let spawnError = null;
    child.on('error', (err) => {
      spawnError = err;
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        this.output += chunk;
        if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
      });
    }
    child.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        live.delete(child);
        if (this.child === child) this.child = null;
        resolve({ code, signal });
      }),
    );
    const deadline = Date.now() + timeout;
    for (;;) {
      if (spawnError) throw spawnError.code === 'ENOENT' ? new Error(REDIS_MISSING) : spawnError;
      if (this.child !== child) throw new Error(`${this.label} exited while starting\n${this.logTail()}`);
      try {
        if ((await this.cli(['ping'], { timeout: 2_000 })).trim() === 'PONG') return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${this.label} did not answer PING\n${this.logTail()}`);
      await sleep(50);
    }
  }

  kill(signal = 'SIGKILL') {
    const child = this.child;
    if (!child) return Promise.resolve();
    child.kill(signal);
    return child.exited;
  }

  logTail(lines = 25) {
    return `--- ${this.label} :${this.port} (last ${lines} lines) ---\n${this.output.trimEnd().split('\n').slice(-lines).join('\n')}`;
  }
}

/** `SENTINEL MASTER <name>` as an object. */
async function sentinelMaster(sentinel) {
  const lines = (await sentinel.cli(['sentinel', 'master', MASTER_NAME], { timeout: 2_000 })).trim().split('\n');
  const out = {};
  for (let i = 0; i + 1 < lines.length; i += 2) out[lines[i].trim()] = lines[i + 1].trim();
  return out;
}

/** The port a Sentinel names as the master's. */
async function namedMasterPort(sentinel) {
  const reply = (await sentinel.cli(['sentinel', 'get-master-addr-by-name', MASTER_NAME], { timeout: 2_000 })).trim().split('\n');
  return Number(reply[1]);
}

/**
 * Starts the master, the replica (synced) and three Sentinels that know each other and
 * the replica.
 */
export async function startSentinelRedis() {
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-sentinel-'));
  const taken = new Set();
  const servers = [];
  const sentinels = [];
  const setup = {
    mode: 'sentinel',
    servers,
    sentinels,
    dir,
    /** The `[engine]` table for herald. */
    engineConfig(prefix = uniq('herald')) {
      return {
        type: 'redis',
        redis: {
          prefix,
          sentinel_address: sentinels.map((s) => `127.0.0.1:${s.port}`),
          sentinel_master_name: MASTER_NAME,
          sentinel_password: SENTINEL_PASSWORD,
          heartbeat_interval: '300ms',
          node_ttl: '2s',
          command_timeout: '1s',
          connect_timeout: '1s',
        },
      };
    },
    /** The data server the Sentinels name as master now. */
    async master() {
      for (const s of sentinels) {
        if (!s.child) continue;
        try {
          const port = await namedMasterPort(s);
          const server = servers.find((x) => x.port === port);
          if (server) return server;
        } catch {
          // the next Sentinel
        }
      }
      throw new Error('no Sentinel names a known master');
    },
    /** Waits until every live Sentinel names `server` and it says role master. */
    async waitMaster(server, { timeout = 30_000 } = {}) {
      const deadline = Date.now() + timeout;
      let last = '';
      for (;;) {
        try {
          const named = await Promise.all(sentinels.filter((s) => s.child).map(namedMasterPort));
          const role = (await server.cli(['role'], { timeout: 2_000 })).split('\n')[0].trim();
          last = `Sentinels name ${named.join(',')}; :${server.port} is ${role}`;
          if (named.every((p) => p === server.port) && role === 'master') return;
        } catch (err) {
          last = err.message;
        }
        if (Date.now() > deadline) throw new Error(`no failover to :${server.port} within ${timeout} ms (${last})\n${this.logTail()}`);
        await sleep(100);
      }
    },
    logTail(lines = 25) {
      return [...servers, ...sentinels].map((p) => p.logTail(lines)).join('\n');
    },
    async close() {
      await Promise.all([...servers, ...sentinels].map((p) => p.kill('SIGKILL')));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    const dataServer = async (label, extra = []) => {
      const port = await freeServicePort(taken);
      const sdir = mkdtempSync(path.join(dir, `${label}-`));
      const args = [
        '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
        '--dir', sdir, '--daemonize', 'no', '--protected-mode', 'no', '--logfile', '', ...extra,
      ];
      const proc = new Proc({ port, dir: sdir, args, label: `redis ${label}` });
      servers.push(proc);
      await proc.start();
      return proc;
    };
    const master = await dataServer('master');
    const replica = await dataServer('replica', ['--replicaof', '127.0.0.1', String(master.port)]);
    const deadline = Date.now() + 15_000;
    while (!/master_link_status:up/.test(await replica.cli(['info', 'replication']))) {
      if (Date.now() > deadline) throw new Error(`the replica never synced\n${setup.logTail()}`);
      await sleep(50);
    }
    for (let i = 0; i < 3; i++) {
      const port = await freeServicePort(taken);
      const sdir = mkdtempSync(path.join(dir, `sentinel${i}-`));
      const conf = path.join(sdir, 'sentinel.conf');
      writeFileSync(
        conf,
        [
          `port ${port}`, 'bind 127.0.0.1', 'protected-mode no', 'daemonize no', `dir ${sdir}`, 'logfile ""',
          `requirepass ${SENTINEL_PASSWORD}`,
          `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${master.port} 2`,
          `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
          `sentinel failover-timeout ${MASTER_NAME} 4000`,
          `sentinel parallel-syncs ${MASTER_NAME} 1`,
          '',
        ].join('\n'),
      );
      const proc = new Proc({ port, dir: sdir, args: [conf, '--sentinel'], label: `sentinel ${i + 1}`, password: SENTINEL_PASSWORD });
      sentinels.push(proc);
      await proc.start();
    }
    const ready = Date.now() + 20_000;
    for (;;) {
      const states = await Promise.all(sentinels.map((s) => sentinelMaster(s).catch(() => ({}))));
      if (states.every((m) => m['num-slaves'] === '1' && m['num-other-sentinels'] === '2')) break;
      if (Date.now() > ready) {
        throw new Error(`the Sentinels did not find each other and the replica: ${JSON.stringify(states)}\n${setup.logTail()}`);
      }
      await sleep(100);
    }
  } catch (err) {
    await setup.close();
    throw err;
  }
  return setup;
}
