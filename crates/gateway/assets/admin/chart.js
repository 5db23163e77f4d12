// A small SVG line chart of per-second rates over a time window, one line per node.
// Built with createElementNS and text through textContent; colours come from the
// stylesheet (classes series-0..series-5), so nothing needs an inline style.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 640;
const HEIGHT = 180;
const MARGIN = { top: 12, right: 12, bottom: 24, left: 52 };
export const SERIES_CLASSES = 6;

/**
 * A <figure id=`id`> with the chart of `series` ([{ name, points: [{ time, value }] }])
 * over [now - spanMs, now], titled `title`.
 */
export function lineChart({ id, title, series, now, spanMs }) {
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const values = series.flatMap((s) => s.points.map((p) => p.value)).filter((v) => v !== null);
  const top = niceCeiling(Math.max(0, ...values));
  const x = (time) => MARGIN.left + ((time - (now - spanMs)) / spanMs) * plotWidth;
  const y = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;

  const svg = svgEl('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: 'chart',
    role: 'img',
    'aria-labelledby': `${id}-caption`,
  });
  svg.append(svgEl('title', {}, title));

  for (const fraction of [0, 0.5, 1]) {
    const gy = y(top * fraction);
    svg.append(svgEl('line', { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: gy, y2: gy, class: 'chart-grid' }));
    svg.append(svgEl('text', { x: MARGIN.left - 6, y: gy + 4, class: 'chart-label', 'text-anchor': 'end' }, formatTick(top * fraction)));
  }
  for (const [fraction, label] of [[0, ago(spanMs)], [0.5, ago(spanMs / 2)], [1, 'now']]) {
    const anchor = fraction === 0 ? 'start' : fraction === 1 ? 'end' : 'middle';
    svg.append(svgEl('text', { x: MARGIN.left + fraction * plotWidth, y: HEIGHT - 6, class: 'chart-label', 'text-anchor': anchor }, label));
  }

  series.forEach((s, index) => {
    const shown = s.points.filter((p) => p.time >= now - spanMs);
    const colour = `series-${index % SERIES_CLASSES}`;
    const d = pathData(shown, x, y);
    if (d) svg.append(svgEl('path', { d, class: `chart-line ${colour}` }));
    // The latest value as a dot: visible even while a line has a single point.
    const last = shown[shown.length - 1];
    if (last && last.value !== null) {
      svg.append(svgEl('circle', { cx: x(last.time).toFixed(1), cy: y(last.value).toFixed(1), r: 2.5, class: `chart-dot ${colour}` }));
    }
  });

  const legend = document.createElement('ul');
  legend.className = 'chart-legend';
  series.forEach((s, index) => {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = `swatch series-${index % SERIES_CLASSES}`;
    swatch.setAttribute('aria-hidden', 'true');
    item.append(swatch, document.createTextNode(s.name));
    legend.append(item);
  });

  const caption = document.createElement('figcaption');
  caption.id = `${id}-caption`;
  caption.textContent = title;
  const figure = document.createElement('figure');
  figure.className = 'chart-figure';
  figure.id = id;
  figure.append(caption, svg, legend);
  return figure;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// M/L segments; a missing rate (a node restart) breaks the line.
function pathData(points, x, y) {
  let d = '';
  let pen = false;
  for (const p of points) {
    if (p.value === null) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${x(p.time).toFixed(1)},${y(p.value).toFixed(1)} `;
    pen = true;
  }
  return d.trim();
}

// 1, 2 or 5 times a power of ten, at least 1.
function niceCeiling(value) {
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// "-5 min", "-2.5 min", "-45 s".
function ago(ms) {
  return ms >= 120000 ? `-${Math.round(ms / 6000) / 10} min` : `-${Math.round(ms / 1000)} s`;
}

function formatTick(value) {
  return value >= 100 ? String(Math.round(value)) : String(Math.round(value * 10) / 10);
}
