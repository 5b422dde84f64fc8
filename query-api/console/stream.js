// One stream: its history, its state as the aggregate folds it as of a version or a time, a
// diff between two versions, its digest, and its hash chain verified in this browser.

import { api, query } from './api.js';
import { verifyStream } from './chain.js';
import { eventColumns, eventDetail } from './log.js';
import { clear, el, facts, field, guard, json, table } from './ui.js';

const CATEGORIES = ['order', 'product', 'customer', 'merchant'];

/** Paths whose values differ between `a` and `b`: [{path, before, after}]. */
export function diff(a, b, path = '') {
  const same = JSON.stringify(a) === JSON.stringify(b);
  if (same) return [];
  const objects = a && b && typeof a === 'object' && typeof b === 'object' && Array.isArray(a) === Array.isArray(b);
  if (!objects) return [{ path: path || '(whole state)', before: a, after: b }];
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  return keys.flatMap((k) => diff(a[k], b[k], Array.isArray(a) ? `${path}[${k}]` : path ? `${path}.${k}` : k));
}

export function streamView({ root, args }) {
  const category = el('select', { id: 'stream-category' }, CATEGORIES.map((c) => el('option', { value: c }, c)));
  const id = el('input', { id: 'stream-id', class: 'wide', placeholder: 'stream id (UUID)' });
  const out = el('div', { id: 'stream-out' });
  if (args[0]) category.value = args[0];
  if (args[1]) id.value = args[1];
  root.append(
    el('h1', {}, 'Stream'),
    el('form', { class: 'bar', id: 'stream-form', onsubmit: (e) => { e.preventDefault(); location.hash = `#/stream/${category.value}/${id.value.trim()}`; } },
      field('category', category), field('id', id), el('button', { type: 'submit', id: 'stream-load' }, 'Open')),
    out);
  if (args[0] && args[1]) load(out, args[0], args[1], args[2] ? Number(args[2]) : null);
}

async function load(out, category, id, version) {
  const base = `/v1/audit/streams/${encodeURIComponent(category)}/${encodeURIComponent(id)}`;
  await guard(async () => {
    // The digest first, then the events up to it: an event appended meanwhile is not half-seen.
    const digest = await api(`${base}/digest`);
    const { events } = await api(`${base}/events${query({ to_version: digest.version })}`);
    const detail = el('div', { id: 'stream-detail' });
    const pick = (e) => clear(detail).append(eventDetail(e));
    const columns = eventColumns.filter(([title]) => title !== 'stream');
    const history = table(columns, events, { onPick: pick, id: 'history-table' });
    clear(out).append(
      el('div', { class: 'grid' },
        el('div', {},
          el('div', { class: 'panel' }, el('h2', {}, 'Digest'),
            facts([['version', el('span', { id: 'digest-version' }, String(digest.version))],
              ['head hash', el('span', { class: 'mono', id: 'digest-hash' }, digest.head_hash)]]),
            verifier(base, digest)),
          el('h2', {}, `History (${events.length} events)`), history,
          asOf(base, digest.version), differ(base, digest.version)),
        detail));
    const row = version ? events.findIndex((e) => e.version === version) : -1;
    if (row >= 0) history.querySelectorAll('tbody tr')[row].click();
  });
}

// The history shows personal fields revealed; the hashes cover them as stored (sealed), so the
// verifier reads the same versions again as stored.
function verifier(base, digest) {
  const result = el('div', { id: 'verify-result' });
  const button = el('button', { type: 'button', id: 'verify-button' }, 'Verify the chain in this browser');
  button.addEventListener('click', () => guard(async () => {
    clear(result).append(el('span', { class: 'muted' }, 'verifying…'));
    const { events } = await api(`${base}/events${query({ to_version: digest.version, personal: 'stored' })}`);
    const report = await verifyStream(events, digest);
    clear(result);
    if (report.ok) {
      result.append(el('p', { class: 'ok', id: 'verify-verdict' }, `Chain intact: ${report.checked} events recomputed with Web Crypto; the head matches the digest.`));
    } else {
      const first = report.broken[0];
      result.append(
        el('p', { class: 'bad', id: 'verify-verdict' }, `Chain broken at version ${first.version} (${first.problem.replace(/_/g, ' ')})`),
        el('ul', { id: 'verify-broken' }, report.broken.map((b) => el('li', { dataset: { version: String(b.version) } }, `version ${b.version}: ${b.detail}`))));
    }
    result.dataset.ok = String(report.ok);
  }));
  return el('div', {}, button, result);
}

function asOf(base, head) {
  const mode = el('select', { id: 'asof-mode' }, el('option', { value: 'version' }, 'version'), el('option', { value: 'at' }, 'time'));
  const version = el('input', { id: 'asof-version', type: 'number', min: '0', value: String(head) });
  const at = el('input', { id: 'asof-time', type: 'datetime-local', step: '1' });
  const out = el('div', { id: 'asof-state' });
  const show = () => guard(async () => {
    const q = mode.value === 'version' ? { version: version.value } : { at: at.value ? new Date(at.value).toISOString() : '' };
    const answer = await api(`${base}/state${query(q)}`);
    clear(out).append(el('p', { class: 'muted' }, `as of version ${answer.version}${answer.recorded_at ? ` (${answer.recorded_at})` : ''}`), json(answer.state));
  });
  return el('div', { class: 'panel' }, el('h2', {}, 'State as of'),
    el('form', { class: 'bar', onsubmit: (e) => { e.preventDefault(); show(); } },
      field('by', mode), field('version', version), field('time', at), el('button', { type: 'submit', id: 'asof-button' }, 'Fold')),
    out);
}

function differ(base, head) {
  const from = el('input', { id: 'diff-from', type: 'number', min: '0', value: String(Math.max(head - 1, 0)) });
  const to = el('input', { id: 'diff-to', type: 'number', min: '0', value: String(head) });
  const out = el('div', { id: 'diff-out' });
  const show = () => guard(async () => {
    const [a, b] = await Promise.all([api(`${base}/state${query({ version: from.value })}`), api(`${base}/state${query({ version: to.value })}`)]);
    const changes = diff(a.state, b.state);
    clear(out).append(table([
      ['field', (c) => el('span', { class: 'mono' }, c.path)],
      [`version ${a.version}`, (c) => el('span', { class: 'mono' }, JSON.stringify(c.before) ?? '(absent)')],
      [`version ${b.version}`, (c) => el('span', { class: 'mono' }, JSON.stringify(c.after) ?? '(absent)')],
    ], changes, { id: 'diff-table', empty: 'no difference' }));
  });
  return el('div', { class: 'panel' }, el('h2', {}, 'Diff between versions'),
    el('form', { class: 'bar', onsubmit: (e) => { e.preventDefault(); show(); } },
      field('from', from), field('to', to), el('button', { type: 'submit', id: 'diff-button' }, 'Compare')),
    out);
}
