// The history checker of the reliability suites (issue 22): herald's promise for
// history channels is that every publication the server acknowledged reaches every
// subscriber once and in order, or the subscriber is told it may have missed some
// (it resubscribes with recovered: false, or is unsubscribed). Never a silent loss,
// never a duplicate, never a reorder.
//
// A `History` records what publishers were told (per channel: the number `n` each
// publication carries in its data, with offset, epoch and a hash of the payload).
// Subscribers are real centrifuge-js subscriptions whose events an EventLog records
// (harness.mjs), JSON or protobuf; `check` reads that log. Publications are identified
// by `data.n` (publicationN), which
// increases with every publish attempt of a channel: an attempt that failed may still
// have landed, so it takes a number of its own that nobody is owed.

import { createHash } from 'node:crypto';

const utf8 = new TextDecoder();

/**
 * The number `n` of a publication as a subscriber got it: JSON clients get the data as
 * an object, protobuf clients (centrifuge-js's protobuf build) as the JSON's bytes.
 */
export function publicationN(ctx) {
  const data = ctx?.data;
  if (data instanceof Uint8Array) {
    try {
      return JSON.parse(utf8.decode(data))?.n;
    } catch {
      return undefined;
    }
  }
  return data?.n;
}

/** What was acknowledged to publishers, per channel. */
export class History {
  constructor() {
    this.channels = new Map(); // channel -> { next, acked: [{ n, offset, epoch, hash }] }
  }

  #channel(channel) {
    let c = this.channels.get(channel);
    if (!c) {
      c = { next: 0, acked: [] };
      this.channels.set(channel, c);
    }
    return c;
  }

  /** The next publication number of `channel` (call once per publish attempt). */
  next(channel) {
    const c = this.#channel(channel);
    c.next += 1;
    return c.next;
  }

  /** Records an acknowledged publication `n` of `channel` with what the server answered. */
  ack(channel, n, { offset = null, epoch = null, data = null } = {}) {
    const hash = data === null ? null : createHash('sha256').update(JSON.stringify(data)).digest('hex').slice(0, 16);
    this.#channel(channel).acked.push({ n, offset, epoch, hash });
  }

  /** The acknowledged numbers of `channel`, in acknowledgement order. */
  acked(channel) {
    return (this.channels.get(channel)?.acked ?? []).map((a) => a.n);
  }

  /** The last acknowledged number of `channel` (undefined when none). */
  last(channel) {
    const acked = this.channels.get(channel)?.acked ?? [];
    return acked.length ? acked[acked.length - 1].n : undefined;
  }

  get total() {
    let total = 0;
    for (const c of this.channels.values()) total += c.acked.length;
    return total;
  }
}

/** True for an event by which the client was told it may have missed publications. */
export function isTold(e) {
  if (e.name === 'subscribed') return e.ctx?.wasRecovering === true && e.ctx?.recovered === false;
  return e.name === 'unsubscribed';
}

/**
 * Checks one subscriber's events (`timeline`: EventLog entries of one subscription, in
 * order) against the acknowledged numbers `acked` of its channel. For each acknowledged
 * n: delivered exactly once, in increasing order, or missing with a "told" event
 * between the deliveries that surround it. Returns counts and, per problem, a short
 * description (at most 40).
 */
export function checkSubscriber(timeline, acked) {
  const deliveredAt = new Map(); // n -> timeline index of the first delivery
  const told = []; // timeline indexes of told events
  let duplicates = 0;
  let reorders = 0;
  let maxN = 0;
  const problems = [];
  timeline.forEach((e, i) => {
    if (e.name === 'publication') {
      const n = publicationN(e.ctx);
      if (deliveredAt.has(n)) {
        duplicates += 1;
        if (problems.length < 40) problems.push(`n=${n} delivered again at event ${i}`);
        return;
      }
      if (n < maxN) {
        reorders += 1;
        if (problems.length < 40) problems.push(`n=${n} after n=${maxN} at event ${i}`);
      }
      maxN = Math.max(maxN, n);
      deliveredAt.set(n, i);
    } else if (isTold(e)) {
      told.push(i);
    }
  });
  const delivered = [...deliveredAt.keys()].sort((a, b) => a - b);
  let silentLoss = 0;
  let toldPairs = 0;
  let j = 0; // index into `delivered` of the first delivered number above n
  for (const n of [...acked].sort((a, b) => a - b)) {
    if (deliveredAt.has(n)) continue;
    while (j < delivered.length && delivered[j] < n) j += 1;
    const lo = j > 0 ? deliveredAt.get(delivered[j - 1]) : -1;
    const hi = j < delivered.length ? deliveredAt.get(delivered[j]) : timeline.length;
    if (told.some((i) => i > lo && i < hi)) toldPairs += 1;
    else {
      silentLoss += 1;
      if (problems.length < 40) problems.push(`n=${n} never delivered and not told (events ${lo}..${hi})`);
    }
  }
  return { duplicates, reorders, silentLoss, toldPairs, toldEvents: told.length, delivered: delivered.length, problems };
}

