// Projections: checkpoint, lag, dead letters with their errors, parked streams (with a retry
// button for admins), and the relay's leader, its lag and who holds the log's writer lock.

import { api, query } from './api.js';
import { clear, el, facts, guard, showInfo, table, time } from './ui.js';

export function operationsView({ root, session }) {
  const projections = el('div', { id: 'projections' });
  const relay = el('div', { id: 'relay' });
  const parked = el('div', { id: 'parked' });
  const dead = el('div', { id: 'dead-letters' });
  const refresh = el('button', { type: 'button', class: 'secondary', id: 'operations-refresh' }, 'Refresh');
  root.append(
    el('h1', {}, 'Projections ', refresh),
    projections,
    el('div', { class: 'grid' },
      el('div', {}, el('h2', {}, 'Parked streams'), parked, el('h2', {}, 'Dead letters'), dead),
      el('div', {}, el('h2', {}, 'Relay and log'), relay)));
  const load = () => Promise.all([
    guard(() => loadProjections(projections)),
    guard(() => loadRelay(relay)),
    guard(() => loadParked(parked, session, load)),
    guard(() => loadDeadLetters(dead)),
  ]);
  refresh.addEventListener('click', load);
  load();
}

async function loadProjections(out) {
  const { projections } = await api('/v1/projections');
  clear(out).append(table([
    ['projection', (p) => p.name],
    ['status', (p) => el('span', { class: p.status === 'ok' ? 'ok' : 'bad' }, p.status)],
    ['checkpoint (position)', (p) => String(p.last_position)],
    ['applied', (p) => String(p.events_applied)],
    ['lag (events)', (p) => String(p.lag_events)],
    ['lag (seconds)', (p) => p.lag_seconds.toFixed(1)],
    ['dead letters', (p) => String(p.dead_letters)],
    ['parked', (p) => String(p.parked_streams)],
    ['last applied', (p) => time(p.last_applied_at)],
  ], projections, { id: 'projections-table' }));
}

async function loadRelay(out) {
  const s = await api('/v1/log/status');
  const leader = s.relay.leader;
  clear(out).append(el('div', { class: 'panel' }, facts([
    ['log head (position)', String(s.head.position)],
    ['relay', s.relay.name],
    ['leader', el('span', { id: 'relay-leader' }, leader ? `pid ${leader.pid}${leader.client_addr ? ` at ${leader.client_addr}` : ''}, since ${time(leader.since)}` : 'none: no relay holds the lock')],
    ['relay lag', el('span', { id: 'relay-lag' }, `${s.relay.lag_events} events, ${s.relay.lag_seconds.toFixed(1)} s`)],
    ['writer lock', el('span', { id: 'writer-lock' }, s.writer_lock ? `held by pid ${s.writer_lock.pid} (${s.writer_lock.application_name}, ${s.writer_lock.state}) for ${s.writer_lock.held_seconds.toFixed(1)} s` : 'free')],
  ])));
}

async function loadParked(out, session, reload) {
  const page = await api(`/v1/projections/parked${query({ limit: 200 })}`);
  const columns = [
    ['projection', (p) => p.projection],
    ['stream', (p) => el('a', { href: `#/stream/${p.category}/${p.stream_id}`, class: 'mono' }, `${p.category}/${p.stream_id}`)],
    ['reason', (p) => p.reason],
    ['parked', (p) => time(p.parked_at)],
  ];
  // Only an admin is offered the button; the endpoint refuses everyone else regardless.
  if (session.role === 'admin') {
    columns.push(['', (p) => el('button', {
      type: 'button', class: 'retry', dataset: { stream: p.stream_id, projection: p.projection },
      onclick: (e) => retry(e.target, p, reload),
    }, 'Retry')]);
  }
  clear(out).append(table(columns, page.items, { id: 'parked-table', empty: 'no parked stream' }));
  if (session.role !== 'admin' && page.items.length) out.append(el('p', { class: 'muted' }, 'Retrying a parked stream needs an admin.'));
}

async function retry(button, p, reload) {
  button.disabled = true;
  await guard(async () => {
    const answer = await api('/v1/projections/parked/retry', {
      method: 'POST',
      body: { projection: p.projection, category: p.category, stream_id: p.stream_id },
    });
    const o = answer.outcomes[0];
    if (!o) showInfo(`${p.projection} ${p.category}/${p.stream_id} was no longer parked.`);
    else if (o.unparked) showInfo(`${o.projection} ${o.category}/${o.stream_id}: unparked, ${o.applied} events applied.`);
    else showInfo(`${o.projection} ${o.category}/${o.stream_id}: still parked: ${o.error}`);
  });
  button.disabled = false;
  await reload();
}

async function loadDeadLetters(out) {
  const page = await api(`/v1/projections/dead-letters${query({ limit: 100 })}`);
  clear(out).append(table([
    ['id', (d) => String(d.id)],
    ['projection', (d) => d.projection],
    ['kind', (d) => d.kind],
    ['stream', (d) => (d.stream_id ? `${d.category}/${d.stream_id}${d.version ? ` v${d.version}` : ''}` : '')],
    ['error', (d) => el('span', { class: 'mono' }, d.error)],
    ['at', (d) => time(d.created_at)],
  ], page.items, { id: 'dead-letters-table', empty: 'no open dead letter' }));
}
