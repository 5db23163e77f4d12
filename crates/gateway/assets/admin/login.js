// The login page: a password form and, with admin.token_auth, a token form. Refusals
// (wrong password, too many attempts) show in the role="alert" line.

import * as api from './api.js';
import { el, labelled, pageHeading } from './dom.js';

/**
 * Renders into `main`. `alert`: a message to show at once (session expired);
 * `status`: a quiet one (logged out). `onLoggedIn(result)` runs after a 200.
 */
export function render(main, { passwordAuth, tokenAuth, alert, status, setTitle, onLoggedIn }) {
  setTitle('Log in');
  const error = el('p', { class: 'error', role: 'alert', id: 'login-error', text: alert });
  const quiet = el('p', { class: 'status', role: 'status', id: 'login-status', text: status });
  const forms = [];

  if (passwordAuth) {
    const password = labelled('Password', 'login-password', {
      type: 'password',
      autocomplete: 'current-password',
      required: true,
    });
    forms.push(
      credentialForm('login-password-form', password, 'Log in', () => ({ password: password.input.value }), {
        invalid: 'Wrong password.',
      }),
    );
  }
  if (tokenAuth) {
    const token = labelled('Admin token (JWT)', 'login-token', {
      type: 'password',
      autocomplete: 'off',
      spellcheck: 'false',
      required: true,
      hint: 'A token with the claim "admin": true, signed like connection tokens.',
    });
    forms.push(
      credentialForm('login-token-form', token, 'Log in with token', () => ({ token: token.input.value.trim() }), {
        invalid: 'The token was refused.',
      }),
    );
  }
  if (forms.length === 0) {
    error.textContent = 'No login method is configured on this node (admin.password or admin.token_auth).';
  }

  main.append(
    el('section', { class: 'card login-card', 'aria-labelledby': 'login-heading' },
      pageHeading('Log in', 'login-heading'),
      el('p', { class: 'muted', text: 'Operator console of this herald node.' }),
      quiet,
      ...forms,
      error,
    ),
  );

  function credentialForm(id, { field, input }, buttonText, credentials, { invalid }) {
    const button = el('button', { type: 'submit', class: 'button-primary', text: buttonText });
    const form = el('form', { id, class: 'stack', novalidate: true }, field, el('div', { class: 'actions' }, button));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      quiet.textContent = '';
      error.textContent = '';
      const body = credentials();
      if (!Object.values(body)[0]) {
        error.textContent = `Enter the ${input.labels[0].textContent.toLowerCase()}.`;
        input.focus();
        return;
      }
      button.disabled = true;
      try {
        const result = await api.login(body);
        onLoggedIn(result);
      } catch (err) {
        error.textContent =
          err instanceof api.Refusal && err.reason === 'invalid_credentials' ? invalid : api.describeFailure(err);
        input.value = '';
        input.focus();
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }
}
