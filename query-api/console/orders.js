// Orders: an order's timeline (placed, reservations, confirmation or rejection with reasons,
// payment, shipment, delivery), each step linked to its events for auditors and admins and
// kept live by the log subscription; a customer's or merchant's own orders; daily sales.

import { api, describe, follow, query } from './api.js';
import { clear, el, facts, field, guard, money, showError, table, time } from './ui.js';

const STEPS = [
  ['placed', 'Placed', ['OrderPlaced']],
  ['reserved', 'Stock reserved', ['StockReserved', 'StockReservationReleased', 'ReservedStockCommitted']],
  ['confirmed', 'Confirmed', ['OrderConfirmed']],
  ['rejected', 'Rejected', ['OrderRejected']],
  ['paid', 'Paid', ['OrderPaid']],
  ['shipped', 'Shipped', ['OrderShipped']],
  ['delivered', 'Delivered', ['OrderDelivered']],
  ['cancelled', 'Cancelled', ['OrderCancelled']],
];

export function ordersView({ root, args, session }) {
  if (args[0]) return orderPage(root, args[0], session);
  root.append(el('h1', {}, 'Orders'));
  const open = el('input', { id: 'order-id', class: 'wide', placeholder: 'order id' });
  root.append(el('form', { class: 'bar', onsubmit: (e) => { e.preventDefault(); location.hash = `#/orders/${open.value.trim()}`; } },
    field('order', open), el('button', { type: 'submit', id: 'order-open' }, 'Open')));
  if (session.role === 'customer') ownOrders(root, `/v1/customers/${session.sub}/orders`);
  if (session.role === 'merchant') {
    sales(root, session.sub);
    ownOrders(root, `/v1/merchants/${session.sub}/orders`);
  }
  if (session.role === 'admin') {
    const merchant = el('input', { id: 'merchant-id', class: 'wide', placeholder: 'merchant id' });
    const slot = el('div');
    root.append(el('form', { class: 'bar', onsubmit: (e) => { e.preventDefault(); clear(slot); sales(slot, merchant.value.trim()); ownOrders(slot, `/v1/merchants/${merchant.value.trim()}/orders`); } },
      field('merchant', merchant), el('button', { type: 'submit', id: 'merchant-open' }, 'Sales and orders')), slot);
  }
  return null;
}

function ownOrders(root, path) {
  const out = el('div', { id: 'order-list' });
  root.append(el('h2', {}, 'Orders'), out);
  guard(async () => {
    const page = await api(`${path}${query({ limit: 50 })}`);
    out.append(table([
      ['placed', (o) => time(o.placed_at)],
      ['order', (o) => el('a', { href: `#/orders/${o.id}`, class: 'mono' }, o.id)],
      ['status', (o) => o.status],
      ['total', (o) => money(o.total)],
    ], page.items, { empty: 'no order yet' }));
  });
}

function sales(root, merchant) {
  const out = el('div', { id: 'sales' });
  root.append(el('h2', {}, 'Daily sales (last 30 days)'), out);
  guard(async () => {
    const s = await api(`/v1/merchants/${encodeURIComponent(merchant)}/sales`);
    out.append(chart(s));
  });
}

