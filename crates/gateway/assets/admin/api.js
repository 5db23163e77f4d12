// The console's HTTP calls (docs: the console contract). Every URL is relative, so the
// console works under any admin.path. The CSRF token from login or ./session goes with
// every state-changing request; the session cookie itself is HttpOnly and never seen here.

/** A refusal: any answer other than 200/204, with the server's `reason` and `message`. */
export class Refusal extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.name = 'Refusal';
    this.status = status;
    this.reason = body.reason || 'http_error';
    this.body = body;
  }
}

let csrfToken = null;
let unauthorizedHandler = () => {};

/** Remembers the CSRF token of the current session (null when logged out). */
export function setCsrf(token) {
  csrfToken = token || null;
}

/** Called with the Refusal whenever a call answers 401 (not logged in, session expired). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** GET ./session: the session, or a Refusal (401 carries token_auth, password_auth, insecure). */
export function session() {
  return request('GET', './session', undefined, { notifyUnauthorized: false });
}

/** POST ./login with {password} or {token}. */
export function login(credentials) {
  return request('POST', './login', credentials, { notifyUnauthorized: false });
}

/** POST ./logout. */
export function logout() {
  return request('POST', './logout', {}, { notifyUnauthorized: false });
}

/** GET ./keys: key ids and states, never key material. */
export function keys() {
  return request('GET', './keys');
}

/**
 * POST ./api/<method> with the server API's params. Resolves with what the server API
 * answers ({result} or {error}); rejects with a Refusal when the console refuses.
 */
export function call(method, params = {}) {
  return request('POST', `./api/${encodeURIComponent(method)}`, params);
}

/** A human sentence for a failed call (a Refusal, a network error or an API error). */
export function describeFailure(err) {
  if (err instanceof Refusal) {
    const text = REFUSAL_TEXT[err.reason];
    if (err.reason === 'too_many_attempts') {
      const wait = err.body.retry_after ? ` Try again in ${err.body.retry_after} s.` : '';
      return `Too many failed login attempts.${wait}`;
    }
    return text ? `${text} (HTTP ${err.status})` : `Refused (HTTP ${err.status}, ${err.reason}): ${err.message}`;
  }
  if (err && err.apiError) return `Error ${err.apiError.code}: ${err.apiError.message}`;
  return `The request failed: ${err && err.message ? err.message : err}`;
}

/** Unwraps a server API answer: its `result`, or throws with `apiError` set. */
export function resultOf(answer) {
  if (answer && answer.error) {
    const err = new Error(answer.error.message);
    err.apiError = answer.error;
    throw err;
  }
  return (answer && answer.result) || {};
}

const REFUSAL_TEXT = {
  invalid_credentials: 'Wrong password or token.',
  unauthorized: 'Not logged in.',
  session_expired: 'Your session expired. Log in again.',
  cross_origin: 'Refused: the request came from another origin.',
  csrf: 'Refused: the CSRF token is missing or wrong. Reload the page.',
  content_type: 'Refused: the request was not JSON.',
  too_large: 'Refused: the request is larger than 64 KiB.',
  invalid_json: 'Refused: the request body is not valid JSON.',
  bad_request: 'Refused: bad request.',
  unknown_method: 'Refused: unknown API method.',
  too_many_requests: 'Too many actions per second: slow down.',
};

async function request(method, url, body, { notifyUnauthorized = true } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (method !== 'GET') {
    init.headers['Content-Type'] = 'application/json';
    if (csrfToken) init.headers['X-CSRF-Token'] = csrfToken;
    init.body = JSON.stringify(body ?? {});
  }
  const res = await fetch(url, init);
  if (res.status === 204) return {};
  const text = await res.text();
  let parsed = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { message: text.slice(0, 200) };
  }
  if (res.ok) return parsed;
  const refusal = new Refusal(res.status, parsed);
  if (res.status === 401 && notifyUnauthorized) unauthorizedHandler(refusal);
  throw refusal;
}
