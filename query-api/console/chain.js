// The hash chain of a stream, recomputed in the browser with Web Crypto, independently of the
// server's own verification. The hashed bytes are specified in docs/hash-chain.md:
//   hash = sha256(prev_hash || content || "|" || version || "|" || recorded_at)
// where content is the canonical JSON of {category, data, event_id, metadata, schema_version,
// stream_id, type} (keys sorted by code point at every level, no white space) and recorded_at
// is RFC 3339 UTC with exactly six fraction digits and "Z".

/** Thrown when an event holds a value this verifier cannot reproduce exactly. */
export class Unverifiable extends Error {
  constructor(message) {
    super(message);
    this.unverifiable = true;
  }
}

function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/** Canonical JSON: sorted keys, no white space, strings as JSON.stringify writes them. */
export function canonical(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  switch (typeof value) {
    case 'object':
      return `{${Object.keys(value)
        .sort(byCodePoint)
        .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
        .join(',')}}`;
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isSafeInteger(value)) {
        throw new Unverifiable(`the number ${value} is not an integer within ±2^53; the browser cannot reproduce its bytes`);
      }
      return String(value);
    default:
      throw new Unverifiable(`a value of type ${typeof value} has no JSON form`);
  }
}

/** `recorded_at` as the hash covers it: six fraction digits, UTC, "Z". */
export function micros(recordedAt) {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(?:Z|\+00:00)$/.exec(recordedAt);
  if (!m) throw new Unverifiable(`recorded_at ${recordedAt} is not an RFC 3339 UTC time`);
  const fraction = (m[2] || '').padEnd(9, '0');
  if (!fraction.endsWith('000')) throw new Unverifiable(`recorded_at ${recordedAt} is finer than microseconds`);
  return `${m[1]}.${fraction.slice(0, 6)}Z`;
}

function hexToBytes(hex) {
  if (!/^([0-9a-f]{2})*$/i.test(hex)) throw new Unverifiable(`${hex} is not hex`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The bytes an envelope's hash covers after its predecessor's hash. */
export function hashedBytes(envelope) {
  const { recorded_at: recordedAt, ...metadata } = envelope.metadata;
  const content = canonical({
    category: envelope.category,
    data: envelope.data,
    event_id: envelope.metadata.event_id,
    metadata,
    schema_version: envelope.schema_version,
    stream_id: envelope.stream_id,
    type: envelope.type,
  });
  if (!Number.isSafeInteger(envelope.version)) throw new Unverifiable(`version ${envelope.version} is out of range`);
  return new TextEncoder().encode(`${content}|${envelope.version}|${micros(recordedAt)}`);
}

/** sha256(prev || hashedBytes(envelope)) as hex. */
export async function computeHash(envelope, prevHex) {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new Unverifiable('this browser offers Web Crypto only to secure pages: open the console over HTTPS or on localhost');
  }
  const prev = prevHex ? hexToBytes(prevHex) : new Uint8Array(0);
  const body = hashedBytes(envelope);
  const input = new Uint8Array(prev.length + body.length);
  input.set(prev, 0);
  input.set(body, prev.length);
  return bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', input)));
}

/**
 * Checks a whole stream given its events (any order) and, optionally, its digest
 * `{version, head_hash}`. Resolves to `{ok, checked, head, broken: [{version, problem, detail}]}`.
 */
export async function verifyStream(events, digest) {
  const sorted = [...events].sort((a, b) => a.version - b.version);
  const broken = [];
  let lastVersion = 0;
  let lastHash = null;
  for (const e of sorted) {
    const prev = e.prev_hash || null;
    if (e.version !== lastVersion + 1) {
      broken.push({ version: e.version, problem: 'missing_versions', detail: `versions ${lastVersion + 1} to ${e.version - 1} are missing` });
    } else if (prev !== lastHash) {
      broken.push({ version: e.version, problem: 'prev_hash_mismatch', detail: `it points at ${prev || 'nothing'}, its predecessor's hash is ${lastHash || 'none'}` });
    } else {
      const computed = await computeHash(e, prev);
      if (computed !== e.hash) {
        broken.push({ version: e.version, problem: 'hash_mismatch', detail: `stored ${e.hash}, recomputed ${computed}: the event was altered` });
      }
    }
    lastVersion = e.version;
    lastHash = e.hash;
  }
  if (digest && (digest.version !== lastVersion || digest.head_hash !== lastHash)) {
    broken.push({ version: digest.version, problem: 'head_mismatch', detail: `the stream head is version ${digest.version} (${digest.head_hash}) but the last event is version ${lastVersion}` });
  }
  return { ok: broken.length === 0, checked: sorted.length, head: lastHash, broken };
}
