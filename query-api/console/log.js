// The log: search by time, type, actor, correlation id and category with keyset paging, a live
// tail from the log subscription, and any event opened with its data, metadata and hashes.

import { api, describe, follow, query } from './api.js';
import { clear, el, facts, field, guard, hideMessage, json, table, tableRow, time, showError } from './ui.js';

const CATEGORIES = ['', 'customer', 'merchant', 'product', 'order'];
const LIVE_ROWS = 200;

export const eventColumns = [
  ['position', (e) => String(e.position)],
  ['recorded', (e) => time(e.metadata.recorded_at)],
  ['type', (e) => e.type],
  ['stream', (e) => el('a', { href: `#/stream/${e.category}/${e.stream_id}/${e.version}`, class: 'mono' }, `${e.category}/${e.stream_id}`)],
  ['version', (e) => String(e.version)],
  ['actor', (e) => `${e.metadata.actor.role} ${e.metadata.actor.id}`],
];

/** The detail of one event: data, metadata, hash and previous hash. */
export function eventDetail(e) {
  return el('div', { class: 'panel', id: 'event-detail' },
    el('h2', {}, `${e.type} · ${e.category}/${e.stream_id} v${e.version}`),
    facts([
      ['position', String(e.position)],
      ['schema version', String(e.schema_version)],
      ['hash', el('span', { class: 'mono', id: 'detail-hash' }, e.hash)],
      ['previous hash', el('span', { class: 'mono', id: 'detail-prev-hash' }, e.prev_hash || '(none: first event)')],
      ['correlation id', el('a', { href: `#/log/correlation/${e.metadata.correlation_id}`, class: 'mono' }, e.metadata.correlation_id)],
      ['stream', el('a', { href: `#/stream/${e.category}/${e.stream_id}/${e.version}` }, 'open the stream')],
    ]),
    el('h2', {}, 'data'), json(e.data),
    el('h2', {}, 'metadata'), json(e.metadata));
}

export function logView({ root, args }) {
  const inputs = {
    from: el('input', { type: 'datetime-local', id: 'search-from', step: '1' }),
    to: el('input', { type: 'datetime-local', id: 'search-to', step: '1' }),
    type: el('input', { id: 'search-type', placeholder: 'OrderPlaced' }),
    actor: el('input', { id: 'search-actor', class: 'wide', placeholder: 'actor id' }),
    correlation_id: el('input', { id: 'search-correlation', class: 'wide', placeholder: 'correlation id' }),
    category: el('select', { id: 'search-category' }, CATEGORIES.map((c) => el('option', { value: c }, c || 'any'))),
  };
  if (args[0] === 'correlation' && args[1]) inputs.correlation_id.value = args[1];
  const results = el('div', { id: 'search-results' });
  const more = el('button', { type: 'button', class: 'secondary', id: 'search-more', hidden: true }, 'Next page');
  const detail = el('div', { id: 'detail-slot' });
  const liveBody = el('tbody');
  const liveState = el('span', { class: 'badge', id: 'live-state' }, 'off');
  const liveButton = el('button', { type: 'button', id: 'live-toggle', class: 'secondary' }, 'Follow live');
  let cursor = null;
  let stop = null;

  const params = () => ({
    from: inputs.from.value ? new Date(inputs.from.value).toISOString() : '',
    to: inputs.to.value ? new Date(inputs.to.value).toISOString() : '',
    type: inputs.type.value,
    actor: inputs.actor.value,
    correlation_id: inputs.correlation_id.value,
    category: inputs.category.value,
  });
  const pick = (e) => clear(detail).append(eventDetail(e));

  async function search(next) {
    hideMessage();
    await guard(async () => {
      const page = await api(`/v1/audit/events${query({ ...params(), limit: 50, cursor: next ? cursor : '' })}`);
      if (!next) clear(results).append(table(eventColumns, [], { id: 'search-table', empty: '' }));
      const body = results.querySelector('tbody');
      if (!next) clear(body);
      if (!next && !page.items.length) body.append(el('tr', {}, el('td', { colspan: eventColumns.length, class: 'muted' }, 'no matching event')));
      for (const e of page.items) body.append(tableRow(eventColumns, e, pick));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    });
  }

  function toggleLive() {
    if (stop) {
      stop();
      stop = null;
      liveButton.textContent = 'Follow live';
      return;
    }
    const p = params();
    liveButton.textContent = 'Stop';
    stop = follow({ from: 'now', category: p.category, type: p.type }, {
      onEvent: (e) => {
        const tr = tableRow(eventColumns, e, pick);
        tr.dataset.type = e.type;
        tr.dataset.stream = e.stream_id;
        liveBody.prepend(tr);
        while (liveBody.children.length > LIVE_ROWS) liveBody.lastChild.remove();
      },
      onState: (s, err) => {
        liveState.textContent = s;
        liveState.className = s === 'live' ? 'badge live' : 'badge';
        if (s === 'refused') {
          showError(describe(err));
          stop = null;
          liveButton.textContent = 'Follow live';
        }
      },
    });
  }

  root.append(
    el('h1', {}, 'Log'),
    el('form', { class: 'bar', id: 'search-form', onsubmit: (ev) => { ev.preventDefault(); search(false); } },
      field('from', inputs.from), field('to', inputs.to), field('type', inputs.type), field('category', inputs.category),
      field('actor', inputs.actor), field('correlation id', inputs.correlation_id),
      el('button', { type: 'submit', id: 'search-button' }, 'Search')),
    el('div', { class: 'grid' },
      el('div', {},
        results, more,
        el('h2', {}, 'Live ', liveState, ' ', liveButton),
        el('p', { class: 'muted' }, 'New events as they commit, filtered by the category and type above.'),
        el('table', { id: 'live-table' }, el('thead', {}, el('tr', {}, eventColumns.map(([t]) => el('th', {}, t)))), liveBody)),
      detail));
  more.addEventListener('click', () => search(true));
  liveButton.addEventListener('click', toggleLive);
  search(false);
  return () => stop && stop();
}
