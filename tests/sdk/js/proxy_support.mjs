// The application backend of the proxy suites: tests/backends/proxy_backend.py,
// a real HTTP server on Python's standard library, started once per file, and
// its gRPC twin tests/backends/proxy_grpc_backend.py (startGrpcBackend).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';

import { repoRoot, within } from './harness.mjs';

/**
 * Starts the backend (extra `args` for its command line) and resolves with
 * `{ port, child, log(), received() }` once it prints `listening PORT`; it is
 * killed after the file's tests.
 */
export async function startBackend(args = []) {
  const script = path.join(repoRoot, 'tests', 'backends', 'proxy_backend.py');
  const child = spawn('python3', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`the backend exited (${code}): ${log}`)));
  });
  const port = await within(listening, 10_000, 'the proxy backend to listen');
  return {
    port,
    child,
    log: () => log,
    /** Every request the backend received so far. */
    async received() {
      const res = await fetch(`http://127.0.0.1:${port}/requests`);
      return res.json();
    },
  };
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
  const child = spawn(venvPython(), [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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
      const m = /listening (\d+) requests (\d+)/.exec(out);
      if (m) resolve([Number(m[1]), Number(m[2])]);
    });
    child.on('error', (err) => reject(new Error(`cannot start the gRPC backend: ${err.message}`)));
    child.on('exit', (code) => reject(new Error(`the gRPC backend exited (${code}): ${log}`)));
  });
  // Generating the stubs (grpc_tools.protoc) comes first.
  const [port, requestsPort] = await within(listening, 30_000, 'the gRPC proxy backend to listen');
  return {
    port,
    requestsPort,
    child,
    log: () => log,
    /** Every call the backend received so far. */
    async received() {
      const res = await fetch(`http://127.0.0.1:${requestsPort}/requests`);
      return res.json();
    },
  };
}
