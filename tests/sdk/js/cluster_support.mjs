// Multi-node support for the centrifuge-js suites: real `redis-server` processes
// (standalone, two independent shards, a 3-master Redis Cluster) that can be stopped
// and restarted on the same port with or without their data, several `herald serve`
// nodes on one Redis setup, and a loopback TCP proxy in front of the nodes that a
// chaos test re-points when it kills a node.

import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';

import { EventLog, recordingWebSocket, repoRoot, sleep, startHerald, testConfig, uniq, within } from './harness.mjs';

export const REDIS_MISSING =
  'redis-server not found: install it with `apt-get install -y redis-server` (scripts/test does this when run as root)';

/** Modes named in an environment variable (comma-separated), or the default list. */
export function modesFromEnv(name, fallback) {
  const raw = process.env[name];
  const list = (raw && raw.trim() ? raw : fallback)
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
  for (const m of list) {
    if (!['standalone', 'sharded', 'cluster'].includes(m)) {
      throw new Error(`${name}: unknown Redis mode '${m}' (use standalone, sharded, cluster)`);
    }
  }
  return list;
}

// ---------------------------------------------------------------------------
// Processes to clean up whatever happens

const liveRedis = new Set();
function killAllRedis() {
  for (const child of liveRedis) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killAllRedis);
for (const [sig, num] of [
  ['SIGINT', 2],
  ['SIGTERM', 15],
  ['SIGHUP', 1],
]) {
  // process.exit runs the 'exit' hooks: ours (Redis) and the harness's (herald nodes).
  process.once(sig, () => process.exit(128 + num));
}

// ---------------------------------------------------------------------------
// Ports

function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * Ports for the Redis servers, which tests stop and start again on the same port: below
 * the kernel's ephemeral range (ip_local_port_range), so no outgoing connection takes
 * one while its server is down. A client retrying a stopped server on a port inside
 * that range can even connect to itself and hold the port.
 */
const SERVICE_PORTS = (() => {
  let low = 32_768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // Not Linux: keep the usual lower bound.
  }
  return { min: 10_000, end: Math.max(Math.min(low, 32_768), 25_000) };
})();

/**
 * A free service port (see SERVICE_PORTS) not in `taken`; with `span`, port + span must
 * be free and in the range too (a Cluster node's bus port is port + 10000).
 */
export async function freeServicePort(taken, span = 0) {
  const { min, end } = SERVICE_PORTS;
  for (let i = 0; i < 500; i++) {
    const port = min + Math.floor(Math.random() * (end - span - min));
    if (taken.has(port) || (span && taken.has(port + span))) continue;
    if ((await portFree(port)) && (!span || (await portFree(port + span)))) {
      taken.add(port);
      if (span) taken.add(port + span);
      return port;
    }
  }
  throw new Error(`no free loopback port in ${min}..${end}${span ? ` with port + ${span} free` : ''}`);
}

// ---------------------------------------------------------------------------
// redis-cli

function redisBinaries() {
  for (const bin of ['redis-server', 'redis-cli']) {
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    if (r.error) {
      if (bin === 'redis-server') throw new Error(REDIS_MISSING);
      throw new Error(`redis-cli not found (it comes with redis-server): ${r.error.message}`);
    }
  }
}

/** Runs `redis-cli -p PORT args...`; resolves with its stdout (rejects on a failed run). */
export function redisCli(port, args, { timeout = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout }, (err, stdout, stderr) => {
      if (err) {
        err.message = `redis-cli -p ${port} ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`;
        reject(err);
      } else {
        resolve(stdout);
      }
    });
  });
}

// ---------------------------------------------------------------------------
// One redis-server

