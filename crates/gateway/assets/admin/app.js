// The console's shell: checks the session, shows the login page or the page the hash
// names (#/overview, #/channels, #/channel/<name>, #/users, #/keys), keeps the header
// and navigation in step, and runs the one stats stream every page shares.

import * as api from './api.js';
import { pageHeading } from './dom.js';
import * as channelPage from './channel.js';
import * as channelsPage from './channels.js';
import * as keysPage from './keys.js';
import * as loginPage from './login.js';
import * as overviewPage from './overview.js';
import { parseRoute } from './routes.js';
import { StatsFeed } from './stats.js';
import * as usersPage from './users.js';

const PAGES = {
  overview: overviewPage,
  channels: channelsPage,
  channel: channelPage,
  users: usersPage,
  keys: keysPage,
};

/** What the console shows now; exposed read-only for test diagnostics. */
const state = { view: 'loading', route: null, session: null, notice: null, stream: { connected: false, nodes: [] } };
window.heraldConsole = Object.freeze({ state });

const shell = {
  main: document.getElementById('main'),
  nav: document.getElementById('nav'),
  logout: document.getElementById('logout'),
  nodeName: document.getElementById('node-name'),
  banner: document.getElementById('insecure-banner'),
  skip: document.getElementById('skip-link'),
};

const stats = new StatsFeed({ onBroken: () => recheckSession() });
stats.subscribe(() => {
  state.stream = {
    connected: stats.connected,
    nodes: [...stats.nodes.values()].map((n) => ({ uid: n.uid, name: n.latest?.name, clients: n.latest?.clients, points: n.points.length })),
  };
});

let disposePage = null;
let navigation = 0; // the newest navigation wins when answers arrive out of order
let expiryTimer = null;

// A page's call answered 401: the login page, once (several calls may fail together).
api.onUnauthorized((refusal) => {
  if (state.view !== 'login') showLogin(refusal);
});
shell.logout.addEventListener('click', logOut);
shell.skip.addEventListener('click', (event) => {
  event.preventDefault();
  shell.main.focus();
});
window.addEventListener('hashchange', () => show({ focus: true }));
show({ focus: false });

/** Checks the session, then shows the page of the current hash (or the login page). */
async function show({ focus }) {
  const ticket = ++navigation;
  let session;
  try {
    session = await api.session();
  } catch (err) {
    if (ticket !== navigation) return;
    if (err instanceof api.Refusal && err.status === 401) showLogin(err);
    else showFailure(err);
    return;
  }
  if (ticket !== navigation) return;
  enterSession(session);
  showRoute(focus);
}

function enterSession(session) {
  api.setCsrf(session.csrf);
  state.session = {
    user: session.user,
    expires_at: session.expires_at,
    insecure: !!session.insecure,
    token_auth: !!session.token_auth,
    node: session.node || null,
  };
  const node = session.node;
  shell.nodeName.textContent = node ? `Node ${node.name} · herald ${node.version}` : '';
  shell.logout.hidden = !!session.insecure;
  shell.nav.hidden = false;
  shell.banner.hidden = !session.insecure;
  shell.banner.textContent = session.insecure
    ? 'INSECURE: this console has no login (admin.insecure = true). Anyone who can reach this port controls the server.'
    : '';
  stats.start();
  scheduleExpiryCheck(session.expires_at);
}

function showRoute(focus) {
  const route = parseRoute(location.hash);
  state.view = 'page';
  state.route = route;
  state.notice = null;
  for (const link of shell.nav.querySelectorAll('a[data-route]')) {
    const current = link.dataset.route === route.name || (route.name === 'channel' && link.dataset.route === 'channels');
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  replacePage((main) =>
    PAGES[route.name].render(main, {
      route,
      session: state.session,
      stats,
      setTitle,
    }),
  );
  if (focus) focusHeading();
}

/** The login page; `refusal` is the 401 that led here (null after a logout). */
function showLogin(refusal, { notice = null } = {}) {
  navigation++;
  // A session this page held whose end has passed expired, whatever the server could
  // still tell from a cookie the browser may have dropped by then.
  const ranOut = !!refusal && !!state.session && typeof state.session.expires_at === 'number' && state.session.expires_at <= Date.now();
  leaveSession();
  const body = refusal ? refusal.body : {};
  const expired = (refusal && refusal.reason === 'session_expired') || ranOut;
  state.view = 'login';
  state.route = null;
  state.notice = expired ? 'session_expired' : notice;
  if (body.insecure) shell.banner.hidden = false;
  replacePage((main) =>
    loginPage.render(main, {
      passwordAuth: body.password_auth !== false,
      tokenAuth: !!body.token_auth,
      alert: expired ? 'Your session expired. Log in again.' : '',
      status: notice || '',
      setTitle,
      onLoggedIn: (result) => {
        api.setCsrf(result.csrf);
        show({ focus: true });
      },
    }),
  );
}

function leaveSession() {
  stats.stop();
  stats.clear();
  api.setCsrf(null);
  clearTimeout(expiryTimer);
  state.session = null;
  shell.nav.hidden = true;
  shell.logout.hidden = true;
  shell.nodeName.textContent = '';
}

async function logOut() {
  try {
    await api.logout();
  } catch (err) {
    // The session may be gone already; the login page is right either way.
    if (!(err instanceof api.Refusal)) {
      showFailure(err);
      return;
    }
  }
  showLogin(null, { notice: 'You logged out.' });
}

// The stream broke for good (a refusal, e.g. 401) or the session should have run out:
// show the login page when the server says so; else keep going (and retry the stream).
async function recheckSession() {
  if (!state.session) return;
  let session;
  try {
    session = await api.session();
  } catch (err) {
    if (!state.session) return;
    if (err instanceof api.Refusal && err.status === 401) showLogin(err);
    else setTimeout(recheckSession, 5000);
    return;
  }
  if (!state.session) return;
  api.setCsrf(session.csrf);
  state.session.expires_at = session.expires_at;
  scheduleExpiryCheck(session.expires_at);
  setTimeout(() => {
    if (state.session) stats.start();
  }, 2000);
}

// Shows the login page when the session runs out, without waiting for a click.
function scheduleExpiryCheck(expiresAt) {
  clearTimeout(expiryTimer);
  if (typeof expiresAt !== 'number') return;
  const wait = Math.min(Math.max(expiresAt - Date.now() + 500, 1000), 2 ** 31 - 1);
  expiryTimer = setTimeout(() => recheckSession(), wait);
}

function showFailure(err) {
  state.view = 'failure';
  replacePage((main) => {
    setTitle('Unavailable');
    main.append(pageHeading('The console is unavailable'));
    const line = document.createElement('p');
    line.className = 'error';
    line.setAttribute('role', 'alert');
    line.textContent = api.describeFailure(err);
    main.append(line);
  });
}

function replacePage(render) {
  if (disposePage) disposePage();
  disposePage = null;
  shell.main.replaceChildren();
  const dispose = render(shell.main);
  if (typeof dispose === 'function') disposePage = dispose;
}

function setTitle(name) {
  document.title = `${name} · herald console`;
}

function focusHeading() {
  const h = shell.main.querySelector('h2');
  if (h) h.focus();
}
