// The browser side of tests/sdk/js/browser.test.mjs. Everything the test checks is
// kept in window.heraldTest; the page shows it too (for the screenshot).
import { Centrifuge } from '/vendor/centrifuge.mjs';

const params = new URLSearchParams(location.search);
const mode = params.get('mode') || 'client';
const token = params.get('token') || '';
const channel = params.get('channel') || '';

const state = {
  mode,
  ready: true,
  tried: [],
  transport: null,
  client: null,
  connected: false,
  subscribed: false,
  publications: [],
  events: [],
  errors: [],
  uniPushes: [],
};
window.heraldTest = state;

const $ = (id) => document.getElementById(id);
$('mode').textContent = mode;
$('origin').textContent = location.origin;
$('channel').textContent = channel || '–';

function log(line) {
  const text = `${new Date().toISOString().slice(11, 23)} ${line}`;
  state.events.push(text);
  $('log').textContent += text + '\n';
  console.log(`[page] ${line}`);
}

function showPubs() {
  $('pubs').textContent = `${state.publications.length}: ` +
    state.publications.map((p) => JSON.stringify(p.data)).join(', ');
}

function setOk(id, text, ok = true) {
  $(id).textContent = text;
  $(id).className = ok ? 'ok' : 'bad';
}

window.addEventListener('error', (e) => {
  state.errors.push(String(e.message || e));
  log(`window error: ${e.message}`);
});

if (mode === 'client') {
  const order = (params.get('transports') || 'websocket,http_stream,sse').split(',').filter(Boolean);
  const endpoints = {
    websocket: `ws://${location.host}/connection/websocket`,
    http_stream: '/connection/http_stream',
    sse: '/connection/sse',
  };
  const transports = order.map((t) => ({ transport: t, endpoint: endpoints[t] }));
  log(`transports: ${JSON.stringify(transports)}`);
  const centrifuge = new Centrifuge(transports, {
    token,
    debug: params.get('debug') === '1',
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    timeout: 5000,
  });
  window.heraldCentrifuge = centrifuge;
  centrifuge.on('connecting', (ctx) => log(`connecting code=${ctx.code} reason=${ctx.reason}`));
  centrifuge.on('connected', (ctx) => {
    state.connected = true;
    state.transport = ctx.transport;
    state.client = ctx.client;
    setOk('transport', ctx.transport);
    $('client').textContent = ctx.client;
    log(`connected transport=${ctx.transport} client=${ctx.client}`);
  });
  centrifuge.on('disconnected', (ctx) => log(`disconnected code=${ctx.code} reason=${ctx.reason}`));
  centrifuge.on('error', (ctx) => {
    const t = ctx.transport || '';
    if (t) state.tried.push(`${t}: ${ctx.error && ctx.error.message}`);
    $('tried').textContent = state.tried.join('; ');
    state.errors.push(JSON.stringify(ctx));
    log(`client error type=${ctx.type} transport=${t} error=${JSON.stringify(ctx.error)}`);
  });
  const sub = centrifuge.newSubscription(channel);
  sub.on('subscribing', (ctx) => log(`subscribing code=${ctx.code} reason=${ctx.reason}`));
  sub.on('subscribed', () => {
    state.subscribed = true;
    setOk('subscribed', 'yes');
    log(`subscribed ${channel}`);
  });
  sub.on('unsubscribed', (ctx) => log(`unsubscribed code=${ctx.code} reason=${ctx.reason}`));
  sub.on('error', (ctx) => {
    state.errors.push(JSON.stringify(ctx));
    log(`subscription error ${JSON.stringify(ctx.error)}`);
  });
  sub.on('publication', (ctx) => {
    state.publications.push({ data: ctx.data, offset: ctx.offset });
    showPubs();
    log(`publication ${JSON.stringify(ctx.data)}`);
  });
  sub.subscribe();
  centrifuge.connect();
} else if (mode === 'uni_sse') {
  const url = '/connection/uni_sse?cf_connect=' + encodeURIComponent(JSON.stringify({ token }));
  $('tried').textContent = 'EventSource /connection/uni_sse';
  log('new EventSource(/connection/uni_sse?cf_connect=...)');
  const es = new EventSource(url);
  window.heraldEventSource = es;
  es.onopen = () => log('EventSource open');
  es.onerror = () => {
    state.errors.push(`EventSource error, readyState=${es.readyState}`);
    log(`EventSource error readyState=${es.readyState}`);
  };
  es.onmessage = (e) => {
    let push;
    try {
      push = JSON.parse(e.data);
    } catch {
      state.errors.push(`unparsable message: ${e.data}`);
      log(`unparsable message ${e.data}`);
      return;
    }
    state.uniPushes.push(push);
    log(`push ${e.data.slice(0, 300)}`);
    if (push.connect) {
      state.connected = true;
      state.transport = 'uni_sse';
      state.client = push.connect.client;
      setOk('transport', 'uni_sse (EventSource)');
      $('client').textContent = push.connect.client;
      if (push.connect.subs && channel in push.connect.subs) {
        state.subscribed = true;
        setOk('subscribed', 'yes (server-side, from the token)');
      }
    } else if (push.pub) {
      state.publications.push({ channel: push.channel, data: push.pub.data, offset: push.pub.offset });
      showPubs();
    } else if (push.disconnect) {
      setOk('transport', `disconnected ${JSON.stringify(push.disconnect)}`, false);
    }
  };
} else {
  log(`unknown mode ${mode}`);
}
