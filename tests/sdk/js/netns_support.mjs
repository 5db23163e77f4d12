// Network namespaces for the reliability suites (issue 22, scenario 1): a private
// network of namespaces made and removed by the test, so a herald node can really be
// cut from Redis (its packets vanish) while its clients stay connected.
//
// Layout (one "lab" per test run, every name unique to the run):
//   - a bridge namespace `<base>-br` holding the bridge `br0` and no address;
//   - one namespace per host (`<base>-<name>`), each with `lo` up and a veth `eth0`
//     whose peer (named after the host) is a port of `br0`, and one address of
//     10.222.0.0/24; nothing is added to the test's own (host) namespace;
//   - `cut(name)` sets the host's bridge port down: the host's packets are dropped on
//     the way (no RST, no ICMP), as in a real partition; `heal(name)` sets it up again.
// Clients stay on the host: a relay process (this file run as a script, inside the
// host's namespace) connects to services on that namespace's loopback and listens on
// Unix sockets in a temp directory (the filesystem is shared by every namespace); the
// test then serves those sockets on host loopback ports (`unixBalancer`, or
// `startFaultProxy({ path })` for one socket).
//
// Namespaces are named `hrl<pid>-<rand>-…` after the test process, so a later run
// removes the leftovers of a killed one (`cleanupLeftovers`): a namespace whose process
// is gone, the processes still in it killed first.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);

export const IPROUTE2_MISSING =
  "the 'ip' command of iproute2 is missing or has no 'ip netns': install it with `apt-get install -y iproute2`";
export const NOT_ROOT =
  'network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run this test as root (scripts/test does on CI)';

const NAME_RE = /^hrl(\d+)-[0-9a-f]{4}-/;
export const SUBNET = '10.222.0';

/** Runs `ip args...`; throws with its stderr when it fails. */
export function ip(args, { allowFail = false } = {}) {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 15_000 });
  if (r.error) {
    if (r.error.code === 'ENOENT') throw new Error(IPROUTE2_MISSING);
    throw new Error(`ip ${args.join(' ')}: ${r.error.message}`);
  }
  if (r.status !== 0 && !allowFail) throw new Error(`ip ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r;
}

/** Throws, saying what to do, unless this process may make network namespaces. */
export function requireNetns() {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error(NOT_ROOT);
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (r.error) throw new Error(r.error.code === 'ENOENT' ? IPROUTE2_MISSING : `ip netns list: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${IPROUTE2_MISSING} (ip netns list: ${r.stderr.trim()})`);
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/** The names of every network namespace. */
function namespaces() {
  return ip(['netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter(Boolean);
}

/** Kills every process in namespace `ns` and deletes it. */
function removeNamespace(ns) {
  const pids = ip(['netns', 'pids', ns], { allowFail: true }).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  ip(['netns', 'delete', ns], { allowFail: true });
}

/**
 * Removes the namespaces of earlier runs whose test process is gone (named
 * `hrl<pid>-…`); returns their names.
 */
export function cleanupLeftovers() {
  const removed = [];
  for (const ns of namespaces()) {
    const m = NAME_RE.exec(ns);
    if (!m || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
    removeNamespace(ns);
    removed.push(ns);
  }
  return removed;
}

const liveLabs = new Set();
process.on('exit', () => {
  for (const lab of liveLabs) lab.destroySync();
});

/**
 * A bridge and `hosts` (`[name, ...]`, each at most 10 characters of [a-z0-9]), each host
 * in its own namespace with address 10.222.0.(10 + index).
 */
export async function createLab(hosts) {
  requireNetns();
  const leftovers = cleanupLeftovers();
  const base = `hrl${process.pid}-${randomBytes(2).toString('hex')}`;
  const dir = mkdtempSync(path.join(tmpdir(), `${base}-`));
  const lab = new Lab(base, dir, leftovers);
  liveLabs.add(lab);
  try {
    lab.create(hosts);
  } catch (err) {
    lab.destroySync();
    throw err;
  }
  return lab;
}

class Lab {
  constructor(base, dir, leftovers) {
    this.base = base;
    this.dir = dir; // Unix sockets and wrapper scripts, shared by every namespace
    this.leftovers = leftovers;
    this.bridgeNs = `${base}-br`;
    this.hosts = new Map(); // name -> { ns, address, port (bridge-side veth) }
    this.children = new Set();
    this.cuts = [];
  }

  create(hosts) {
    ip(['netns', 'add', this.bridgeNs]);
    ip(['-n', this.bridgeNs, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', this.bridgeNs, 'link', 'set', 'br0', 'up']);
    hosts.forEach((name, i) => {
      if (!/^[a-z0-9]{1,10}$/.test(name)) throw new Error(`lab host name '${name}': use 1-10 characters of [a-z0-9]`);
      const ns = `${this.base}-${name}`;
      const address = `${SUBNET}.${10 + i}`;
      ip(['netns', 'add', ns]);
      // The veth is made inside the host's namespace with its peer in the bridge's:
      // the test's own namespace never holds either end.
      ip(['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', name, 'netns', this.bridgeNs]);
      ip(['-n', this.bridgeNs, 'link', 'set', name, 'master', 'br0']);
      ip(['-n', this.bridgeNs, 'link', 'set', name, 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      this.hosts.set(name, { ns, address, port: name });
    });
  }

  host(name) {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`lab: no host '${name}'`);
    return h;
  }

  /** Spawns `cmd args` inside host `name`'s namespace (killed when the lab is destroyed). */
  spawn(name, cmd, args, options = {}) {
    const child = spawn('ip', ['netns', 'exec', this.host(name).ns, cmd, ...args], options);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Runs `cmd args` inside host `name`'s namespace; resolves with { status, stdout, stderr }. */
  run(name, cmd, args, { timeout = 10_000 } = {}) {
    return new Promise((resolve) => {
      const child = this.spawn(name, cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
      child.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
      child.on('error', (err) => {
        clearTimeout(timer);
        resolve({ status: -1, stdout, stderr: `${stderr}${err.message}` });
      });
      child.on('exit', (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      });
    });
  }

  /**
   * An executable that runs `bin` inside host `name`'s namespace (for HERALD_BIN: the
   * harness starts it in its own process group; `ip netns exec` execs the command, so
   * the pid stays the command's).
   */
  wrapper(name, bin) {
    const file = path.join(this.dir, `run-in-${name}.sh`);
    writeFileSync(file, `#!/bin/sh\nexec ip netns exec '${this.host(name).ns}' '${bin}' "$@"\n`);
    chmodSync(file, 0o755);
    return file;
  }

  /**
   * Starts a relay inside host `name`'s namespace: for each `{ id, port }` it listens on
   * the Unix socket `<dir>/<name>-<id>.sock` and forwards each connection to
   * 127.0.0.1:port of that namespace. Resolves with { [id]: socketPath }.
   */
  async relay(name, targets) {
    const specs = targets.map(({ id, port }) => ({ id, port, path: path.join(this.dir, `${name}-${id}.sock`) }));
    const args = [here, 'relay', ...specs.map((s) => `${s.path}=${s.port}`)];
    const child = this.spawn(name, process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c) => (out += c));
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`relay in ${name} did not start within 15 s: ${out}`)), 15_000);
      child.stdout.on('data', (c) => {
        out += c;
        if (out.includes('relay ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`relay in ${name} exited (${code}): ${out}`));
      });
    });
    return Object.fromEntries(specs.map((s) => [s.id, s.path]));
  }

  /** Sets host `name`'s bridge port down: its packets vanish until `heal(name)`. */
  cut(name) {
    ip(['-n', this.bridgeNs, 'link', 'set', this.host(name).port, 'down']);
    this.cuts.push({ name, at: Date.now(), what: 'cut' });
  }

  heal(name) {
    ip(['-n', this.bridgeNs, 'link', 'set', this.host(name).port, 'up']);
    this.cuts.push({ name, at: Date.now(), what: 'heal' });
  }

  /** The links of every namespace, for a failure message. */
  describe() {
    const parts = [`lab ${this.base} (dir ${this.dir}); leftovers removed at start: ${this.leftovers.join(' ') || 'none'}`];
    for (const ns of [this.bridgeNs, ...[...this.hosts.values()].map((h) => h.ns)]) {
      const r = ip(['-n', ns, '-br', 'addr'], { allowFail: true });
      parts.push(`${ns}:\n${(r.stdout || r.stderr).trimEnd()}`);
    }
    return parts.join('\n');
  }

  destroySync() {
    if (!liveLabs.has(this)) return;
    liveLabs.delete(this);
    for (const child of this.children) {
      try {
        child.kill('SIGKILL');
      } catch {
        // gone
      }
    }
    for (const h of this.hosts.values()) removeNamespace(h.ns);
    removeNamespace(this.bridgeNs);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Removes everything; resolves once the namespaces are gone. */
  async destroy() {
    for (const child of [...this.children]) {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      try {
        child.kill('SIGKILL');
      } catch {
        // gone
      }
      await Promise.race([gone, new Promise((r) => setTimeout(r, 2_000))]);
    }
    this.destroySync();
  }
}

