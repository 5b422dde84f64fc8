// The console's shell: sign-in, the signed-in principal, navigation between views.

import { api, describe, onSignedOut, setToken, token } from './api.js';
import { clear, hideMessage, showError } from './ui.js';
import { logView } from './log.js';
import { streamView } from './stream.js';
import { operationsView } from './operations.js';
import { ordersView } from './orders.js';

/** Views per role: the server refuses the rest anyway; this only avoids offering them. */
const VIEWS = {
  admin: ['log', 'stream', 'operations', 'orders'],
  auditor: ['log', 'stream', 'operations', 'orders'],
  customer: ['orders'],
  merchant: ['orders'],
};

const state = { session: null, cleanup: null };

// Never show a stack trace: anything unexpected becomes one readable sentence.
window.addEventListener('error', (e) => {
  e.preventDefault();
  showError(describe(e.error));
});
window.addEventListener('unhandledrejection', (e) => {
  e.preventDefault();
  showError(describe(e.reason));
});

onSignedOut((err) => signOut(describe(err)));

function signOut(reason) {
  setToken(null);
  state.session = null;
  leaveView();
  document.getElementById('nav').hidden = true;
  document.getElementById('sign-out').hidden = true;
  document.getElementById('who').textContent = '';
  document.getElementById('sign-in').hidden = false;
  if (reason) showError(reason);
}

function leaveView() {
  if (state.cleanup) state.cleanup();
  state.cleanup = null;
  clear(document.getElementById('view'));
}

async function signIn(raw) {
  const value = (raw || '').trim().replace(/^bearer\s+/i, '');
  if (!value) {
    showError('Paste a token first.');
    return;
  }
  setToken(value);
  try {
    state.session = await api('/v1/session');
  } catch (e) {
    signOut(describe(e));
    return;
  }
  hideMessage();
  document.getElementById('sign-in').hidden = true;
  document.getElementById('token').value = '';
  document.getElementById('who').textContent = `${state.session.role} ${state.session.sub}`;
  document.getElementById('sign-out').hidden = false;
  const nav = document.getElementById('nav');
  const allowed = VIEWS[state.session.role] || [];
  nav.querySelectorAll('a').forEach((a) => {
    a.hidden = !allowed.includes(a.dataset.view);
  });
  nav.hidden = false;
  route();
}

function route() {
  if (!state.session) return;
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const allowed = VIEWS[state.session.role] || [];
  const view = allowed.includes(name) ? name : allowed[0];
  document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('active', a.dataset.view === view));
  leaveView();
  hideMessage();
  const root = document.getElementById('view');
  const ctx = { session: state.session, args: rest.map(decodeURIComponent), root };
  const views = { log: logView, stream: streamView, operations: operationsView, orders: ordersView };
  state.cleanup = views[view](ctx) || null;
}

/**
 * A link may carry the token in its fragment (`#token=...`, never sent to the server): sign in
 * with it, then drop it from the address bar and the history.
 */
function tokenFromLink() {
  const fromLink = /^#token=([^&]+)/.exec(location.hash);
  if (!fromLink) return false;
  history.replaceState(null, '', location.pathname);
  signIn(decodeURIComponent(fromLink[1]));
  return true;
}

function start() {
  document.getElementById('sign-in-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn(document.getElementById('token').value);
  });
  document.getElementById('sign-out').addEventListener('click', () => {
    signOut(null);
    history.replaceState(null, '', location.pathname);
  });
  window.addEventListener('hashchange', () => {
    if (!tokenFromLink()) route();
  });
  if (tokenFromLink()) return;
  if (token()) {
    signIn(token());
  } else {
    signOut(null);
  }
}

start();

