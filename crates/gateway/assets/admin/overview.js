// Overview: one row per node of the cluster, live from the stats stream (the `info`
// API fills in nodes before their first snapshot), and charts of publications/s and
// deliveries/s per node over the last five minutes.

import * as api from './api.js';
import { lineChart } from './chart.js';
import { el, pageHeading, table } from './dom.js';
import * as format from './format.js';
import { HISTORY_MS } from './stats.js';

const COLUMNS = [
  ['Node', 'name'],
  ['Version', 'version'],
  ['Uptime', 'uptime'],
  ['Connections', 'clients'],
  ['Users', 'users'],
  ['Subscriptions', 'subscriptions'],
  ['Channels', 'channels'],
  ['Publications/s', 'publications_rate'],
  ['Deliveries/s', 'deliveries_rate'],
  ['Engine', 'engine'],
  ['Status', 'status'],
];
const INFO_REFRESH_MS = 15000;
const REDRAW_MS = 1000;
const MIN_CHART_MS = 60000;

export function render(main, { session, stats, setTitle }) {
  setTitle('Overview');
  let infoNodes = new Map();
  const streamLine = el('p', { class: 'muted', role: 'status', id: 'stream-status' });
  const infoError = el('p', { class: 'error', role: 'alert', id: 'info-error' });
  const tableSlot = el('div', { class: 'table-wrap' });
  const chartSlot = el('div', { class: 'charts' });

  main.append(
    pageHeading('Overview'),
    streamLine,
    el('section', { 'aria-labelledby': 'nodes-heading' }, el('h3', { id: 'nodes-heading', text: 'Nodes' }), infoError, tableSlot),
    el('section', { 'aria-labelledby': 'throughput-heading' },
      el('h3', { id: 'throughput-heading', text: 'Throughput, up to the last 5 minutes' }),
      chartSlot,
    ),
  );

  const redraw = () => {
    const rows = mergedNodes(infoNodes, stats);
    tableSlot.replaceChildren(
      table('Nodes of the cluster: live figures from the stats stream', COLUMNS.map(([title]) => title),
        rows.map((row) => nodeRow(row, session)), { id: 'nodes', class: 'data' }),
    );
    const reporting = rows.filter((r) => r.status === 'up').length;
    const line = stats.connected
      ? `Live: ${reporting} of ${rows.length} node${rows.length === 1 ? '' : 's'} reporting.`
      : 'Connecting to the stats stream…';
    // Only a change is worth announcing (role="status").
    if (streamLine.textContent !== line) streamLine.textContent = line;
    drawCharts(chartSlot, stats);
  };

  const loadInfo = async () => {
    try {
      const result = api.resultOf(await api.call('info'));
      infoNodes = new Map((result.nodes || []).map((n) => [n.uid, n]));
      infoError.textContent = '';
    } catch (err) {
      if (!(err instanceof api.Refusal && err.status === 401)) infoError.textContent = api.describeFailure(err);
    }
    redraw();
  };

  redraw();
  loadInfo();
  const unsubscribe = stats.subscribe(redraw);
  const redrawTimer = setInterval(redraw, REDRAW_MS);
  const infoTimer = setInterval(loadInfo, INFO_REFRESH_MS);
  return () => {
    unsubscribe();
    clearInterval(redrawTimer);
    clearInterval(infoTimer);
  };
}

// One entry per node uid, from its latest snapshot when there is one, else from `info`.
function mergedNodes(infoNodes, stats) {
  const now = Date.now();
  const uids = new Set([...infoNodes.keys(), ...stats.nodes.keys()]);
  const rows = [];
  for (const uid of uids) {
    const info = infoNodes.get(uid);
    const fed = stats.nodes.get(uid);
    const snap = fed && fed.latest;
    if (snap) {
      const rates = stats.latestRates(fed);
      const stale = stats.isStale(fed, now);
      rows.push({
        uid,
        name: snap.name,
        version: snap.version,
        uptime: snap.uptime,
        clients: snap.clients,
        users: snap.users,
        subscriptions: snap.subscriptions,
        channels: snap.channels,
        publications_rate: rates.publications,
        deliveries_rate: rates.deliveries,
        engine: snap.engine,
        status: stale ? 'stale' : snap.draining ? 'draining' : 'up',
      });
    } else {
      rows.push({
        uid,
        name: info.name,
        version: info.version,
        uptime: info.uptime,
        clients: info.num_clients,
        users: info.num_users,
        subscriptions: info.num_subs,
        channels: info.num_channels,
        publications_rate: null,
        deliveries_rate: null,
        engine: null,
        status: 'no stats',
      });
    }
  }
  return rows.sort((a, b) => String(a.name).localeCompare(String(b.name)) || a.uid.localeCompare(b.uid));
}

function nodeRow(row, session) {
  const own = session && session.node && session.node.uid === row.uid;
  const text = {
    name: row.name,
    version: row.version || '—',
    uptime: format.duration(row.uptime),
    clients: format.count(row.clients),
    users: format.count(row.users),
    subscriptions: format.count(row.subscriptions),
    channels: format.count(row.channels),
    publications_rate: format.rate(row.publications_rate),
    deliveries_rate: format.rate(row.deliveries_rate),
    engine: row.engine || '—',
    status: row.status,
  };
  const cells = COLUMNS.map(([, field]) => {
    if (field === 'name') {
      return el('th', { scope: 'row', 'data-field': field },
        el('span', { text: row.name }),
        own ? el('span', { class: 'badge', text: 'this node' }) : null,
      );
    }
    const numeric = !['version', 'engine', 'status'].includes(field);
    const tone = field === 'engine' || field === 'status' ? toneOf(row[field]) : '';
    return el('td', { 'data-field': field, class: [numeric ? 'num' : '', tone].join(' ').trim() || null, text: text[field] });
  });
  return el('tr', { 'data-uid': row.uid, 'data-name': row.name }, cells);
}

function toneOf(value) {
  if (value === 'ok' || value === 'up') return 'tone-good';
  if (value === 'unreachable' || value === 'stale') return 'tone-bad';
  if (value === 'draining') return 'tone-warn';
  return '';
}

function drawCharts(slot, stats) {
  const now = Date.now();
  const fed = [...stats.nodes.values()]
    .filter((n) => n.latest)
    .sort((a, b) => String(a.latest.name).localeCompare(String(b.latest.name)));
  // Points carry node time; shift them to this browser's clock so a skewed node
  // still lands inside the window.
  const seriesOf = (field) =>
    fed.map((n) => {
      const skew = n.seenAt - n.latest.time;
      return { name: n.latest.name, points: n.points.map((p) => ({ time: p.time + skew, value: p[field] })) };
    });
  const spanMs = chartSpan(fed, now);
  slot.replaceChildren(
    lineChart({ id: 'chart-publications', title: 'Publications per second, per node', series: seriesOf('publications'), now, spanMs }),
    lineChart({ id: 'chart-deliveries', title: 'Deliveries per second, per node', series: seriesOf('deliveries'), now, spanMs }),
  );
}

// Five minutes once the console has seen that much; until then the time it has seen
// (at least a minute, in steps of 30 s), so a fresh page does not draw a dot.
function chartSpan(fed, now) {
  const oldest = Math.min(now, ...fed.filter((n) => n.points.length).map((n) => n.points[0].time + (n.seenAt - n.latest.time)));
  const seen = Math.ceil((now - oldest) / 30000) * 30000;
  return Math.min(Math.max(seen, MIN_CHART_MS), HISTORY_MS);
}
