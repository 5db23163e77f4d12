// The application backend of the proxy suites: tests/backends/proxy_backend.py,
// a real HTTP server on Python's standard library, started once per file.

import { spawn } from 'node:child_process';
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