export class RedisServer {
  /**
   * `nodeTimeout`: the Cluster's `cluster-node-timeout` in ms. `aof`: append-only file
   * with `appendfsync` set to this (`always`, `everysec`, `no`); none by default.
   */
  constructor({ port, dir, cluster = false, nodeTimeout = 5_000, aof = null }) {
    this.port = port;
    this.dir = dir;
    this.cluster = cluster;
    this.nodeTimeout = nodeTimeout;
    this.aof = aof;
    this.child = null;
    this.output = '';
    this.starts = 0;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running() {
    return this.child !== null;
  }

  async start({ timeout = 15_000 } = {}) {
    if (this.child) throw new Error(`redis ${this.port} is already running`);
    const args = [
      '--port', String(this.port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', this.aof ? 'yes' : 'no',
      ...(this.aof ? ['--appendfsync', this.aof, '--appenddirname', 'appendonly'] : []),
      '--dir', this.dir,
      '--dbfilename', 'dump.rdb',
      '--daemonize', 'no',
      '--protected-mode', 'no',
      '--logfile', '',
    ];
    if (this.cluster) {
      args.push(
        '--cluster-enabled', 'yes',
        '--cluster-config-file', path.join(this.dir, `nodes-${this.port}.conf`),
        '--cluster-node-timeout', String(this.nodeTimeout),
      );
    }
    this.starts += 1;
    const child = spawn('redis-server', args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    liveRedis.add(child);
    const record = (chunk) => {
      this.output += chunk;
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', record);
    child.stderr.on('data', record);
    let spawnError = null;
    child.on('error', (err) => {
      spawnError = err;
    });
    child.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        liveRedis.delete(child);
        if (this.child === child) this.child = null;
        resolve({ code, signal });
      }),
    );

    const deadline = Date.now() + timeout;
    for (;;) {
      if (spawnError) {
        throw spawnError.code === 'ENOENT' ? new Error(REDIS_MISSING) : spawnError;
      }
      if (this.child !== child) {
        throw new Error(`redis-server on port ${this.port} exited while starting\n${this.logTail()}`);
      }
      try {
        if ((await redisCli(this.port, ['ping'], { timeout: 2_000 })).trim() === 'PONG') return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        throw new Error(`redis-server on port ${this.port} did not answer PING within ${timeout} ms\n${this.logTail()}`);
      }
      await sleep(50);
    }
  }

  /** `SHUTDOWN SAVE` (keep the data in dump.rdb) or `SHUTDOWN NOSAVE`; waits for the exit. */
  async stop({ save = true } = {}) {
    const child = this.child;
    if (!child) return;
    try {
      await redisCli(this.port, ['shutdown', save ? 'save' : 'nosave'], { timeout: 10_000 });
    } catch {
      // redis-cli may report the closed connection; the exit below is what counts
    }
    const gone = await Promise.race([child.exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!gone) {
      child.kill('SIGKILL');
      await child.exited;
    }
  }

  /** Removes the saved data (the next start is empty). Cluster config is kept. */
  wipe() {
    rmSync(path.join(this.dir, 'dump.rdb'), { force: true });
  }

  kill(signal = 'SIGKILL') {
    if (this.child) this.child.kill(signal);
    return this.child ? this.child.exited : Promise.resolve();
  }

  /** Sends `signal` without waiting (SIGSTOP and SIGCONT pause and resume the server). */
  signal(signal) {
    if (this.child) this.child.kill(signal);
  }

  /** Runs `redis-cli` against this server. */
  cli(args, options) {
    return redisCli(this.port, args, options);
  }

  /** `INFO <section>` as an object of its `field:value` lines. */
  async info(section) {
    const out = await redisCli(this.port, ['info', section], { timeout: 3_000 });
    const fields = {};
    for (const line of out.split('\n')) {
      const m = /^([a-z0-9_]+):(.*)$/.exec(line.trim());
      if (m) fields[m[1]] = m[2];
    }
    return fields;
  }

  logTail(lines = 25) {
    return `--- redis ${this.port} (last ${lines} lines) ---\n${this.output.trimEnd().split('\n').slice(-lines).join('\n')}`;
  }
}

// ---------------------------------------------------------------------------
// A Redis set-up for one engine mode

export class RedisSetup {
  constructor(mode, servers, dir) {
    this.mode = mode;
    this.servers = servers;
    this.dir = dir;
  }

  /** The `[engine]` table for herald. */
  engineConfig(prefix = uniq('herald')) {
    const redis = {
      prefix,
      heartbeat_interval: '300ms',
      node_ttl: '2s',
      command_timeout: '1s',
      connect_timeout: '1s',
    };
    if (this.mode === 'cluster') redis.cluster_address = this.servers.map((s) => s.url);
    else redis.address = this.servers.map((s) => s.url);
    return { type: 'redis', redis };
  }

  async waitClusterOk({ timeout = 30_000 } = {}) {
    if (this.mode !== 'cluster') return;
    const deadline = Date.now() + timeout;
    let last = '';
    for (;;) {
      let ok = 0;
      const running = this.servers.filter((s) => s.running);
      for (const s of running) {
        try {
          const info = await redisCli(s.port, ['cluster', 'info'], { timeout: 2_000 });
          if (/cluster_state:ok/.test(info)) ok += 1;
          else last = `${s.port}: ${info.split('\n').find((l) => l.startsWith('cluster_state')) || info}`;
        } catch (err) {
          last = `${s.port}: ${err.message}`;
        }
      }
      if (ok === running.length) {
        // Replicas count once they hold their master's data.
        const syncing = [];
        for (const s of running) {
          const repl = await s.info('replication').catch(() => ({ role: '?' }));
          if (repl.role === 'slave' && (repl.master_link_status !== 'up' || repl.master_sync_in_progress !== '0')) syncing.push(s.port);
        }
        if (syncing.length === 0) return;
        last = `replicas not in sync yet: ${syncing.join(', ')}`;
      }
      if (Date.now() > deadline) {
        throw new Error(`Redis Cluster not ok after ${timeout} ms (${last})\n${this.logTail()}`);
      }
      await sleep(100);
    }
  }

  /** Stops every server (SHUTDOWN SAVE, or NOSAVE + delete dump.rdb when `empty`). */
  async stopAll({ empty = false } = {}) {
    await Promise.all(
      this.servers.map(async (s) => {
        await s.stop({ save: !empty });
        if (empty) s.wipe();
      }),
    );
  }

  /** Starts every stopped server again on its port, with whatever data its dir holds. */
  async startAll() {
    await Promise.all(this.servers.filter((s) => !s.running).map((s) => s.start()));
    await this.waitClusterOk();
  }

  /** Stops all, waits `downMs`, starts all again. */
  async restartAll({ empty = false, downMs = 0 } = {}) {
    await this.stopAll({ empty });
    if (downMs > 0) await sleep(downMs);
    await this.startAll();
  }

  /**
   * The Cluster's nodes as one running server sees them (`CLUSTER NODES`): per node its
   * id, port, role (`master`/`slave`), the id of its master, whether it is marked failed,
   * and the slot ranges it serves.
   */
  async clusterNodes() {
    let lastErr = null;
    for (const s of this.servers.filter((x) => x.running)) {
      try {
        const out = await s.cli(['cluster', 'nodes'], { timeout: 3_000 });
        return out
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((line) => {
            const f = line.split(' ');
            const flags = f[2].split(',');
            const slots = f.slice(8).filter((x) => /^\d+(-\d+)?$/.test(x)).map((r) => {
              const [a, b] = r.split('-').map(Number);
              return [a, b ?? a];
            });
            return {
              id: f[0],
              port: Number(f[1].split(':')[1].split('@')[0]),
              role: flags.includes('master') ? 'master' : flags.includes('slave') ? 'slave' : '?',
              masterId: f[3] === '-' ? null : f[3],
              failed: flags.some((x) => x === 'fail' || x === 'fail?'),
              slots,
            };
          });
      } catch (err) {
        lastErr = err;
      }
    }
    throw lastErr ?? new Error('no running Redis Cluster server');
  }

  /** The server (RedisServer) with `port`. */
  server(port) {
    const s = this.servers.find((x) => x.port === port);
    if (!s) throw new Error(`no Redis server on port ${port}`);
    return s;
  }

  /** The slot of a key or channel name without braces (CLUSTER KEYSLOT). */
  async keyslot(name) {
    const s = this.servers.find((x) => x.running);
    return Number((await s.cli(['cluster', 'keyslot', name])).trim());
  }

  /** The master serving `slot` and its replica (RedisServers; replica null when none). */
  async ownerOfSlot(slot) {
    const nodes = await this.clusterNodes();
    const master = nodes.find((n) => n.role === 'master' && !n.failed && n.slots.some(([a, b]) => slot >= a && slot <= b));
    if (!master) return { master: null, replica: null };
    const replica = nodes.find((n) => n.role === 'slave' && n.masterId === master.id);
    return { master: this.server(master.port), replica: replica ? this.server(replica.port) : null, masterId: master.id };
  }

  /** Sum of `cmdstat_<command>:calls=` over every server. */
  async commandCalls(command) {
    let total = 0;
    for (const s of this.servers) {
      const info = await redisCli(s.port, ['info', 'commandstats']);
      const m = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'mi').exec(info);
      if (m) total += Number(m[1]);
    }
    return total;
  }

  /** Subscribers of a Redis pub/sub channel on each server (SHARDNUMSUB in Cluster mode). */
  async subscribers(pubsubChannel) {
    const counts = {};
    for (const s of this.servers) {
      try {
        const sub = this.mode === 'cluster' ? 'shardnumsub' : 'numsub';
        const out = (await redisCli(s.port, ['pubsub', sub, pubsubChannel])).trim().split('\n');
        counts[s.port] = Number(out[out.length - 1]);
      } catch (err) {
        counts[s.port] = `error: ${err.message.split('\n')[0]}`;
      }
    }
    return counts;
  }

  /** Starts `redis-cli MONITOR` on every server; `stop()` resolves with the lines seen. */
  monitor() {
    const procs = this.servers.map((s) => {
      const child = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(s.port), 'monitor'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      liveRedis.add(child);
      let out = '';
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (c) => {
        out += c;
      });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      return { child, port: s.port, exited, get out() { return out; } };
    });
    return {
      ready: sleep(300), // MONITOR starts streaming once redis-cli is connected
      async stop() {
        await sleep(200);
        for (const p of procs) p.child.kill('SIGTERM');
        await Promise.all(procs.map((p) => p.exited));
        for (const p of procs) liveRedis.delete(p.child);
        return procs.map((p) => ({ port: p.port, lines: p.out.split('\n').filter(Boolean) }));
      },
    };
  }