/**
 * A loopback listener on the host (127.0.0.1, free port) that hands each new
 * connection to the next of the Unix sockets `paths`, round robin.
 */
export async function unixBalancer(paths) {
  let next = 0;
  const counts = paths.map(() => 0);
  const pairs = new Set();
  const server = net.createServer((client) => {
    const i = next;
    next = (next + 1) % paths.length;
    counts[i] += 1;
    const upstream = net.connect(paths[i]);
    const pair = { client, upstream };
    pairs.add(pair);
    client.setNoDelay(true);
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
    counts,
    describe: () => `balancer :${port} -> ${paths.length} sockets, connections per socket ${JSON.stringify(counts)}, open ${pairs.size}`,
    async close() {
      for (const p of [...pairs]) {
        p.client.destroy();
        p.upstream.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// ---------------------------------------------------------------------------
// The relay, run as `node netns_support.mjs relay <socket>=<port> ...` inside a namespace.

function relayMain(specs) {
  let pending = specs.length;
  for (const spec of specs) {
    const eq = spec.lastIndexOf('=');
    const socketPath = spec.slice(0, eq);
    const port = Number(spec.slice(eq + 1));
    if (eq < 1 || !Number.isInteger(port) || port < 1 || port > 65_535) {
      process.stderr.write(`relay: bad spec '${spec}' (want <socket path>=<port>)\n`);
      process.exit(2);
    }
    rmSync(socketPath, { force: true });
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port });
      upstream.setNoDelay(true);
      client.pipe(upstream);
      upstream.pipe(client);
      const done = () => {
        client.destroy();
        upstream.destroy();
      };
      for (const s of [client, upstream]) {
        s.on('error', done);
        s.on('close', done);
      }
    });
    server.listen(socketPath, () => {
      pending -= 1;
      if (pending === 0) process.stdout.write('relay ready\n');
    });
  }
  // The test holds our stdin: when it goes away, so do we.
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
}

if (process.argv[1] === here && process.argv[2] === 'relay') relayMain(process.argv.slice(3));
