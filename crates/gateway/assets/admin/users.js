// Users: disconnect a user (or one client of theirs), revoke a token by its jti,
// invalidate every token of a user. Each form reports in its own status/alert lines.

import * as api from './api.js';
import { el, labelled, outcomeLines, pageHeading } from './dom.js';

export function render(main, { setTitle }) {
  setTitle('Users');
  main.append(
    pageHeading('Users'),
    actionForm({
      id: 'disconnect',
      method: 'disconnect',
      title: 'Disconnect a user',
      explain: 'Closes the user\'s connections on every node with code 3503 (force disconnect); SDKs do not reconnect.',
      fields: [
        ['User ID', 'disconnect-user', { required: true }],
        ['Client ID (optional)', 'disconnect-client', { hint: 'Only this connection of the user.' }],
      ],
      button: 'Disconnect',
      params: ([user, client]) => (client ? { user, client } : { user }),
      done: ([user, client]) => (client ? `Disconnected client ${client} of user ${user}.` : `Disconnected user ${user}.`),
    }),
    actionForm({
      id: 'revoke',
      method: 'revoke_token',
      title: 'Revoke a token',
      explain: 'Every node refuses the token from now on and closes connections holding it (3500).',
      fields: [
        ['Token ID (jti)', 'revoke-jti', { required: true }],
        ['Keep the revocation until (unix seconds, optional)', 'revoke-expire', { type: 'number', min: '0', hint: 'Empty: 30 days.' }],
      ],
      button: 'Revoke token',
      params: ([uid, expireAt]) => (expireAt ? { uid, expire_at: Number(expireAt) } : { uid }),
      done: ([uid]) => `Revoked token ${uid}.`,
    }),
    actionForm({
      id: 'invalidate',
      method: 'invalidate_user_tokens',
      title: 'Invalidate a user\'s tokens',
      explain: 'Refuses every token of the user issued before now.',
      fields: [['User ID', 'invalidate-user', { required: true }]],
      button: 'Invalidate tokens',
      params: ([user]) => ({ user }),
      done: ([user]) => `Invalidated the tokens of user ${user}.`,
    }),
  );
}

/** A form that calls the API `method` with `params(values)` and reports `done(values)`. */
function actionForm({ id, method, title, explain, fields, button, params, done }) {
  const inputs = fields.map(([label, inputId, { hint, type = 'text', ...attrs }]) =>
    labelled(label, inputId, { type, autocomplete: 'off', hint, ...attrs }),
  );
  const outcome = outcomeLines(id);
  const form = el('form', { id: `${id}-form`, class: 'inline-form', novalidate: true },
    inputs.map((i) => i.field),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'button-primary', text: button })),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    outcome.clear();
    const values = inputs.map((i) => i.input.value.trim());
    const missing = inputs.find((i) => i.input.required && !i.input.value.trim());
    if (missing) {
      outcome.fail(`Enter the ${missing.input.labels[0].textContent}.`);
      missing.input.focus();
      return;
    }
    try {
      api.resultOf(await api.call(method, params(values)));
      outcome.ok(done(values));
    } catch (err) {
      outcome.fail(api.describeFailure(err));
    }
  });
  return el('section', { class: 'card', 'aria-labelledby': `${id}-heading` },
    el('h3', { id: `${id}-heading`, text: title }),
    el('p', { class: 'muted', text: explain }),
    form, outcome.error, outcome.status,
  );
}