/** Bars of each day's revenue in the merchant's main currency, with the order count above. */
function chart(s) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs, text) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const counts = {};
  s.days.forEach((d) => d.revenue.forEach((r) => { counts[r.currency] = (counts[r.currency] || 0) + 1; }));
  const currency = Object.keys(counts).sort((a, b) => counts[b] - counts[a])[0];
  const start = new Date(`${s.from}T00:00:00Z`);
  const days = Math.round((new Date(`${s.to}T00:00:00Z`) - start) / 86400000) + 1;
  const byDate = Object.fromEntries(s.days.map((d) => [d.date, d]));
  const values = Array.from({ length: days }, (_, i) => {
    const date = new Date(start.getTime() + i * 86400000).toISOString().slice(0, 10);
    const d = byDate[date];
    const r = d && d.revenue.find((x) => x.currency === currency);
    return { date, orders: d ? d.orders : 0, minor: r ? r.amount_minor : 0 };
  });
  const W = 640, H = 180, pad = 24, bw = (W - 2 * pad) / Math.max(days, 1);
  const max = Math.max(1, ...values.map((v) => v.minor));
  const root = svg('svg', { class: 'chart', id: 'sales-chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img' });
  root.append(svg('title', {}, `daily revenue in ${currency || 'no currency'}`));
  values.forEach((v, i) => {
    const h = ((H - 2 * pad) * v.minor) / max;
    const x = pad + i * bw;
    const bar = svg('rect', { x: x + 1, y: H - pad - h, width: Math.max(bw - 2, 1), height: h, 'data-date': v.date });
    bar.append(svg('title', {}, `${v.date}: ${v.orders} orders, ${(v.minor / 100).toFixed(2)} ${currency || ''}`));
    root.append(bar);
    if (v.orders) root.append(svg('text', { x: x + bw / 2, y: H - pad - h - 3, 'text-anchor': 'middle' }, String(v.orders)));
  });
  root.append(svg('text', { x: pad, y: H - 6 }, s.from), svg('text', { x: W - pad, y: H - 6, 'text-anchor': 'end' }, s.to));
  root.append(svg('text', { x: pad, y: 14 }, `max ${(max / 100).toFixed(2)} ${currency || ''}`));
  return root;
}

function orderPage(root, id, session) {
  const summary = el('div', { id: 'order-summary' });
  const timeline = el('ol', { class: 'timeline', id: 'timeline' });
  const live = el('span', { class: 'badge', id: 'order-live' }, 'not live');
  root.append(el('h1', {}, 'Order ', el('span', { class: 'mono' }, id), ' ', live), summary, el('h2', {}, 'Timeline'), timeline);
  const fromLog = session.role === 'admin' || session.role === 'auditor';
  let pending = null;
  const reload = () => {
    clearTimeout(pending);
    pending = setTimeout(() => guard(() => render(id, fromLog, summary, timeline)), 100);
  };
  reload();
  if (!fromLog) {
    root.append(el('p', { class: 'muted' }, 'Event links and the live view need an auditor or admin token.'),
      el('button', { type: 'button', class: 'secondary', id: 'order-refresh', onclick: reload }, 'Refresh'));
    return null;
  }
  return follow({ from: 'now', stream_id: id }, {
    onEvent: reload,
    onState: (s, err) => {
      live.textContent = s === 'live' ? 'live' : s;
      live.className = s === 'live' ? 'badge live' : 'badge';
      if (s === 'live') reload();
      if (s === 'refused') showError(describe(err));
    },
  });
}

async function render(id, fromLog, summary, timeline) {
  const order = await api(`/v1/orders/${encodeURIComponent(id)}`);
  clear(summary).append(el('div', { class: 'panel' }, facts([
    ['status', el('span', { id: 'order-status' }, order.status)],
    ['customer', el('span', { class: 'mono' }, order.customer_id)],
    ['merchant', el('span', { class: 'mono' }, order.merchant_id)],
    ['total', money(order.total)],
    ['lines', order.lines.map((l) => `${l.quantity} × ${l.name} (${l.sku})`).join(', ')],
  ])));
  const steps = fromLog ? await stepsFromLog(id, order) : stepsFromReadModel(order);
  clear(timeline);
  for (const [key, title] of STEPS) {
    const step = steps[key];
    if (!step && (key === 'rejected' || key === 'cancelled')) continue;
    if (!step && (key === 'confirmed' && steps.rejected)) continue;
    const item = el('li', { class: step ? (key === 'rejected' || key === 'cancelled' ? 'failed' : 'done') : 'muted', dataset: { step: key } },
      el('strong', {}, title), step ? (step.at ? ` · ${time(step.at)}` : '') : ' · not yet');
    if (step) {
      if (step.text) item.append(el('div', {}, step.text));
      if (step.events && step.events.length) {
        item.append(el('div', {}, step.events.map((e) => el('a', {
          href: `#/stream/${e.category}/${e.stream_id}/${e.version}`, class: 'event-link', dataset: { type: e.type },
        }, `${e.type} (${e.category} v${e.version})`)).flatMap((a, i) => (i ? [', ', a] : [a]))));
      }
    }
    timeline.append(item);
  }
}

