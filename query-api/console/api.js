// Calls to the query API with the signed-in token, problem+json turned into readable errors,
// and the live log subscription (server-sent events read with fetch, so the token travels in
// the Authorization header and never in a URL).

const KEY = 'ordo.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** An answer that was not 2xx, with its problem document (RFC 9457) when it had one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `status ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Listeners told when the server refuses the token (401), so the page can ask for a new one. */
const signedOutListeners = [];
export function onSignedOut(fn) {
  signedOutListeners.push(fn);
}

async function problemOf(resp) {
  const type = resp.headers.get('content-type') || '';
  if (type.includes('json')) {
    try {
      return await resp.json();
    } catch (_) {
      // fall through to a generic description
    }
  }
  return { title: resp.statusText || 'Error', status: resp.status, detail: `the server answered ${resp.status}` };
}

/** GET (or another method with a JSON body) on this origin; resolves to the parsed JSON. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Unreachable', detail: 'the query API could not be reached' });
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, await problemOf(resp));
    if (resp.status === 401) signedOutListeners.forEach((fn) => fn(err));
    throw err;
  }
  if (resp.status === 204) return null;
  return resp.json();
}

/** A readable sentence for an error, with every offending field; never a stack trace. */
export function describe(err) {
  if (err instanceof ApiError) {
    const p = err.problem || {};
    const head = err.status ? `${p.title || 'Error'} (${err.status})` : p.title || 'Error';
    let text = `${head}: ${p.detail || 'the request failed'}`;
    if (Array.isArray(p.errors) && p.errors.length) {
      text += '\n' + p.errors.map((f) => `• ${f.field}: ${f.message}`).join('\n');
    }
    if (err.status === 401) text += '\nSign in again with a valid token.';
    return text;
  }
  if (err && err.unverifiable) return err.message;
  return 'Something went wrong in the page. Reload it and try again.';
}

/** Query string of the non-empty values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && String(v).trim() !== '') q.set(k, String(v).trim());
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Follows `/v1/log/events` with `params` (filters and `from`). Calls `onEvent(envelope)` for
 * each event and `onState(state, detail)` with `connecting`, `live`, `reconnecting`, `refused` or
 * `stopped`. Reconnects with `Last-Event-ID`, so nothing is missed or repeated. Returns `stop()`.
 */
export function follow(params, { onEvent, onState }) {
  let lastId = null;
  let stopped = false;
  let controller = null;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function run() {
    let delay = 500;
    onState('connecting');
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${token()}` };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const resp = await fetch(`/v1/log/events${query(params)}`, { headers, signal: controller.signal, cache: 'no-store' });
        if (!resp.ok) {
          const err = new ApiError(resp.status, await problemOf(resp));
          if (resp.status === 401) signedOutListeners.forEach((fn) => fn(err));
          if (resp.status !== 503) {
            onState('refused', err);
            return;
          }
          throw err;
        }
        onState('live');
        delay = 500;
        await read(resp.body, (id, data) => {
          if (id !== null) lastId = id;
          if (data !== null) onEvent(JSON.parse(data));
        });
      } catch (e) {
        if (stopped) break;
      }
      if (stopped) break;
      onState('reconnecting');
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
    onState('stopped');
  }

  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}

/** Parses a text/event-stream body: `onMessage(id, data)` per message (data null when id-only). */
async function read(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let id = null;
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (id !== null || data.length) onMessage(id, data.length ? data.join('\n') : null);
        id = null;
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'id') id = val;
      }
    }
  }
}