  logTail(lines = 25) {
    return this.servers.map((s) => s.logTail(lines)).join('\n');
  }

  async close() {
    await Promise.all(this.servers.map((s) => s.kill('SIGKILL')));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Starts the Redis servers of `mode`: standalone (1), sharded (2 independent), cluster
 * (3 masters). Options: `replicas` (Cluster: replicas per master, default 0),
 * `nodeTimeout` (Cluster: cluster-node-timeout in ms, default 5000), `aof` (every server
 * writes an append-only file with this appendfsync policy: `always`, `everysec`).
 */
export async function startRedis(mode, { replicas = 0, nodeTimeout = 5_000, aof = null } = {}) {
  redisBinaries();
  const dir = mkdtempSync(path.join(tmpdir(), `herald-redis-${mode}-`));
  const servers = [];
  const setup = new RedisSetup(mode, servers, dir);
  try {
    if (mode === 'standalone' || mode === 'sharded') {
      const count = mode === 'standalone' ? 1 : 2;
      const taken = new Set();
      for (let i = 0; i < count; i++) {
        const port = await freeServicePort(taken);
        const sdir = mkdtempSync(path.join(dir, `r${port}-`));
        servers.push(new RedisServer({ port, dir: sdir, aof }));
      }
      await Promise.all(servers.map((s) => s.start()));
    } else if (mode === 'cluster') {
      const taken = new Set();
      for (let i = 0; i < 3 * (1 + replicas); i++) {
        const port = await freeServicePort(taken, 10_000);
        const sdir = mkdtempSync(path.join(dir, `c${port}-`));
        servers.push(new RedisServer({ port, dir: sdir, cluster: true, nodeTimeout, aof }));
      }
      await Promise.all(servers.map((s) => s.start()));
      await redisCli(
        servers[0].port,
        ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'],
        { timeout: 60_000 },
      );
      await setup.waitClusterOk();
    } else {
      throw new Error(`unknown Redis mode '${mode}'`);
    }
  } catch (err) {
    await setup.close();
    throw err;
  }
  return setup;
}

// ---------------------------------------------------------------------------
// Loopback TCP proxy

/** Forwards each new connection to `127.0.0.1:ports[current]`; `target(i)` changes `current`. */
export async function startProxy(ports) {
  let current = 0;
  const pairs = new Set();
  const counts = ports.map(() => 0);
  const server = net.createServer((client) => {
    const index = current;
    counts[index] += 1;
    const upstream = net.connect({ host: '127.0.0.1', port: ports[index] });
    const pair = { client, upstream, index };
    pairs.add(pair);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    const done = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', done);
      s.on('close', done);
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1' }, resolve);
  });
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/connection/websocket`,
    get current() {
      return current;
    },
    /** New connections go to node `i` from now on. */
    target(i) {
      if (i < 0 || i >= ports.length) throw new Error(`proxy: no target ${i}`);
      current = i;
    },
    /** Closes every forwarded connection (to node `i`, or all). */
    dropConnections(i) {
      for (const p of [...pairs]) {
        if (i === undefined || p.index === i) {
          p.client.destroy();
          p.upstream.destroy();
        }
      }
    },
    describe() {
      return `proxy :${port} -> target ${current}; connections accepted per target ${JSON.stringify(counts)}; open ${pairs.size}`;
    },
    async close() {
      this.dropConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// ---------------------------------------------------------------------------
// herald nodes

/**
 * Starts Redis for `mode` (unless `redis` is given), then `n` herald nodes on it (same
 * SECRET, same prefix) and a proxy in front of them (pointing at node 0).
 * `config`: extra herald config merged over testConfig (channels, client options).
 */
export async function startNodes(n, mode, { redis = null, config = {}, label = `herald-${mode}` } = {}) {
  const ownRedis = !redis;
  if (ownRedis) redis = await startRedis(mode);
  const prefix = uniq('herald');
  const nodes = [];
  let proxy = null;
  const cluster = {
    mode,
    prefix,
    redis,
    nodes,
    get proxy() {
      return proxy;
    },
    /** The Redis pub/sub channel herald uses for a channel's publications. */
    pubsubChannel(channel) {
      return mode === 'cluster' ? `${prefix}.client.{${channel}}` : `${prefix}.client.${channel}`;
    },
    /** The WebSocket URL of node `i` (direct, no proxy). */
    url(i) {
      return nodes[i].wsUrl;
    },
    /** Sends `signal` to node `i`'s process group and waits for its exit. */
    async kill(i, signal = 'SIGKILL') {
      const node = nodes[i];
      if (node.exited) return;
      const gone = new Promise((resolve) => node.child.once('exit', resolve));
      try {
        process.kill(-node.child.pid, signal);
      } catch {
        node.child.kill(signal);
      }
      await gone;
    },
    /**
     * Each node's log: the last `lines` lines of herald's own targets (the redis crate's
     * reconnect chatter filtered out), then the last few raw lines.
     */
    logTails(lines = 80) {
      const parts = nodes.map((node, i) => {
        const state = node.exited ? ` (exited: ${JSON.stringify(node.exited)})` : '';
        const all = node.logs().split('\n');
        const own = all.filter((l) => !/ redis::/.test(l)).slice(-lines);
        const raw = all.slice(-10);
        return (
          `===== node ${i + 1} ${node.wsUrl}${state} =====\n` +
          `--- herald log, without redis:: crate lines (last ${lines}) ---\n${own.join('\n')}\n` +
          `--- herald log, raw (last 10 lines) ---\n${raw.join('\n')}`
        );
      });
      if (proxy) parts.push(proxy.describe());
      parts.push(redis.logTail(15));
      return parts.join('\n');
    },
    /** Writes every node's full log to `dir` (HERALD_TEST_LOG_DIR), named after `name`. */
    saveLogs(name) {
      const dir = process.env.HERALD_TEST_LOG_DIR;
      if (!dir) return;
      mkdirSync(dir, { recursive: true });
      const base = name.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80);
      nodes.forEach((node, i) => writeFileSync(path.join(dir, `${base}.node${i + 1}.log`), node.logs()));
      writeFileSync(path.join(dir, `${base}.redis.log`), redis.logTail(100_000));
    },
    async stop() {
      if (proxy) await proxy.close().catch(() => {});
      await Promise.all(nodes.map((node) => node.stop().catch(() => {})));
      if (ownRedis) await redis.close();
    },
  };
  try {
    const full = testConfig({ ...config, engine: redis.engineConfig(prefix) });
    for (let i = 0; i < n; i++) {
      nodes.push(await startHerald({ config: full, label: `${label} node ${i + 1}` }));
    }
    proxy = await startProxy(nodes.map((node) => Number(new URL(node.wsUrl).port)));
  } catch (err) {
    const logs = nodes.length ? `\n${cluster.logTails()}` : `\n${redis.logTail()}`;
    await cluster.stop();
    err.message = `${err.message}${logs}`;
    throw err;
  }
  return cluster;
}

// ---------------------------------------------------------------------------
// SDK clients spread over several nodes

const CLIENT_EVENTS = ['state', 'connecting', 'connected', 'disconnected', 'error'];
const SUB_EVENTS = ['state', 'subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error'];

/** Tracks SDK clients (each bound to a URL) so they are closed and described on failure. */
export class ClientPool {
  constructor() {
    this.handles = [];
  }

  /** A tracked client of `url`; `protobuf`: the SDK's protobuf build. */
  client(url, { label = 'client', protobuf = false, ...options } = {}) {
    const frames = [];
    const Sdk = protobuf ? CentrifugeProtobuf : Centrifuge;
    const client = new Sdk(url, {
      websocket: recordingWebSocket(frames),
      minReconnectDelay: 200,
      maxReconnectDelay: 1_000,
      ...options,
    });
    const log = new EventLog(client, CLIENT_EVENTS, label);
    const handle = { client, log, frames, label, url, subs: [] };
    this.handles.push(handle);
    return handle;
  }

  subscription(handle, channel, options = {}) {
    const sub = handle.client.newSubscription(channel, options);
    const log = new EventLog(sub, SUB_EVENTS, `${handle.label} sub ${channel}`);
    handle.subs.push(log);
    return { sub, log };
  }

  diagnostics({ frames = 30 } = {}) {
    const parts = [];
    for (const h of this.handles) {
      parts.push(`--- ${h.label} (${h.url}): events ---\n${h.log.summary()}`);
      for (const s of h.subs) parts.push(`--- ${s.label}: events ---\n${s.summary(40)}`);
      const last = h.frames.slice(-frames).map((f) => `  ${f.dir} ${f.text.slice(0, 300)}`);
      parts.push(`--- ${h.label}: last frames ---\n${last.join('\n')}`);
    }
    return parts.join('\n');
  }

  async closeAll() {
    for (const h of this.handles) {
      try {
        h.client.disconnect();
      } catch {
        // nothing to do
      }
    }
    this.handles = [];
    await sleep(50);
  }
}

/**
 * Declares, inside the current describe block, a set of nodes started in `before` and
 * stopped in `after`. `env.test` closes its clients after each test and appends the
 * clients' events, frames and every node's log tail to a failure.
 */
export function nodesSuite({ nodes = 3, mode, config = {}, label } = {}) {
  const state = { cluster: null };
  const pool = new ClientPool();
  before(async () => {
    state.cluster = await startNodes(nodes, mode, { config, label });
  });
  after(async () => {
    await pool.closeAll();
    if (state.cluster) await state.cluster.stop();
  });
  return {
    pool,
    get cluster() {
      if (!state.cluster) throw new Error('the nodes are not running (see the before hook failure)');
      return state.cluster;
    },
    /** A tracked client on node `i` (0-based). */
    client(i, options = {}) {
      return pool.client(this.cluster.url(i), options);
    },
    subscription(handle, channel, options) {
      return pool.subscription(handle, channel, options);
    },
    test(name, fn, { timeout = 60_000 } = {}) {
      test(name, { timeout }, async (t) => {
        try {
          await fn(t);
        } catch (err) {
          appendDiagnostics(err, `${pool.diagnostics()}\n${state.cluster ? state.cluster.logTails() : ''}`);
          throw err;
        } finally {
          await pool.closeAll();
        }
      });
    },
  };
}

// node 20's test runner can hang for good on a failing test whose error is tens of KB
// (seen with a plain 60 KB message in 2 of 6 runs): longer diagnostics go to stderr in
// full, and the error keeps their end.
const MAX_ERROR_DIAGNOSTICS = 12_000;

/** Appends `diag` to an error's message and stack (reporters print the stack). */
export function appendDiagnostics(err, diag) {
  if (typeof diag === 'string' && diag.length > MAX_ERROR_DIAGNOSTICS) {
    console.error(`--- diagnostics of a failure (${diag.length} chars, in full) ---\n${diag}\n--- end of diagnostics ---`);
    diag = `[diagnostics cut to their last ${MAX_ERROR_DIAGNOSTICS} chars; in full on stderr above]\n…${diag.slice(-MAX_ERROR_DIAGNOSTICS)}`;
  }
  if (err && typeof err === 'object') {
    err.message = `${err.message}\n${diag}`;
    if (typeof err.stack === 'string') err.stack = `${err.stack}\n${diag}`;
  }
  return err;
}

/** Connects a tracked client and waits for `connected`. */
export async function connectClient(handle, { timeout = 10_000 } = {}) {
  const since = handle.log.mark();
  handle.client.connect();
  return handle.log.waitFor('connected', { since, timeout, what: 'connect' });
}

/** Subscribes and waits for `subscribed`. */
export async function subscribeSub({ sub, log }, { timeout = 10_000 } = {}) {
  const since = log.mark();
  sub.subscribe();
  return log.waitFor('subscribed', { since, timeout, what: 'subscribe' });
}

export { within };

// ---------------------------------------------------------------------------
// Reliability scenarios: server API publishes, /ready over time, Cluster slots

/**
 * One server API publish of `data` on `channel` through `node`; `{ ok: true, offset,
 * epoch }` when acknowledged, else `{ ok: false, why }` (`error <code>`, `HTTP <status>`
 * or `exception <message>`).
 */
export async function apiPublish(node, key, channel, data, { timeout = 5_000 } = {}) {
  try {
    const res = await within(
      fetch(`${node.apiUrl}/api/publish`, {
        method: 'POST',
        headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel, data }),
      }),
      timeout,
      'POST /api/publish',
    );
    const text = await res.text();
    if (res.status !== 200) return { ok: false, why: `HTTP ${res.status}` };
    const reply = JSON.parse(text);
    if (reply.error) return { ok: false, why: `error ${reply.error.code}`, message: reply.error.message };
    return { ok: true, offset: reply.result?.offset, epoch: reply.result?.epoch };
  } catch (err) {
    return { ok: false, why: `exception ${String(err?.message ?? err).split('\n')[0]}` };
  }
}

/**
 * Every acknowledged publication of `channel` as the server API's `history` returns
 * it, paged oldest first: `{ epoch, top, publications: [{ offset, data }] }`.
 */
export async function apiHistoryAll(node, key, channel, { page = 1_000 } = {}) {
  const publications = [];
  let since = null;
  let epoch = null;
  let top = 0;
  for (;;) {
    const res = await within(
      fetch(`${node.apiUrl}/api/history`, {
        method: 'POST',
        headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel, limit: page, ...(since ? { since } : {}) }),
      }),
      10_000,
      'POST /api/history',
    );
    const reply = JSON.parse(await res.text());
    if (reply.error) throw new Error(`history ${channel}: error ${reply.error.code} ${reply.error.message}`);
    const r = reply.result ?? {};
    epoch = r.epoch;
    top = r.offset ?? 0;
    const got = r.publications ?? [];
    publications.push(...got.map((p) => ({ offset: p.offset, data: p.data })));
    if (got.length < page || !got.length) break;
    since = { offset: got[got.length - 1].offset, epoch };
  }
  return { epoch, top, publications };
}

/**
 * Polls `GET /ready` of every node every `intervalMs` until `stop()`; keeps the
 * transitions per node (time since start, status, reason). `describe()` prints them.
 */
export function watchReady(nodes, { intervalMs = 100 } = {}) {
  const started = Date.now();
  const states = nodes.map(() => []);
  let running = true;
  const poll = async (node, i) => {
    while (running) {
      let state;
      try {
        const res = await within(fetch(`${node.apiUrl}/ready`), 2_000, 'GET /ready');
        const body = await res.text();
        let reason = '';
        try {
          reason = JSON.parse(body).reason ?? '';
        } catch {
          reason = '';
        }
        state = res.status === 200 ? '200' : `${res.status} ${reason}`;
      } catch (err) {
        state = `unanswered (${String(err?.message ?? err).split('\n')[0]})`;
      }
      const list = states[i];
      if (!list.length || list[list.length - 1].state !== state) list.push({ at: Date.now() - started, state });
      await sleep(intervalMs);
    }
  };
  const loops = nodes.map((node, i) => poll(node, i));
  return {
    states,
    /** Transitions of node `i` after `sinceMs` (time since the watch started). */
    after(i, sinceMs) {
      return states[i].filter((s) => s.at >= sinceMs);
    },
    get elapsed() {
      return Date.now() - started;
    },
    describe() {
      return states.map((list, i) => `node ${i + 1} /ready: ${list.map((s) => `+${s.at}ms ${s.state}`).join(' -> ')}`).join('\n');
    },
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** CRC16 (XMODEM), the hash of Redis Cluster key slots. */
function crc16(bytes) {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The Redis Cluster slot of `key` (with hash-tag rules), computed locally. */
export function keySlot(key) {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key, 'utf8')) % 16_384;
}

/**
 * Prints `diag` (what every part saw) on stderr and into HERALD_TEST_LOG_DIR, and
 * returns `err` with a pointer to it. Not appended to the error itself: node 20's test
 * runner sometimes hangs for good on a failure whose message is tens of KB long.
 */
export function withDiagnostics(err, diag, name) {
  console.error(`===== ${name}: diagnostics of the failure below =====\n${diag}\n===== end of ${name} diagnostics =====`);
  const dir = process.env.HERALD_TEST_LOG_DIR;
  if (dir) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `${name}.failure.log`), `${err?.stack ?? err}\n${diag}\n`);
  }
  if (err && typeof err === 'object' && typeof err.message === 'string') {
    err.message += `\n(diagnostics: on stderr above${dir ? ` and in ${dir}/${name}.failure.log` : ''})`;
  }
  return err;
}

/** `scripts/cluster`, the local three-node cluster of the README. */
export const CLUSTER_SCRIPT = path.join(repoRoot, 'scripts', 'cluster');

/** Runs `scripts/cluster <args>` with `env`; resolves with { code, stdout, stderr }. */
export function runScriptsCluster(args, env, { timeout = 120_000 } = {}) {
  return new Promise((resolve) => {
    execFile(CLUSTER_SCRIPT, args, { env, timeout, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? err.signal ?? 'error') : 0, stdout, stderr });
    });
  });
}

/** The machine-readable `key=value` lines of `scripts/cluster up`. */
export function parseClusterSummary(stdout) {
  const out = {};
  for (const line of stdout.split('\n')) {
    const m = /^([a-z0-9_]+)=(\S*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}
