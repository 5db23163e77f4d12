// The application backend of the proxy suites: tests/backends/proxy_backend.py,
// a real HTTP server on Python's standard library, started once per file, and
// its gRPC twin tests/backends/proxy_grpc_backend.py (startGrpcBackend).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';

import { repoRoot, within } from './harness.mjs';

/**
 * Spawns `python script args` and resolves, once its stdout matches `ready`,
 * with `{ match, child, log() }` (the match's numbers); the child is killed
 * after the file's tests. `what` names it in errors.
 */
async function spawnBackend(python, script, args, ready, what, timeout) {
  const child = spawn(python, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    log += d;
  });
  after(() => child.kill());
  const listening = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      const m = ready.exec(out);
      if (m) resolve(m.slice(1).map(Number));
    });
    child.on('error', (err) => reject(new Error(`cannot start ${what}: ${err.message}`)));
    child.on('exit', (code) => reject(new Error(`${what} exited (${code}): ${log}`)));
  });
  const match = await within(listening, timeout, `${what} to listen`);
  return { match, child, log: () => log };
}

/** GET /requests of a backend on `port`: every request it received so far. */
async function requestsOn(port) {
  const res = await fetch(`http://127.0.0.1:${port}/requests`);
  return res.json();
}

/**
 * Starts the backend (extra `args` for its command line) and resolves with
 * `{ port, child, log(), received() }` once it prints `listening PORT`; it is
 * killed after the file's tests.
 */
export async function startBackend(args = []) {
  const script = path.join(repoRoot, 'tests', 'backends', 'proxy_backend.py');
  const { match, child, log } = await spawnBackend('python3', script, args, /listening (\d+)/, 'the proxy backend', 10_000);
  const [port] = match;
  return { port, child, log, received: () => requestsOn(port) };
}

/**
 * The Python interpreter of tests/sdk/python/.venv (grpcio, grpcio-tools), which
 * scripts/test's "python deps (venv)" stage creates before the JS suite runs;
 * HERALD_TEST_PYTHON points elsewhere (a worktree without its own venv).
 */
export function venvPython() {
  const python = process.env.HERALD_TEST_PYTHON || path.join(repoRoot, 'tests', 'sdk', 'python', '.venv', 'bin', 'python');
  if (!existsSync(python)) {
    throw new Error(
      `no Python at ${python}: the gRPC proxy backend needs grpcio and grpcio-tools. ` +
        "Run scripts/test (its 'python deps (venv)' stage creates tests/sdk/python/.venv), or " +
        "'python3 -m venv tests/sdk/python/.venv && tests/sdk/python/.venv/bin/pip install -r tests/sdk/python/requirements.txt', " +
        'or point HERALD_TEST_PYTHON at a Python that has them',
    );
  }
  return python;
}

/**
 * Starts tests/backends/proxy_grpc_backend.py (the gRPC twin of proxy_backend.py)
 * with the venv's Python and resolves with `{ port, requestsPort, child, log(),
 * received() }` once it prints `listening PORT requests HTTP_PORT`: `port` serves
 * gRPC, `received()` is GET /requests on `requestsPort` (each call as
 * `{ method, metadata, call }`). It is killed after the file's tests.
 */
export async function startGrpcBackend(args = []) {
  const script = path.join(repoRoot, 'tests', 'backends', 'proxy_grpc_backend.py');
  // Generating the stubs (grpc_tools.protoc) comes first: a longer wait.
  const { match, child, log } = await spawnBackend(
    venvPython(),
    script,
    args,
    /listening (\d+) requests (\d+)/,
    'the gRPC proxy backend',
    30_000,
  );
  const [port, requestsPort] = match;
  return { port, requestsPort, child, log, received: () => requestsOn(requestsPort) };
}
