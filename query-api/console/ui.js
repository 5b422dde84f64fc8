// Small DOM helpers: every value goes in as text, never as markup.

import { describe } from './api.js';

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

const message = () => document.getElementById('message');

export function showError(text) {
  const m = message();
  m.className = '';
  m.textContent = text;
  m.hidden = false;
}

export function showInfo(text) {
  const m = message();
  m.className = 'info';
  m.textContent = text;
  m.hidden = false;
}

export function hideMessage() {
  const m = message();
  m.hidden = true;
  m.textContent = '';
}

export function time(t) {
  if (!t) return '';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('T', ' ').replace('Z', ' UTC');
}

export function money(m) {
  if (!m || typeof m.amount_minor !== 'number') return '';
  return `${(m.amount_minor / 100).toFixed(2)} ${m.currency}`;
}

export function json(value) {
  return el('pre', { class: 'mono' }, JSON.stringify(value, null, 2));
}

/** A table of `rows` with `columns` = [[title, row => text or node]]; `onPick(row, tr)` on click. */
export function table(columns, rows, { onPick, id, empty = 'nothing to show' } = {}) {
  const head = el('tr', {}, columns.map(([title]) => el('th', {}, title)));
  const body = el('tbody');
  if (!rows.length) body.append(el('tr', {}, el('td', { colspan: columns.length, class: 'muted' }, empty)));
  for (const row of rows) body.append(tableRow(columns, row, onPick));
  return el('table', { id }, el('thead', {}, head), body);
}

export function tableRow(columns, row, onPick) {
  const tr = el('tr', { class: onPick ? 'clickable' : undefined }, columns.map(([, cell]) => el('td', {}, cell(row))));
  if (onPick) {
    tr.addEventListener('click', () => {
      tr.parentNode.querySelectorAll('tr.selected').forEach((r) => r.classList.remove('selected'));
      tr.classList.add('selected');
      onPick(row, tr);
    });
  }
  return tr;
}

export function facts(pairs) {
  return el('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

export function field(label, input) {
  return el('label', {}, label, input);
}

/** Runs `fn`, showing its error in the page instead of letting it escape. */
export async function guard(fn) {
  try {
    return await fn();
  } catch (e) {
    if (e && e.name === 'AbortError') return undefined;
    showError(describe(e));
    return undefined;
  }
}