const ranges = (list) => {
  const out = [];
  for (const x of list) {
    const last = out[out.length - 1];
    if (last && x === last[1] + 1) last[1] = x;
    else out.push([x, x]);
  }
  return out.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(',');
};

/** What a subscriber saw, compactly: delivered n as ranges between its other events. */
export function describeTimeline(timeline) {
  const parts = [];
  let run = [];
  const flush = () => {
    if (run.length) parts.push(`pubs[${ranges(run)}]`);
    run = [];
  };
  for (const e of timeline) {
    if (e.name === 'publication') run.push(publicationN(e.ctx));
    else {
      flush();
      const c = e.ctx || {};
      if (e.name === 'subscribed') {
        parts.push(`subscribed(wasRecovering=${c.wasRecovering} recovered=${c.recovered} epoch=${c.streamPosition?.epoch} offset=${c.streamPosition?.offset})`);
      } else if (e.name === 'subscribing' || e.name === 'unsubscribed') {
        parts.push(`${e.name}(${c.code} ${c.reason ?? ''})`);
      } else parts.push(e.name);
    }
  }
  flush();
  return parts.join(' ');
}

/**
 * Checks every subscriber. `subscribers`: [{ label, channel, log }] where `log` is the
 * subscription's EventLog. Returns the totals, per-subscriber results and details, and
 * the summary line
 * `publications=… subscribers=… silent_loss=… duplicates=… reorders=… told=…`.
 */
export function checkAll(history, subscribers) {
  const totals = { silentLoss: 0, duplicates: 0, reorders: 0, toldPairs: 0, toldEvents: 0, delivered: 0 };
  const results = [];
  for (const { label, channel, log } of subscribers) {
    const r = checkSubscriber(log.entries, history.acked(channel));
    for (const k of Object.keys(totals)) totals[k] += r[k];
    results.push({ label, channel, ...r, detail: `${label} (${channel}): delivered ${r.delivered}, told ${r.toldEvents}x${r.problems.length ? `; ${r.problems.slice(0, 10).join('; ')}` : ''}\n  ${describeTimeline(log.entries)}` });
  }
  const line =
    `publications=${history.total} subscribers=${subscribers.length} silent_loss=${totals.silentLoss} ` +
    `duplicates=${totals.duplicates} reorders=${totals.reorders} told=${totals.toldPairs} ` +
    `(recovered:false resubscribes and unsubscribes ${totals.toldEvents})`;
  return { totals, results, line, details: results.map((r) => r.detail) };
}

/**
 * Waits until every subscriber delivered the last acknowledged publication of its
 * channel, or was told after the last delivery (then it owes nothing more).
 */
export async function waitCaughtUp(history, subscribers, { timeout = 30_000, sleep }) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const behind = subscribers.filter(({ channel, log }) => {
      const last = history.last(channel);
      if (last === undefined) return false;
      // Caught up: delivered the last one, or told after its last delivery.
      for (let i = log.entries.length - 1; i >= 0; i--) {
        const e = log.entries[i];
        if (isTold(e)) return false;
        if (e.name === 'publication') return !log.entries.some((x) => x.name === 'publication' && publicationN(x.ctx) === last);
      }
      return true;
    });
    if (behind.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`not caught up within ${timeout} ms: ${behind.map((s) => `${s.label} (last acknowledged n=${history.last(s.channel)})`).join(', ')}`);
    }
    await sleep(100);
  }
}
