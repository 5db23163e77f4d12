// The demo chat page: one channel, "chat", on the herald that serves this page.
//
// Everything that comes from the server or from other users (names, message text) is
// untrusted: it reaches the DOM through textContent only.

import { HeraldClient } from './client.js';

const CHANNEL = 'chat';
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const TOKEN_REUSE_MS = 50 * 60 * 1000; // tokens of /demo/token live 1 h

/** What the page knows, for people and for tests (window.heraldDemo.state). */
const state = {
  user: null,
  clientId: null,
  connection: 'idle',
  reason: '',
  subscribed: false,
  recovered: false,
  recoveredCount: 0,
  recoveries: [], // { recovered, missed } per resubscribe after a reconnect
  messages: [], // { offset, author, text, recovered }
  events: [], // { type: 'join' | 'leave', user }
  presence: {}, // clientId -> user
};
window.heraldDemo = { state };

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  statusText: $('status-text'),
  statusNote: $('status-note'),
  nameForm: $('name-form'),
  name: $('name'),
  nameError: $('name-error'),
  chat: $('chat'),
  whoami: $('whoami'),
  messages: $('messages'),
  messageForm: $('message-form'),
  message: $('message'),
  sendError: $('send-error'),
  presence: $('presence'),
  presenceCount: $('presence-count'),
};

let client = null;
let token = null; // { value, at }

ui.name.value = `guest-${randomHex(2)}`;
ui.nameForm.addEventListener('submit', (event) => {
  event.preventDefault();
  join(ui.name.value.trim());
});
ui.messageForm.addEventListener('submit', (event) => {
  event.preventDefault();
  send(ui.message.value.trim());
});

// ---------------------------------------------------------------------------
// Joining and sending

async function join(name) {
  ui.nameError.textContent = '';
  if (!NAME_RE.test(name)) {
    ui.nameError.textContent = 'Use 1 to 64 letters, digits, dots, dashes or underscores.';
    return;
  }
  state.user = name;
  try {
    await fetchToken(true); // a refused name shows here, before the chat opens
  } catch (err) {
    ui.nameError.textContent = err.message;
    return;
  }
  ui.nameForm.hidden = true;
  ui.chat.hidden = false;
  ui.whoami.textContent = name;
  ui.message.focus();

  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  client = new HeraldClient(`${scheme}://${location.host}/connection/websocket`, fetchToken);
  client.addEventListener('state', (e) => onState(e.detail));
  client.addEventListener('subscribed', (e) => onSubscribed(e.detail));
  client.addEventListener('publication', (e) => onPublication(e.detail));
  client.addEventListener('join', (e) => onJoin(e.detail.info));
  client.addEventListener('leave', (e) => onLeave(e.detail.info));
  client.addEventListener('error', (e) => addLine('error', `cannot subscribe: ${e.detail.error.message}`));
  client.addEventListener('unsubscribed', (e) => addLine('error', `unsubscribed by the server: ${e.detail.reason}`));
  client.subscribe(CHANNEL);
  client.connect();
}

async function fetchToken(fresh) {
  if (token && !fresh && Date.now() - token.at < TOKEN_REUSE_MS) return token.value;
  const res = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: state.user }),
  });
  if (!res.ok) {
    const err = new Error(`the server refused a token for "${state.user}" (HTTP ${res.status})`);
    err.terminal = res.status >= 400 && res.status < 500;
    throw err;
  }
  const body = await res.json();
  token = { value: body.token, at: Date.now() };
  return token.value;
}

async function send(text) {
  ui.sendError.textContent = '';
  if (!text) return;
  try {
    await client.publish(CHANNEL, { text, user: state.user });
    ui.message.value = '';
  } catch (err) {
    ui.sendError.textContent = `Not sent: ${err.message}`;
  }
}

// ---------------------------------------------------------------------------
// Client events

function onState({ state: connection, reason }) {
  state.connection = connection;
  state.reason = reason;
  state.clientId = client.clientId;
  if (connection !== 'connected') state.subscribed = false;
  renderStatus();
}

