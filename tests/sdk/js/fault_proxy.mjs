// A fault-injecting TCP proxy for the reliability suites (issue 22, scenario 3): the
// kernel of the test machines has no netem, so slow and lossy links are made in user
// space. It listens on 127.0.0.1 (a free port) and forwards every connection to one
// target; each direction has its own latency, jitter and bandwidth cap, and every
// setting can change while connections are open.
//
// The link model, per direction (`up`: accepted side -> target, `down`: target ->
// accepted side), shared by every connection of the proxy:
//   - bandwidth: data is serialised at `rate` bytes/s one chunk after the other (a
//     chunk waits until the previous one of that direction was "sent"); 0 = no cap;
//   - latency: each chunk is then delivered `latency` ms later, plus a uniform random
//     `±jitter` ms, never before the previous chunk of its connection (TCP keeps order);
//   - a connection's source socket is paused while more than 1 MiB of it waits, so a
//     capped link pushes back on the sender as a real one does.
// Faults: `dropConnections()` destroys every open connection at once (both sides see
// the connection end); `refuse(ms)` resets every new connection for `ms`; `stall()`
// keeps connections open but delivers nothing (packets vanish) until `unstall()`.

import net from 'node:net';

const CHUNK = 16 * 1024; // a larger read is split so the cap paces it smoothly
const HIGH_WATER = 1024 * 1024; // bytes waiting per connection and direction before its source pauses

/** One direction's settings: latency and jitter in ms, rate in bytes per second (0 = unlimited). */
function direction(init = {}) {
  return { latency: 0, jitter: 0, rate: 0, ...init, busyUntil: 0, bytes: 0 };
}

/**
 * Starts a proxy to `target` ({ host, port } or { path } for a Unix socket).
 * `up`/`down`: the initial settings of each direction ({ latency, jitter, rate }).
 */
export async function startFaultProxy(target, { up = {}, down = {}, label = 'fault proxy' } = {}) {
  const dirs = { up: direction(up), down: direction(down) };
  const conns = new Set();
  const counts = { accepted: 0, refused: 0, dropped: 0 };
  let refuseUntil = 0;
  let stalled = false;

  /** Forwards `src` to `dst` through direction `d`. */
  function pump(conn, src, dst, d) {
    let lastRelease = 0; // the release time of this connection's previous chunk
    let waiting = 0; // bytes of this direction read and not yet written
    const deliver = (piece) => {
      if (conn.closed) return;
      if (stalled) {
        // Held while stalled, then delivered in order.
        conn.held.push(() => deliver(piece));
        return;
      }
      waiting -= piece.length;
      d.bytes += piece.length;
      dst.write(piece);
      if (waiting <= HIGH_WATER && src.isPaused()) src.resume();
    };
    src.on('data', (data) => {
      for (let off = 0; off < data.length; off += CHUNK) {
        const piece = data.subarray(off, Math.min(off + CHUNK, data.length));
        const now = Date.now();
        let sent = now;
        if (d.rate > 0) {
          const start = Math.max(now, d.busyUntil);
          d.busyUntil = start + (piece.length * 1000) / d.rate;
          sent = d.busyUntil;
        }
        const jitter = d.jitter > 0 ? (Math.random() * 2 - 1) * d.jitter : 0;
        const release = Math.max(sent + Math.max(0, d.latency + jitter), lastRelease);
        lastRelease = release;
        waiting += piece.length;
        const delay = release - now;
        if (delay <= 0 && !stalled && conn.queueEmpty(src)) deliver(piece);
        else conn.schedule(src, delay, () => deliver(piece));
      }
      if (waiting > HIGH_WATER) src.pause();
    });
    const finish = () => {
      if (conn.closed) return;
      if (stalled) conn.held.push(finish);
      else dst.end();
    };
    src.on('end', () => conn.schedule(src, Math.max(0, lastRelease - Date.now()), finish));
  }

  const server = net.createServer({ pauseOnConnect: false }, (client) => {
    if (Date.now() < refuseUntil) {
      counts.refused += 1;
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    counts.accepted += 1;
    const upstream = target.path ? net.connect(target.path) : net.connect({ host: target.host ?? '127.0.0.1', port: target.port });
    client.setNoDelay(true);
    if (!target.path) upstream.setNoDelay(true);
    const timers = new Set();
    // Per source socket, a FIFO of pending deliveries, so a chunk with a shorter
    // (jittered) delay never overtakes one read before it.
    const queues = new Map([
      [client, []],
      [upstream, []],
    ]);
    const conn = {
      closed: false,
      held: [],
      queueEmpty: (src) => queues.get(src).length === 0,
      schedule(src, delay, fn) {
        const q = queues.get(src);
        const item = { fn, done: false };
        q.push(item);
        const timer = setTimeout(() => {
          timers.delete(timer);
          item.done = true;
          while (q.length && q[0].done) q.shift().fn();
        }, Math.max(0, delay));
        timers.add(timer);
      },
      destroy() {
        if (conn.closed) return;
        conn.closed = true;
        for (const t of timers) clearTimeout(t);
        timers.clear();
        conns.delete(conn);
        client.destroy();
        upstream.destroy();
      },
    };
    conns.add(conn);
    for (const s of [client, upstream]) {
      s.on('error', () => conn.destroy());
      s.on('close', () => conn.destroy());
    }
    pump(conn, client, upstream, dirs.up);
    pump(conn, upstream, client, dirs.down);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1' }, resolve);
  });
  const port = server.address().port;

  return {
    port,
    host: '127.0.0.1',
    label,
    counts,
    /** Bytes delivered per direction so far. */
    get bytes() {
      return { up: dirs.up.bytes, down: dirs.down.bytes };
    },
    get open() {
      return conns.size;
    },
    /** Changes the settings of one direction ('up', 'down') or both ('both'). */
    set(which, settings) {
      for (const name of which === 'both' ? ['up', 'down'] : [which]) {
        if (!dirs[name]) throw new Error(`${label}: no direction '${name}'`);
        for (const k of ['latency', 'jitter', 'rate']) {
          if (k in settings) {
            const v = Number(settings[k]);
            if (!Number.isFinite(v) || v < 0) throw new Error(`${label}: ${k} must be a number >= 0, got ${settings[k]}`);
            dirs[name][k] = v;
          }
        }
        if (!dirs[name].rate) dirs[name].busyUntil = 0;
      }
    },
    settings() {
      const pick = ({ latency, jitter, rate }) => ({ latency, jitter, rate });
      return { up: pick(dirs.up), down: pick(dirs.down) };
    },
    /** Destroys every open connection; returns how many there were. */
    dropConnections() {
      const all = [...conns];
      for (const c of all) c.destroy();
      counts.dropped += all.length;
      return all.length;
    },
    /** Resets every connection accepted within the next `ms` milliseconds. */
    refuse(ms) {
      refuseUntil = Date.now() + ms;
    },
    /** Delivers nothing more, in either direction, until `unstall()`; connections stay open. */
    stall() {
      stalled = true;
    },
    unstall() {
      stalled = false;
      for (const c of [...conns]) {
        const held = c.held;
        c.held = [];
        for (const fn of held) fn();
      }
    },
    describe() {
      return (
        `${label} :${port} -> ${target.path ?? `${target.host ?? '127.0.0.1'}:${target.port}`} ` +
        `settings ${JSON.stringify(this.settings())} open ${conns.size} ${JSON.stringify(counts)} bytes ${JSON.stringify(this.bytes)}` +
        `${stalled ? ' STALLED' : ''}`
      );
    },
    async close() {
      this.dropConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