// A personal field as shown: the order's answer or the audit event (both revealed by the query
// API) gives the value; null once the customer's personal data was erased; an object is a sealed
// value that does not decrypt.
function personal(v) {
  if (v === null || v === undefined) return '(erased)';
  return typeof v === 'object' ? '(sealed)' : v;
}

function describeStep(e, order) {
  const d = e.data || {};
  const o = order || {};
  switch (e.type) {
    case 'OrderPlaced': return `${(d.lines || []).length} lines, total ${money(d.total)}`;
    case 'OrderRejected': return (d.failed_lines || []).map((l) => `${l.product_id}: ${l.reason} (requested ${l.requested}, available ${l.available})`).join('; ');
    case 'OrderPaid': return `${money(d.amount)}, reference ${personal(o.payment ? o.payment.payment_reference : d.payment_reference)}`;
    case 'OrderShipped': return `${d.carrier}, tracking ${d.tracking_number}`;
    case 'OrderCancelled': return `${personal(o.cancellation ? o.cancellation.reason : d.reason)} (by ${d.cancelled_by ? d.cancelled_by.role : 'unknown'})`;
    case 'StockReserved': return `${d.quantity} reserved of product ${e.stream_id}`;
    default: return '';
  }
}

async function stepsFromLog(id, order) {
  const { events } = await api(`/v1/audit/streams/order/${encodeURIComponent(id)}/events`);
  const correlations = [...new Set(events.map((e) => e.metadata.correlation_id))];
  const related = [];
  for (const c of correlations) {
    const page = await api(`/v1/audit/events${query({ correlation_id: c, category: 'product', limit: 500 })}`);
    related.push(...page.items.filter((e) => e.data && e.data.order_id === id));
  }
  const steps = {};
  for (const e of [...events, ...related].sort((a, b) => a.position - b.position)) {
    const step = STEPS.find(([, , types]) => types.includes(e.type));
    if (!step) continue;
    const s = (steps[step[0]] ||= { at: e.metadata.recorded_at, events: [], text: '' });
    s.events.push(e);
    const text = describeStep(e, order);
    if (text) s.text = s.text ? `${s.text}; ${text}` : text;
  }
  return steps;
}

function stepsFromReadModel(o) {
  const steps = { placed: { at: o.placed_at, text: `${o.lines.length} lines, total ${money(o.total)}` } };
  const after = ['confirmed', 'paid', 'shipped', 'delivered'];
  const reached = { confirmed: 0, paid: 1, shipped: 2, delivered: 3 }[o.status];
  if (reached !== undefined) after.slice(0, reached + 1).forEach((k) => { steps[k] = { at: null, text: '' }; });
  if (o.status !== 'pending' && o.status !== 'rejected') steps.reserved = { at: null, text: '' };
  if (o.rejection) steps.rejected = { at: o.rejection.rejected_at, text: (o.rejection.failed_lines || []).map((l) => `${l.product_id}: ${l.reason}`).join('; ') };
  if (o.payment) steps.paid = { at: o.payment.paid_at, text: `${money(o.payment.amount)}, reference ${personal(o.payment.payment_reference)}` };
  if (o.shipment) steps.shipped = { at: o.shipment.shipped_at, text: `${o.shipment.carrier}, tracking ${o.shipment.tracking_number}` };
  if (o.delivered_at) steps.delivered = { at: o.delivered_at, text: '' };
  if (o.cancellation) steps.cancelled = { at: o.cancellation.cancelled_at, text: personal(o.cancellation.reason) };
  return steps;
}
