// nginx (the Debian binary) as a child process of a test: its own config file, prefix,
// error log, pid file, temp paths and access log in a temp dir; `daemon off;` so the
// master stays our child; a free loopback port. Never touches /var/log/nginx or /run.
//
// A missing nginx fails the test with an install message (scripts/test installs the
// package itself when run as root).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { sleep } from './harness.mjs';

export const NGINX_MISSING =
  "nginx not found (looked in PATH, /usr/sbin/nginx): install it with 'apt-get install -y nginx' " +
  '(scripts/test does this itself when run as root)';

/** The nginx binary, or throws with the install message. */
export function nginxBin() {
  const candidates = [];
  if (process.env.NGINX_BIN) candidates.push(process.env.NGINX_BIN);
  for (const dir of (process.env.PATH || '').split(':').filter(Boolean)) candidates.push(path.join(dir, 'nginx'));
  candidates.push('/usr/sbin/nginx');
  for (const c of candidates) {
    if (existsSync(c)) {
      const r = spawnSync(c, ['-v'], { encoding: 'utf8' });
      if (!r.error && r.status === 0) return c;
    }
  }
  throw new Error(NGINX_MISSING);
}

/** A loopback port that was free a moment ago (the OS picked it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1' }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const liveNginx = new Set();
process.on('exit', () => {
  for (const child of liveNginx) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** The log format of the access log: method, URI, status, upstream address. */
export const ACCESS_LOG_FORMAT =
  "'$msec $request_method $uri $status up=$upstream_addr upstatus=$upstream_status rt=$request_time'";

/**
 * Starts nginx on `port` (a free one when not given). `serverBlock(ctx)` returns the
 * body of the `server { }` block (after `listen`); `httpExtra(ctx)` goes into `http { }`
 * before it (upstreams). ctx = { dir, port }.
 * Resolves with { port, origin, dir, accessLog(), errorLog(), diagnostics(), stop() }.
 */
export async function startNginx({ port = null, serverBlock, httpExtra = () => '' } = {}) {
  const bin = nginxBin();
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-nginx-'));
  const tmp = path.join(dir, 'tmp');
  mkdirSync(tmp, { recursive: true });
  if (port === null) port = await freePort();
  const ctx = { dir, port };
  const errorLog = path.join(dir, 'error.log');
  const accessLog = path.join(dir, 'access.log');
  // Run as root, the master would hand its workers to `nobody`, who can neither write
  // the temp dir nor read the repository: keep them as the current user.
  const userLine = process.getuid && process.getuid() === 0 ? 'user root root;' : '';
  const conf = `# written by tests/sdk/js/nginx_support.mjs
${userLine}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${errorLog} info;

events {
  worker_connections 512;
}

http {
  types {
    text/html html;
    application/javascript js mjs;
    text/css css;
    application/json json map;
  }
  default_type application/octet-stream;
  log_format herald ${ACCESS_LOG_FORMAT};
  access_log ${accessLog} herald;
  client_body_temp_path ${tmp}/client_body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  sendfile off;

${httpExtra(ctx)}

  server {
    listen 127.0.0.1:${port};

${serverBlock(ctx)}
  }
}
`;
  const confFile = path.join(dir, 'nginx.conf');
  writeFileSync(confFile, conf);
  const baseArgs = ['-p', dir, '-e', errorLog, '-c', confFile];
  const check = spawnSync(bin, ['-t', '-q', ...baseArgs, '-g', 'daemon off;'], { encoding: 'utf8' });
  if (check.status !== 0) {
    const out = `${check.stdout || ''}${check.stderr || ''}`;
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`nginx -t refused the test config:\n${out}\n--- config ---\n${conf}`);
  }

  const child = spawn(bin, [...baseArgs, '-g', 'daemon off;'], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  liveNginx.add(child);
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (c) => {
    output += c;
  });
  child.stderr.on('data', (c) => {
    output += c;
  });
  let exited = null;
  const gone = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      liveNginx.delete(child);
      resolve();
    }),
  );
  child.on('error', () => {});

  const read = (file) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  };
  const tail = (text, lines) => text.trimEnd().split('\n').slice(-lines).join('\n');

  const handle = {
    port,
    origin: `http://127.0.0.1:${port}`,
    dir,
    conf,
    accessLog: () => read(accessLog),
    errorLog: () => read(errorLog),
    /** The access log parsed: [{ method, uri, status, upstream }]. */
    accessEntries() {
      return read(accessLog)
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const m = /^(\S+) (\S+) (\S+) (\d+) up=(.*) upstatus=(.*) rt=(\S+)$/.exec(line);
          if (!m) return { line };
          return { line, at: Number(m[1]), method: m[2], uri: m[3], status: Number(m[4]), upstream: m[5], upstreamStatus: m[6] };
        });
    },
    diagnostics(lines = 40) {
      return (
        `--- nginx ${handle.origin} (${exited ? `exited ${JSON.stringify(exited)}` : 'running'}) stdout/stderr ---\n${tail(output, lines)}\n` +
        `--- nginx error log (last ${lines} lines, info level) ---\n${tail(read(errorLog), lines)}\n` +
        `--- nginx access log (last ${lines} lines) ---\n${tail(read(accessLog), lines)}`
      );
    },
    async stop() {
      if (!exited) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          // gone
        }
        const stopped = await Promise.race([gone.then(() => true), sleep(3_000).then(() => false)]);
        if (!stopped) {
          try {
            process.kill(-child.pid, 'SIGKILL');
          } catch {
            // gone
          }
          await gone;
        }
      }
      liveNginx.delete(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };

  // Ready once it answers on the port.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) {
      const diag = handle.diagnostics();
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nginx exited while starting (${JSON.stringify(exited)})\n${diag}`);
    }
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      const diag = handle.diagnostics();
      await handle.stop();
      throw new Error(`nginx did not listen on 127.0.0.1:${port} within 10 s\n${diag}`);
    }
    await sleep(50);
  }
  return handle;
}

/** The proxy settings of a streaming location (HTTP-streaming, SSE, emulation POSTs). */
export function streamingProxy(upstream) {
  return `      proxy_pass http://${upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_cache off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;`;
}