async function onSubscribed({ recovering, recovered, missed }) {
  state.subscribed = true;
  if (recovering) {
    state.recovered = recovered;
    state.recoveredCount = missed;
    state.recoveries.push({ recovered, missed });
  }
  renderStatus();
  // Joins and leaves of the time offline are gone: take the whole list again.
  try {
    const presence = await client.presence(CHANNEL);
    setPresence(presence, { announce: recovering });
  } catch (err) {
    addLine('error', `cannot read presence: ${err.message}`);
  }
}

function onPublication({ pub, recovered }) {
  const data = pub.data && typeof pub.data === 'object' ? pub.data : {};
  // The server-attested publisher wins over what the message claims.
  const author = pub.info?.user || (typeof data.user === 'string' ? data.user : '') || 'anonymous';
  const text = typeof data.text === 'string' ? data.text : JSON.stringify(pub.data);
  state.messages.push({ offset: pub.offset ?? null, author, text, recovered });

  const item = document.createElement('li');
  item.className = 'message';
  if (author === state.user) item.classList.add('own');
  if (recovered) item.classList.add('recovered');
  if (pub.offset !== undefined) item.dataset.offset = String(pub.offset);
  const who = document.createElement('span');
  who.className = 'author';
  who.textContent = author;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  item.append(who, body);
  if (recovered) {
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = 'recovered';
    item.append(tag);
  }
  appendItem(item);
}

function onJoin(info) {
  const wasOnline = isOnline(info.user);
  state.presence[info.client] = info.user;
  if (!wasOnline) announce('join', info.user);
  renderPresence();
}

function onLeave(info) {
  delete state.presence[info.client];
  if (!isOnline(info.user)) announce('leave', info.user);
  renderPresence();
}

// ---------------------------------------------------------------------------
// Presence

function setPresence(presence, { announce: diff }) {
  const before = new Set(Object.values(state.presence));
  state.presence = {};
  for (const [clientId, info] of Object.entries(presence)) state.presence[clientId] = info.user;
  const after = new Set(Object.values(state.presence));
  if (diff) {
    for (const user of after) if (!before.has(user)) announce('join', user);
    for (const user of before) if (!after.has(user)) announce('leave', user);
  }
  renderPresence();
}

const isOnline = (user) => Object.values(state.presence).includes(user);

function announce(type, user) {
  state.events.push({ type, user });
  addLine(type, `${user || 'anonymous'} ${type === 'join' ? 'joined' : 'left'}`);
}

// ---------------------------------------------------------------------------
// Rendering

const STATUS_TEXT = {
  idle: 'not connected',
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  offline: 'offline',
  disconnected: 'disconnected',
  closed: 'closed',
};

function renderStatus() {
  const { connection, reason } = state;
  ui.status.dataset.state = connection;
  // Without a connection the online list is only what was last known.
  ui.presence.classList.toggle('stale', connection !== 'connected');
  ui.statusText.textContent = STATUS_TEXT[connection] ?? connection;
  let note = '';
  if (connection === 'connected' && state.recoveries.length > 0) {
    note = state.recovered
      ? `recovered ${state.recoveredCount} missed message${state.recoveredCount === 1 ? '' : 's'}`
      : 'missed messages could not be recovered';
  } else if (connection === 'disconnected') {
    note = `${reason}; reload the page to join again`;
  } else if (connection === 'reconnecting') {
    note = reason;
  }
  ui.statusNote.textContent = note;
}

function renderPresence() {
  const counts = new Map();
  for (const user of Object.values(state.presence)) counts.set(user, (counts.get(user) ?? 0) + 1);
  const users = [...counts.keys()].sort((a, b) => a.localeCompare(b));
  ui.presence.replaceChildren(
    ...users.map((user) => {
      const item = document.createElement('li');
      item.textContent = user || 'anonymous';
      if (user === state.user) item.classList.add('own');
      const n = counts.get(user);
      if (n > 1) item.title = `${n} connections`;
      return item;
    }),
  );
  ui.presenceCount.textContent = String(users.length);
}

function addLine(kind, text) {
  const item = document.createElement('li');
  item.className = `event ${kind}`;
  item.textContent = text;
  appendItem(item);
}

function appendItem(item) {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function randomHex(bytes) {
  const buf = crypto.getRandomValues(new Uint8Array(bytes));
  return [...buf].map((b) => b.toString(16).padStart(2, '0')).join('');
}
