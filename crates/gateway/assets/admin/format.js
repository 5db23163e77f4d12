// How numbers and durations read on the pages.

/** "3 d 4 h", "5 h 12 min", "4 min 2 s", "12 s". */
export function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

/** A per-second rate with one decimal, or a dash when unknown. */
export function rate(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '—';
  return value >= 100 ? String(Math.round(value)) : value.toFixed(1);
}

/** A count, or a dash when unknown. */
export function count(value) {
  return typeof value === 'number' && Number.isFinite(value) ? String(value) : '—';
}

/** "1 client", "3 clients" (a missing count reads as 0). */
export function counted(n, noun) {
  const value = typeof n === 'number' ? n : 0;
  return `${value} ${noun}${value === 1 ? '' : 's'}`;
}

/** Any JSON value as compact text (for publication data, conn_info...). */
export function json(value) {
  if (value === undefined) return '';
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
