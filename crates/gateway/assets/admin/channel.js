// One channel: its presence and presence stats, its last publications from history,
// a publish form and an "unsubscribe a user" form. Publication data, user ids and
// client ids are untrusted: they go into the page as text only.

import * as api from './api.js';
import { el, labelled, outcomeLines, pageHeading, table } from './dom.js';
import * as format from './format.js';

const HISTORY_LIMIT = 20;

export function render(main, { route, setTitle }) {
  const channel = route.channel;
  setTitle(`Channel ${channel}`);
  const heading = pageHeading('Channel ');
  heading.append(el('span', { class: 'mono', text: channel }));

  const refresh = el('button', { type: 'button', id: 'channel-refresh', text: 'Refresh' });
  const presenceStats = el('p', { id: 'presence-stats', class: 'figures' });
  const presenceSlot = el('div', { class: 'table-wrap', id: 'presence' });
  const position = el('p', { id: 'history-position', class: 'figures' });
  const historySlot = el('div', { class: 'table-wrap', id: 'history' });

  const data = labelled('Data (JSON)', 'publish-data', {
    tag: 'textarea',
    rows: '5',
    spellcheck: 'false',
    placeholder: '{"text": "hello"}',
    hint: 'Any JSON value; it is sent as the publication data.',
  });
  const publishForm = el('form', { id: 'publish-form', class: 'stack', novalidate: true },
    data.field,
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'button-primary', id: 'publish-button', text: 'Publish' })),
  );
  const publishOutcome = outcomeLines('publish');

  const user = labelled('User ID', 'unsubscribe-user', { type: 'text', autocomplete: 'off', required: true });
  const unsubscribeForm = el('form', { id: 'unsubscribe-form', class: 'inline-form', novalidate: true },
    user.field,
    el('div', { class: 'actions' }, el('button', { type: 'submit', text: 'Unsubscribe user' })),
  );
  const unsubscribeOutcome = outcomeLines('unsubscribe');

  main.append(
    heading,
    el('p', { class: 'toolbar' }, el('a', { href: '#/channels', text: 'All channels' }), refresh),
    el('div', { class: 'columns' },
      el('section', { 'aria-labelledby': 'presence-heading', class: 'card' },
        el('h3', { id: 'presence-heading', text: 'Presence' }), presenceStats, presenceSlot),
      el('section', { 'aria-labelledby': 'publish-heading', class: 'card' },
        el('h3', { id: 'publish-heading', text: 'Publish' }), publishForm, publishOutcome.error, publishOutcome.status),
    ),
    el('section', { 'aria-labelledby': 'history-heading' },
      el('h3', { id: 'history-heading', text: `Last ${HISTORY_LIMIT} publications` }), position, historySlot),
    el('section', { 'aria-labelledby': 'unsubscribe-heading' },
      el('h3', { id: 'unsubscribe-heading', text: 'Unsubscribe a user' }),
      unsubscribeForm, unsubscribeOutcome.error, unsubscribeOutcome.status),
  );

  const loadPresence = async () => {
    try {
      const [stats, presence] = await Promise.all([
        api.call('presence_stats', { channel }).then(api.resultOf),
        api.call('presence', { channel }).then(api.resultOf),
      ]);
      presenceStats.textContent = `${format.counted(stats.num_clients, 'client')}, ${format.counted(stats.num_users, 'user')}`;
      const entries = Object.values(presence.presence || {}).sort((a, b) => String(a.user).localeCompare(String(b.user)));
      presenceSlot.replaceChildren(
        table('Clients in the channel', ['Client', 'User', 'Connection info'], entries.map((e) =>
          el('tr', { 'data-client': e.client },
            el('td', { class: 'mono', text: e.client }),
            el('td', { class: 'mono', text: e.user === '' ? '(anonymous)' : e.user }),
            el('td', { class: 'mono data-cell', text: format.json(e.conn_info) }),
          ),
        ), { id: 'presence-table', class: 'data', empty: 'No client in the channel.' }),
      );
    } catch (err) {
      presenceStats.textContent = `Presence: ${api.describeFailure(err)}`;
      presenceSlot.replaceChildren();
    }
  };

  const loadHistory = async () => {
    try {
      const result = api.resultOf(await api.call('history', { channel, limit: HISTORY_LIMIT, reverse: true }));
      position.replaceChildren(
        'Epoch ', el('span', { class: 'mono', id: 'history-epoch', text: result.epoch || '—' }),
        ', latest offset ', el('span', { class: 'mono', id: 'history-offset', text: String(result.offset ?? '—') }),
      );
      const pubs = result.publications || [];
      historySlot.replaceChildren(
        table('Publications, newest first', ['Offset', 'Data', 'Published by'], pubs.map((p) =>
          el('tr', { 'data-offset': String(p.offset) },
            el('td', { class: 'num offset', text: String(p.offset ?? '—') }),
            el('td', { class: 'mono data-cell', text: 'data' in p ? format.json(p.data) : '(binary data)' }),
            el('td', { class: 'mono', text: p.info ? `${p.info.user} (${p.info.client})` : 'server API' }),
          ),
        ), { id: 'history-table', class: 'data', empty: 'No publication in history.' }),
      );
    } catch (err) {
      position.textContent = `History: ${api.describeFailure(err)}`;
      historySlot.replaceChildren();
    }
  };

  const loadAll = () => Promise.all([loadPresence(), loadHistory()]);

  refresh.addEventListener('click', loadAll);

  publishForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    publishOutcome.clear();
    let value;
    try {
      value = JSON.parse(data.input.value);
    } catch (err) {
      publishOutcome.fail(`Data (JSON) is not valid JSON: ${err.message}. Nothing was sent.`);
      data.input.focus();
      return;
    }
    try {
      const result = api.resultOf(await api.call('publish', { channel, data: value }));
      publishOutcome.ok(result.offset ? `Published at offset ${result.offset} (epoch ${result.epoch}).` : 'Published.');
    } catch (err) {
      publishOutcome.fail(api.describeFailure(err));
      return;
    }
    await loadHistory();
  });

  unsubscribeForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    unsubscribeOutcome.clear();
    const who = user.input.value.trim();
    if (!who) {
      unsubscribeOutcome.fail('Enter a user ID.');
      user.input.focus();
      return;
    }
    try {
      api.resultOf(await api.call('unsubscribe', { channel, user: who }));
      unsubscribeOutcome.ok(`Unsubscribed user ${who} from ${channel}.`);
    } catch (err) {
      unsubscribeOutcome.fail(api.describeFailure(err));
      return;
    }
    await loadPresence();
  });

  if (channel) loadAll();
  else position.textContent = 'No channel name in the address.';
}
