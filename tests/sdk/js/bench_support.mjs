// herald-bench and process sampling for the reliability suites (the reconnect storm
// and the soak): runs the built herald-bench binary, keeps its progress lines, parses
// its JSON summary (the last stdout line); reads a process's RSS and open files from
// /proc and Redis's memory and command count from INFO.

import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { redisCli } from './cluster_support.mjs';

/** The herald-bench binary next to HERALD_BIN (scripts/test builds every binary). */
export function benchBin() {
  const herald = process.env.HERALD_BIN;
  const candidates = [
    process.env.HERALD_BENCH_BIN,
    herald ? path.join(path.dirname(herald), 'herald-bench') : null,
    path.resolve(import.meta.dirname, '../../../target/debug/herald-bench'),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`herald-bench not found (looked at ${candidates.join(', ')}): build it with 'cargo build -p herald-bench' or set HERALD_BENCH_BIN`);
  }
  return found;
}

/**
 * Starts herald-bench with `args`. Returns { child, done, progress, stderrTail() }:
 * `done` resolves to the parsed JSON summary when it exits 0, and rejects with its
 * stderr tail otherwise; `progress` holds its stderr lines as they come.
 */
export function runBench(args, { label = 'herald-bench' } = {}) {
  const bin = benchBin();
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const progress = [];
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (c) => {
    stdout += c;
    if (stdout.length > 4_000_000) stdout = stdout.slice(-2_000_000);
  });
  child.stderr.on('data', (c) => {
    stderr += c;
    for (const line of c.split('\n')) if (line.trim()) progress.push(line.trim());
    if (stderr.length > 400_000) stderr = stderr.slice(-200_000);
    if (progress.length > 5_000) progress.splice(0, progress.length - 2_500);
  });
  const stderrTail = (n = 40) => stderr.trimEnd().split('\n').slice(-n).join('\n');
  const done = new Promise((resolve, reject) => {
    child.on('error', (err) => reject(new Error(`${label}: cannot start ${bin}: ${err.message}`)));
    child.on('close', (code, signal) => {
      const last = stdout.trimEnd().split('\n').pop() ?? '';
      if (code !== 0) {
        reject(new Error(`${label} exited with ${code ?? signal}\n--- stderr (tail) ---\n${stderrTail()}\n--- stdout (tail) ---\n${stdout.slice(-2_000)}`));
        return;
      }
      try {
        resolve(JSON.parse(last));
      } catch (err) {
        reject(new Error(`${label}: the last stdout line is not JSON (${err.message}): ${last.slice(0, 500)}`));
      }
    });
  });
  return { child, done, progress, stderrTail, command: `${path.basename(bin)} ${args.join(' ')}` };
}

/** Resident set size of process `pid` in bytes (VmRSS of /proc/pid/status). */
export function rssBytes(pid) {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Open file descriptors of process `pid`. */
export function openFiles(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** INFO of a Redis on `port` as an object of its `key:value` lines. */
export async function redisInfo(port, section = 'everything') {
  const text = await redisCli(port, ['info', section], { timeout: 5_000 });
  const out = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** Least-squares slope of ys over xs (units of y per unit of x). */
export function slope(xs, ys) {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

export const MiB = 1024 * 1024;
