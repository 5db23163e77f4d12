// A small herald client: the JSON client protocol v2 (Centrifugo's) over one WebSocket.
//
// What it does, and nothing more: connect with a token, subscribe with recovery (the
// last offset and epoch of each channel are kept, and a resubscribe after a reconnect
// asks for what was missed), publish, presence, answer the server's pings, and
// reconnect with a backoff unless the close code says not to (docs/protocol.md,
// "Disconnect codes"). Commands get ids; replies are matched by id; an error reply
// rejects the command's promise with a ReplyError.
//
// Events (CustomEvent, the payload in `detail`):
//   state        { state, reason }   idle | connecting | connected | reconnecting | offline | disconnected | closed
//   subscribed   { channel, recovering, recovered, missed, epoch, offset }
//   publication  { channel, pub, recovered }   in offset order, each offset once
//   join, leave  { channel, info }             info = { user, client }
//   unsubscribed { channel, code, reason }
//   error        { channel, error }            a subscribe that failed

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 5_000;
// How long past the advertised ping interval a silent connection is trusted.
const MAX_PING_DELAY_MS = 10_000;

/** Close codes after which the SDKs do not reconnect (1009: message too big). */
export const isTerminalClose = (code) =>
  (code >= 3500 && code < 4000) || (code >= 4500 && code < 5000) || code === 1009;

/** An error reply of the server: `code`, `temporary` and the server's message. */
export class ReplyError extends Error {
  constructor({ code, message, temporary }) {
    super(`${message} (${code})`);
    this.code = code;
    this.temporary = Boolean(temporary);
  }
}

export class HeraldClient extends EventTarget {
  state = 'idle';
  clientId = null;

  #url;
  #getToken;
  #name;
  #ws = null;
  #nextId = 1;
  #pending = new Map(); // command id -> { resolve, reject }
  #channels = new Map(); // channel -> { offset, epoch, recoverable, buffer }
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #pingMs = 0;
  #pong = false;
  #opening = false;
  #stopped = true;
  #freshToken = false;

