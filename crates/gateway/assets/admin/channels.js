// Channels: the channels with subscribers (cluster-wide, the `channels` API with a
// prefix pattern), each linking to its channel page; and a form to open any channel.

import * as api from './api.js';
import { el, labelled, outcomeLines, pageHeading, table } from './dom.js';
import * as format from './format.js';
import { channelHash } from './routes.js';

export function render(main, { setTitle }) {
  setTitle('Channels');
  const prefix = labelled('Channel name prefix', 'channels-prefix', {
    type: 'search',
    autocomplete: 'off',
    hint: 'Empty lists every channel with subscribers.',
  });
  const search = el('form', { id: 'channels-search', class: 'inline-form', role: 'search' },
    prefix.field,
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'button-primary', text: 'Search' })),
  );
  const searchOutcome = outcomeLines('channels');
  const results = el('div', { class: 'table-wrap' });

  const name = labelled('Channel name', 'channel-open-name', { type: 'text', autocomplete: 'off', required: true });
  const open = el('form', { id: 'channel-open', class: 'inline-form', novalidate: true },
    name.field,
    el('div', { class: 'actions' }, el('button', { type: 'submit', text: 'Open channel' })),
  );
  const openOutcome = outcomeLines('channel-open');

  main.append(
    pageHeading('Channels'),
    el('section', { 'aria-labelledby': 'channels-search-heading' },
      el('h3', { id: 'channels-search-heading', text: 'Channels with subscribers' }),
      search, searchOutcome.error, searchOutcome.status, results,
    ),
    el('section', { 'aria-labelledby': 'channel-open-heading' },
      el('h3', { id: 'channel-open-heading', text: 'Open a channel' }),
      el('p', { class: 'muted', text: 'Presence, history and publishing for any channel, with or without subscribers.' }),
      open, openOutcome.error,
    ),
  );

  const runSearch = async () => {
    searchOutcome.clear();
    const pattern = `${prefix.input.value.trim()}*`;
    try {
      const found = api.resultOf(await api.call('channels', { pattern })).channels || {};
      const names = Object.keys(found).sort();
      results.replaceChildren(
        table(`Channels matching ${pattern}`, ['Channel', 'Clients (cluster)'], names.map((channel) =>
          el('tr', { 'data-channel': channel },
            el('th', { scope: 'row' }, el('a', { href: channelHash(channel), class: 'mono', text: channel })),
            el('td', { class: 'num', text: String(found[channel].num_clients ?? '—') }),
          ),
        ), { id: 'channels-table', class: 'data', empty: 'No channel matches.' }),
      );
      searchOutcome.ok(names.length === 0 ? 'No channel matches.' : `${format.counted(names.length, 'channel')} found.`);
    } catch (err) {
      results.replaceChildren();
      searchOutcome.fail(api.describeFailure(err));
    }
  };

  search.addEventListener('submit', (event) => {
    event.preventDefault();
    runSearch();
  });
  open.addEventListener('submit', (event) => {
    event.preventDefault();
    const channel = name.input.value.trim();
    if (!channel) {
      openOutcome.fail('Enter a channel name.');
      name.input.focus();
      return;
    }
    location.hash = channelHash(channel);
  });
  runSearch();
}
