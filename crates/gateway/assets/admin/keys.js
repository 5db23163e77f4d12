// Keys: the ids and states of the bus integrity, history encryption and proxy signing
// keys of this node. The server never sends key material, and nothing here asks for it.

import * as api from './api.js';
import { el, pageHeading, table } from './dom.js';

const KINDS = [
  ['bus', 'Bus integrity', 'Signs and verifies every message between nodes.'],
  ['history', 'History encryption', 'Encrypts publications kept in history.'],
  ['proxy_signing', 'Proxy signing', 'Signs requests herald sends to proxy endpoints.'],
];

export function render(main, { setTitle }) {
  setTitle('Keys');
  const error = el('p', { class: 'error', role: 'alert', id: 'keys-error' });
  const slot = el('div', { class: 'key-sets' });
  main.append(
    pageHeading('Keys'),
    el('p', { class: 'muted', text: 'Key ids and states of this node. Key material is never shown.' }),
    error,
    slot,
  );

  api.keys().then(
    (sets) => slot.replaceChildren(...KINDS.map(([kind, title, explain]) => keySet(kind, title, explain, sets[kind]))),
    (err) => {
      if (!(err instanceof api.Refusal && err.status === 401)) error.textContent = api.describeFailure(err);
    },
  );
}

function keySet(kind, title, explain, set) {
  const headingId = `keys-${kind}-heading`;
  const enabled = set && set.enabled;
  const summary = enabled
    ? el('p', {}, 'Enabled; active key ', el('span', { class: 'mono', text: set.active ?? '—' }), '.')
    : el('p', { class: 'muted', text: 'Not enabled on this node.' });
  const rows = (set && set.keys ? set.keys : []).map((k) =>
    el('tr', { 'data-key-id': k.id },
      el('td', { class: 'mono', text: k.id }),
      el('td', { class: k.state === 'active' ? 'tone-good' : '', text: k.state }),
    ),
  );
  return el('section', { class: 'card', 'aria-labelledby': headingId, id: `keys-${kind}` },
    el('h3', { id: headingId, text: title }),
    el('p', { class: 'muted', text: explain }),
    summary,
    rows.length ? table(`${title} keys`, ['Key id', 'State'], rows, { class: 'data' }) : null,
  );
}