  /**
   * `url`: ws(s)://host/connection/websocket. `getToken(fresh)`: resolves with a
   * connection token; `fresh` asks for a new one (the last one expired). An error with
   * `terminal: true` stops the client instead of retrying.
   */
  constructor(url, getToken, { name = 'herald-demo' } = {}) {
    super();
    this.#url = url;
    this.#getToken = getToken;
    this.#name = name;
    window.addEventListener('offline', () => this.#offline());
    window.addEventListener('online', () => this.#online());
  }

  connect() {
    this.#stopped = false;
    this.#attempt = 0;
    this.#open();
  }

  close() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    if (this.#ws) this.#lost('closed by the page', { reconnect: false });
    else this.#setState('closed');
  }

  /** Subscribes now when connected, and again after every reconnect. */
  subscribe(channel) {
    if (this.#channels.has(channel)) return;
    this.#channels.set(channel, { offset: 0, epoch: '', recoverable: false, buffer: null });
    if (this.state === 'connected') this.#subscribe(channel);
  }

  publish(channel, data) {
    return this.#call({ publish: { channel, data } });
  }

  /** Resolves with the channel's presence: { clientId: { user, client } }. */
  async presence(channel) {
    const result = await this.#call({ presence: { channel } });
    return result.presence ?? {};
  }

  // -------------------------------------------------------------------------
  // Connection

  async #open() {
    if (this.#opening || this.#ws || this.#stopped) return;
    clearTimeout(this.#retryTimer);
    if (!navigator.onLine) return this.#setState('offline');
    this.#opening = true;
    this.#setState(this.state === 'idle' || this.state === 'closed' ? 'connecting' : 'reconnecting');
    let token;
    try {
      token = await this.#getToken(this.#freshToken);
      this.#freshToken = false;
    } catch (err) {
      this.#opening = false;
      if (err.terminal) return this.#setState('disconnected', err.message);
      return this.#retry(err.message);
    }
    this.#opening = false;
    // The page may have gone offline or been closed while the token was on its way.
    if (this.#ws || this.#stopped) return;
    if (!navigator.onLine) return this.#setState('offline');

    const ws = new WebSocket(this.#url);
    this.#ws = ws;
    ws.onopen = () => this.#handshake(ws, token);
    ws.onmessage = (event) => this.#receive(event.data);
    ws.onclose = (event) => {
      const reason = `closed with ${event.code}${event.reason ? ` "${event.reason}"` : ''}`;
      this.#lost(reason, { reconnect: !isTerminalClose(event.code) });
    };
  }

  async #handshake(ws, token) {
    let result;
    try {
      result = await this.#request({ connect: { token, name: this.#name } });
    } catch (err) {
      if (ws !== this.#ws) return; // the socket closed; onclose decided already
      if (err.code === 109) this.#freshToken = true; // token expired: fetch a new one
      const retry = err.code === 109 || err.temporary || !(err.code >= 100);
      return this.#lost(`connect refused: ${err.message}`, { reconnect: retry });
    }
    this.#attempt = 0;
    this.clientId = result.client;
    this.#pong = Boolean(result.pong);
    this.#pingMs = (result.ping ?? 0) * 1000;
    this.#alive();
    this.#setState('connected');
    for (const channel of this.#channels.keys()) this.#subscribe(channel);
  }

  /** Forgets the socket, fails its commands, and reconnects unless told not to. */
  #lost(reason, { reconnect }) {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close();
    clearTimeout(this.#pingTimer);
    for (const { reject } of this.#pending.values()) reject(new Error(reason));
    this.#pending.clear();
    for (const ch of this.#channels.values()) ch.buffer = null;

    if (this.#stopped) this.#setState('closed', reason);
    else if (!navigator.onLine) this.#setState('offline', reason);
    else if (!reconnect) this.#setState('disconnected', reason);
    else this.#retry(reason);
  }

  #retry(reason) {
    const base = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.#attempt);
    const delay = Math.min(MAX_BACKOFF_MS, base * (1 + Math.random() / 2));
    this.#attempt += 1;
    this.#setState('reconnecting', reason);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  #offline() {
    clearTimeout(this.#retryTimer);
    if (this.#ws) this.#lost('the browser went offline', { reconnect: true });
    else if (!this.#stopped && this.state !== 'disconnected') this.#setState('offline');
  }

  #online() {
    if (this.#stopped || this.state === 'disconnected') return;
    this.#attempt = 0;
    this.#open();
  }

  /** Re-arms the watchdog: a server that stops pinging is a dead connection. */
  #alive() {
    clearTimeout(this.#pingTimer);
    if (!this.#pingMs) return;
    this.#pingTimer = setTimeout(
      () => this.#lost('no ping from the server', { reconnect: true }),
      this.#pingMs + MAX_PING_DELAY_MS,
    );
  }

  #setState(state, reason = '') {
    if (state === this.state && !reason) return;
    this.state = state;
    this.#emit('state', { state, reason });
  }

  // -------------------------------------------------------------------------
  // Frames

  #request(body) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    const id = this.#nextId++;
    ws.send(JSON.stringify({ id, ...body }));
    return new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
  }

  #call(body) {
    if (this.state !== 'connected') return Promise.reject(new Error(`not connected (${this.state})`));
    return this.#request(body);
  }

  // One message may carry several replies, one JSON object per line.
  #receive(text) {
    this.#alive();
    for (const line of String(text).split('\n')) {
      if (!line.trim()) continue;
      let reply;
      try {
        reply = JSON.parse(line);
      } catch {
        console.warn('herald: unparsable line from the server', line);
        continue;
      }
      this.#reply(reply);
    }
  }

  #reply(reply) {
    if (reply.id) {
      const waiter = this.#pending.get(reply.id);
      if (!waiter) return;
      this.#pending.delete(reply.id);
      if (reply.error) return waiter.reject(new ReplyError(reply.error));
      const key = Object.keys(reply).find((k) => k !== 'id');
      return waiter.resolve(key ? reply[key] : {});
    }
    if (reply.push) return this.#push(reply.push);
    // An empty object is the server's ping; the pong is an empty command.
    if (Object.keys(reply).length === 0 && this.#pong) this.#ws?.send('{}');
  }

  #push(push) {
    const { channel } = push;
    if (push.disconnect) {
      const { code, reason } = push.disconnect;
      return this.#lost(`disconnected with ${code} "${reason}"`, { reconnect: !isTerminalClose(code) });
    }
    const ch = this.#channels.get(channel);
    if (!ch) return;
    // While a subscribe is in flight its reply comes first: keep the pushes until then.
    if (ch.buffer) return ch.buffer.push(push);
    if (push.pub) this.#deliver(channel, ch, push.pub, false);
    else if (push.join) this.#emit('join', { channel, info: push.join.info });
    else if (push.leave) this.#emit('leave', { channel, info: push.leave.info });
    else if (push.unsubscribe) {
      const { code, reason } = push.unsubscribe;
      // 2500-2999: the server asks for a resubscribe (e.g. a gap in the stream).
      if (code >= 2500) this.#subscribe(channel);
      else {
        this.#channels.delete(channel);
        this.#emit('unsubscribed', { channel, code, reason });
      }
    }
  }

  /** Hands a publication to the page once: an offset already seen is dropped. */
  #deliver(channel, ch, pub, recovered) {
    if (typeof pub.offset === 'number') {
      if (pub.offset <= ch.offset) return false;
      ch.offset = pub.offset;
    }
    this.#emit('publication', { channel, pub, recovered });
    return true;
  }

  async #subscribe(channel) {
    const ch = this.#channels.get(channel);
    if (!ch) return;
    const request = { channel, join_leave: true };
    if (ch.recoverable) Object.assign(request, { recover: true, offset: ch.offset, epoch: ch.epoch });
    ch.buffer = [];
    let result;
    try {
      result = await this.#call({ subscribe: request });
    } catch (error) {
      ch.buffer = null;
      if (error instanceof ReplyError) this.#emit('error', { channel, error });
      return;
    }
    const buffered = ch.buffer ?? [];
    ch.buffer = null;
    // A recovered result keeps the requested offset; the publications advance it.
    if (!result.recovered || result.epoch !== ch.epoch) ch.offset = result.offset ?? 0;
    ch.epoch = result.epoch ?? '';
    ch.recoverable = Boolean(result.recoverable);
    let missed = 0;
    for (const pub of result.recovered ? result.publications ?? [] : []) {
      if (this.#deliver(channel, ch, pub, true)) missed += 1;
    }
    this.#emit('subscribed', {
      channel,
      recovering: Boolean(result.was_recovering),
      recovered: Boolean(result.recovered),
      missed,
      epoch: ch.epoch,
      offset: ch.offset,
    });
    for (const push of buffered) this.#push(push);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
