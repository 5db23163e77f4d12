// The live node statistics: one EventSource on ./stream carries every node's snapshot
// (each node publishes one every admin.stats_interval through the engine). Rates are
// counter differences between two consecutive snapshots of one node over their time
// difference; the last five minutes of rates are kept per node for the chart.

export const HISTORY_MS = 5 * 60 * 1000;
const DEFAULT_INTERVAL_MS = 2000;
const STALE_AFTER_INTERVALS = 3;

/** Per-node snapshots and rates from ./stream, with listeners told of every change. */
export class StatsFeed {
  constructor({ url = './stream', onBroken = () => {} } = {}) {
    this.url = url;
    this.onBroken = onBroken;
    this.source = null;
    this.listeners = new Set();
    /** uid -> { uid, latest, seenAt, intervalMs, points: [{ time, publications, deliveries }] } */
    this.nodes = new Map();
    this.connected = false;
  }

  start() {
    if (this.source) return;
    const source = new EventSource(this.url);
    this.source = source;
    source.onopen = () => {
      this.connected = true;
      this.notify();
    };
    source.onmessage = (event) => this.receive(event.data);
    source.onerror = () => {
      this.connected = false;
      this.notify();
      // A refused stream (401 after the session expired) is closed for good by the
      // browser; a dropped one reconnects by itself.
      if (source.readyState === EventSource.CLOSED) {
        this.source = null;
        this.onBroken();
      }
    };
  }

  stop() {
    if (this.source) this.source.close();
    this.source = null;
    this.connected = false;
  }

  /** Forgets every node (on logout). */
  clear() {
    this.nodes.clear();
    this.notify();
  }

  /** Calls `listener()` after every change; returns the function that unsubscribes. */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Whether a node has not been heard from for three of its intervals. */
  isStale(node, now = Date.now()) {
    return now - node.seenAt > STALE_AFTER_INTERVALS * node.intervalMs;
  }

  /** The latest rates of a node: { publications, deliveries } per second, or nulls. */
  latestRates(node) {
    const last = node.points[node.points.length - 1];
    return last ? { publications: last.publications, deliveries: last.deliveries } : { publications: null, deliveries: null };
  }

  receive(text) {
    let snapshot;
    try {
      const push = JSON.parse(text);
      snapshot = push && push.pub && push.pub.data;
    } catch {
      return;
    }
    if (!snapshot || typeof snapshot.uid !== 'string') return;
    this.record(snapshot, Date.now());
    this.notify();
  }

  record(snapshot, now) {
    let node = this.nodes.get(snapshot.uid);
    if (!node) {
      node = { uid: snapshot.uid, latest: null, seenAt: now, intervalMs: DEFAULT_INTERVAL_MS, points: [] };
      this.nodes.set(snapshot.uid, node);
    }
    const previous = node.latest;
    if (previous && snapshot.time <= previous.time) {
      node.seenAt = now; // a repeat or a late one: nothing new to count
      return;
    }
    if (previous) {
      const seconds = (snapshot.time - previous.time) / 1000;
      const rate = (field) => {
        const delta = snapshot[field] - previous[field];
        // A counter that went down means the node restarted: no rate for this step.
        return delta >= 0 ? delta / seconds : null;
      };
      node.points.push({ time: snapshot.time, publications: rate('publications'), deliveries: rate('deliveries') });
      node.intervalMs = Math.min(Math.max(snapshot.time - previous.time, 250), 60_000);
    }
    node.latest = snapshot;
    node.seenAt = now;
    const oldest = snapshot.time - HISTORY_MS;
    while (node.points.length && node.points[0].time < oldest) node.points.shift();
  }

  notify() {
    for (const listener of this.listeners) listener();
  }
}
