//! Appends decided by the writer and checked by the database (ADR 0032).
//!
//! The writer knows the heads of the streams it wrote (and what the database told it of others).
//! It decides a batch on them exactly as `ordo_append_batch` would, computes every version and
//! hash itself with a timestamp of its own, and sends the finished rows to
//! `ordo_append_checked`, which checks under the writer lock that every head it assumed, every
//! idempotency key and every claim it checked is still as it thought, and then writes the batch
//! with a few set-based statements. When something did not hold, nothing is written and the
//! answer says what is true instead; the writer decides the batch again on that. Every answer,
//! refusals included, therefore rests on heads the database confirmed under the lock.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use ordo_schemas::{StreamCategory, StreamRef};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::append::{claim_taken, event_content, key_taken, stored_record, Answer};
use crate::error::{AppendError, ExpectedVersion, StoreError};
use crate::hash::{link_hash, recorded_at_text};
use crate::types::{AppendRequest, AppendedStream, IdempotencyRecord, StreamAppend, UniqueClaim};
use crate::writer::chain_broken;

/// Heads kept between batches; past this the map starts again empty (a head the writer does not
/// know costs one refused try, never a wrong answer).
const MOST_HEADS: usize = 100_000;

/// Tries before a batch is left to `ordo_append_batch`, which decides in the database.
const TRIES: usize = 4;

const APPEND_CHECKED: &str = "SELECT out_kind, out_index, out_category, out_stream_id, out_version, out_position, \
     out_hash, out_ts, out_status, out_body FROM ordo_append_checked($1::timestamptz, $2::text[], $3::uuid[], \
     $4::bigint[], $5::bytea[], $6::bigint[], $7::bytea[], $8::int[], $9::bigint[], $10::uuid[], $11::text[], \
     $12::int[], $13::jsonb[], $14::jsonb[], $15::bytea[], $16::bytea[], $17::text[], $18::text[], $19::text[], \
     $20::text[], $21::bytea[], $22::smallint[], $23::jsonb[], $24::text[], $25::text[], $26::text[], \
     $27::text[], $28::int[])";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    version: i64,
    hash: Option<[u8; 32]>,
}

const NO_STREAM: Head = Head { version: 0, hash: None };

/// What the writer knows of the log between batches: stream heads and the latest recorded_at.
#[derive(Debug, Default)]
pub(crate) struct Known {
    heads: HashMap<StreamRef, Head>,
    last_ts: Option<DateTime<Utc>>,
}

impl Known {
    /// Forgets every head, after an append this module did not see the outcome of.
    pub(crate) fn forget(&mut self) {
        self.heads.clear();
    }

    fn learn(&mut self, stream: StreamRef, head: Head) {
        if self.heads.len() >= MOST_HEADS && !self.heads.contains_key(&stream) {
            self.heads.clear();
        }
        self.heads.insert(stream, head);
    }
}

/// The events of a batch encoded once: their metadata as JSON and the bytes their hash covers.
struct Encoded {
    metadata: Vec<serde_json::Value>,
    content: Vec<Vec<u8>>,
    /// Index of each request's first event in the two vectors above.
    first: Vec<usize>,
}

fn encode(requests: &[&AppendRequest]) -> Option<Encoded> {
    let mut out = Encoded { metadata: Vec::new(), content: Vec::new(), first: Vec::with_capacity(requests.len()) };
    for r in requests {
        out.first.push(out.metadata.len());
        for a in &r.appends {
            for e in &a.events {
                let metadata = serde_json::to_value(&e.metadata).ok()?;
                out.content.push(event_content(a.stream, e, &metadata));
                out.metadata.push(metadata);
            }
        }
    }
    Some(out)
}

/// What the database said of one try, beyond the heads.
#[derive(Default)]
struct Taken {
    keys: HashMap<usize, Option<IdempotencyRecord>>,
    claims: Vec<usize>,
}

/// One accepted stream append of a plan.
struct Accepted {
    request: usize,
    slot: usize,
    from: i64,
    to: i64,
    hash: [u8; 32],
}

/// One event to write.
struct Written {
    slot: usize,
    version: i64,
    prev: Option<[u8; 32]>,
    hash: [u8; 32],
    /// Index into the batch's encoded events.
    event: usize,
    request: usize,
    append: usize,
    within: usize,
}

/// A batch decided on assumed heads.
struct Plan {
    refused: Vec<Option<AppendError>>,
    accepted: Vec<Accepted>,
    streams: Vec<StreamRef>,
    start: Vec<Head>,
    end: Vec<Head>,
    rows: Vec<Written>,
    /// The slot of each request's first stream (the one its claim names).
    first_slot: Vec<usize>,
}

/// Decides every request in order, as `ordo_append_batch` does: a link after a refused one, a
/// taken key, a taken claim, then each stream's expectation against the head the requests before
/// it left.
fn plan(requests: &[&AppendRequest], after: &[i32], known: &Known, taken: &Taken, encoded: &Encoded, ts: &str) -> Plan {
    let mut slot_of: HashMap<StreamRef, usize> = HashMap::new();
    let mut p = Plan {
        refused: Vec::with_capacity(requests.len()),
        accepted: Vec::new(),
        streams: Vec::new(),
        start: Vec::new(),
        end: Vec::new(),
        rows: Vec::new(),
        first_slot: Vec::with_capacity(requests.len()),
    };
    for r in requests {
        for (ai, a) in r.appends.iter().enumerate() {
            let slot = *slot_of.entry(a.stream).or_insert_with(|| {
                let head = known.heads.get(&a.stream).copied().unwrap_or(NO_STREAM);
                p.streams.push(a.stream);
                p.start.push(head);
                p.end.push(head);
                p.streams.len() - 1
            });
            if ai == 0 {
                p.first_slot.push(slot);
            }
        }
    }
    let mut accepted = vec![false; requests.len()];
    for (ri, r) in requests.iter().enumerate() {
        let slot = |a: &StreamAppend| slot_of[&a.stream];
        let depends = after.get(ri).copied().unwrap_or(0);
        let refusal = if depends > 0 && !usize::try_from(depends - 1).is_ok_and(|d| accepted.get(d) == Some(&true)) {
            Some(match r.appends.first() {
                Some(a) => {
                    AppendError::Conflict { stream: a.stream, expected: a.expected, actual: p.end[slot(a)].version }
                }
                None => chain_broken(r),
            })
        } else if let Some(stored) = taken.keys.get(&ri) {
            Some(key_taken(r, stored.clone()))
        } else if taken.claims.contains(&ri) {
            Some(claim_taken(r))
        } else {
            r.appends.iter().find_map(|a| {
                let head = p.end[slot(a)];
                let version_differs = a.expected.version().is_some_and(|v| v != head.version);
                let hash_differs = match a.expected {
                    ExpectedVersion::Head { hash: Some(h), .. } => head.hash != Some(h),
                    _ => false,
                };
                (version_differs || hash_differs).then_some(AppendError::Conflict {
                    stream: a.stream,
                    expected: a.expected,
                    actual: head.version,
                })
            })
        };
        if refusal.is_none() {
            accepted[ri] = true;
            let mut event = encoded.first[ri];
            for (ai, a) in r.appends.iter().enumerate() {
                let s = slot(a);
                let mut head = p.end[s];
                let from = head.version + 1;
                for within in 0..a.events.len() {
                    let version = head.version + 1;
                    let hash =
                        link_hash(head.hash.as_ref().map(|h| h.as_slice()), &encoded.content[event], version, ts);
                    p.rows.push(Written {
                        slot: s,
                        version,
                        prev: head.hash,
                        hash,
                        event,
                        request: ri,
                        append: ai,
                        within,
                    });
                    head = Head { version, hash: Some(hash) };
                    event += 1;
                }
                p.end[s] = head;
                p.accepted.push(Accepted {
                    request: ri,
                    slot: s,
                    from,
                    to: head.version,
                    hash: head.hash.unwrap_or_default(),
                });
            }
        }
        p.refused.push(refusal);
    }
    p
}

/// Appends `requests` (laid out as [`crate::writer`] does, `after` naming the link each depends
/// on) on the heads the writer knows. `Ok(None)` when the batch could not be settled in a few
/// tries: the caller leaves it to `ordo_append_batch`. `Err` only when a statement failed: then
/// nothing of the batch was written.
pub(crate) async fn append(
    conn: &mut PgConnection,
    known: &mut Known,
    requests: &[&AppendRequest],
    after: &[i32],
) -> Result<Option<Vec<Answer>>, sqlx::Error> {
    let Some(encoded) = encode(requests) else { return Ok(None) };
    let mut taken = Taken::default();
    for _ in 0..TRIES {
        let now = Utc::now().trunc_subsecs(6);
        let ts = known.last_ts.map_or(now, |last| last.max(now));
        let ts_text = recorded_at_text(ts);
        let plan = plan(requests, after, known, &taken, &encoded, &ts_text);
        let rows = send(conn, requests, &encoded, &plan, &taken, ts).await?;
        let mut settled = true;
        let mut positions: HashMap<(StreamRef, i64), i64> = HashMap::with_capacity(plan.rows.len());
        for row in &rows {
            let kind: i16 = row.try_get("out_kind")?;
            if let Some(label) = refusal_label(kind) {
                metrics::counter!("ordo_append_refused_tries_total", "kind" => label).increment(1);
            }
            match kind {
                0 => {
                    let stream = stream_of(row)?;
                    positions.insert((stream, row.try_get("out_version")?), row.try_get("out_position")?);
                }
                1 => {
                    settled = false;
                    let hash: Option<Vec<u8>> = row.try_get("out_hash")?;
                    let head = Head {
                        version: row.try_get("out_version")?,
                        hash: hash.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()),
                    };
                    known.learn(stream_of(row)?, head);
                }
                2 => {
                    settled = false;
                    known.last_ts = Some(row.try_get("out_ts")?);
                }
                3 => {
                    settled = false;
                    let index = checked_index(row)?;
                    let request = keyed(requests, &taken).nth(index).ok_or_else(corrupt)?;
                    taken.keys.insert(
                        request,
                        stored_record(requests[request], row, ["out_hash", "out_status", "out_body"])?,
                    );
                }
                4 => {
                    settled = false;
                    let index = checked_index(row)?;
                    let request = claimed(requests, &taken).nth(index).ok_or_else(corrupt)?;
                    taken.claims.push(request);
                }
                _ => return Err(corrupt()),
            }
        }
        if !settled {
            continue;
        }
        known.last_ts = Some(ts);
        for (stream, head) in plan.streams.iter().zip(&plan.end) {
            known.learn(*stream, *head);
        }
        return Ok(Some(answers(requests, plan, &positions, ts)));
    }
    Ok(None)
}

/// What a refusal row of `ordo_append_checked` says did not hold, for the metric.
fn refusal_label(kind: i16) -> Option<&'static str> {
    match kind {
        1 => Some("head"),
        2 => Some("clock"),
        3 => Some("key"),
        4 => Some("claim"),
        _ => None,
    }
}

fn corrupt() -> sqlx::Error {
    sqlx::Error::Protocol("ordo_append_checked answered a row that names nothing it was sent".into())
}

fn stream_of(row: &sqlx::postgres::PgRow) -> Result<StreamRef, sqlx::Error> {
    let category: String = row.try_get("out_category")?;
    let id: Uuid = row.try_get("out_stream_id")?;
    let category = StreamCategory::parse(&category).ok_or_else(corrupt)?;
    Ok(StreamRef::new(category, id))
}

fn checked_index(row: &sqlx::postgres::PgRow) -> Result<usize, sqlx::Error> {
    let index: i32 = row.try_get("out_index")?;
    usize::try_from(index - 1).map_err(|_| corrupt())
}

/// Requests whose idempotency key is checked in this try, in the order they are sent.
fn keyed<'a>(requests: &'a [&AppendRequest], taken: &'a Taken) -> impl Iterator<Item = usize> + 'a {
    (0..requests.len()).filter(|&i| requests[i].idempotency.is_some() && !taken.keys.contains_key(&i))
}

/// Requests whose claim is checked in this try, in the order they are sent.
fn claimed<'a>(requests: &'a [&AppendRequest], taken: &'a Taken) -> impl Iterator<Item = usize> + 'a {
    (0..requests.len()).filter(|&i| requests[i].claim.is_some() && !taken.claims.contains(&i))
}

fn nonempty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

async fn send(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
    encoded: &Encoded,
    plan: &Plan,
    taken: &Taken,
    ts: DateTime<Utc>,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    let slot_no = |s: usize| i32::try_from(s + 1).unwrap_or(i32::MAX);
    let hash_vec = |h: &Option<[u8; 32]>| h.map(|h| h.to_vec());
    let h_category: Vec<&str> = plan.streams.iter().map(|s| s.category.as_str()).collect();
    let h_stream_id: Vec<Uuid> = plan.streams.iter().map(|s| s.id).collect();
    let h_version: Vec<i64> = plan.start.iter().map(|h| h.version).collect();
    let h_hash: Vec<Option<Vec<u8>>> = plan.start.iter().map(|h| hash_vec(&h.hash)).collect();
    let h_new_version: Vec<i64> = plan.end.iter().map(|h| h.version).collect();
    let h_new_hash: Vec<Option<Vec<u8>>> = plan.end.iter().map(|h| hash_vec(&h.hash)).collect();

    let n = plan.rows.len();
    let (mut e_slot, mut e_version, mut e_event_id, mut e_type, mut e_schema) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut e_data, mut e_metadata, mut e_prev, mut e_hash) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for row in &plan.rows {
        let event = &requests[row.request].appends[row.append].events[row.within];
        e_slot.push(slot_no(row.slot));
        e_version.push(row.version);
        e_event_id.push(event.metadata.event_id);
        e_type.push(event.event_type.as_str());
        e_schema.push(event.schema_version);
        e_data.push(&event.data);
        e_metadata.push(&encoded.metadata[row.event]);
        e_prev.push(hash_vec(&row.prev));
        e_hash.push(row.hash.to_vec());
    }

    let check_keys: Vec<&IdempotencyRecord> =
        keyed(requests, taken).filter_map(|i| requests[i].idempotency.as_ref()).collect();
    let check_claims: Vec<&UniqueClaim> = claimed(requests, taken).filter_map(|i| requests[i].claim.as_ref()).collect();
    let mut written: Vec<usize> = plan.accepted.iter().map(|a| a.request).collect();
    written.dedup();
    let keys: Vec<&IdempotencyRecord> = written.iter().filter_map(|&i| requests[i].idempotency.as_ref()).collect();
    let claims: Vec<(&UniqueClaim, usize)> =
        written.iter().filter_map(|&i| requests[i].claim.as_ref().map(|c| (c, plan.first_slot[i]))).collect();

    sqlx::query(APPEND_CHECKED)
        .bind(ts)
        .bind(h_category)
        .bind(h_stream_id)
        .bind(h_version)
        .bind(h_hash)
        .bind(h_new_version)
        .bind(h_new_hash)
        .bind(nonempty(e_slot))
        .bind(e_version)
        .bind(e_event_id)
        .bind(e_type)
        .bind(e_schema)
        .bind(e_data)
        .bind(e_metadata)
        .bind(e_prev)
        .bind(e_hash)
        .bind(nonempty(check_keys.iter().map(|k| k.scope.as_str()).collect()))
        .bind(nonempty(check_keys.iter().map(|k| k.key.as_str()).collect()))
        .bind(nonempty(keys.iter().map(|k| k.scope.as_str()).collect()))
        .bind(nonempty(keys.iter().map(|k| k.key.as_str()).collect()))
        .bind(keys.iter().map(|k| k.request_hash.as_slice()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| i16::try_from(k.response_status).unwrap_or(i16::MAX)).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| &k.response_body).collect::<Vec<_>>())
        .bind(nonempty(check_claims.iter().map(|c| c.kind.as_str()).collect()))
        .bind(nonempty(check_claims.iter().map(|c| c.value.as_str()).collect()))
        .bind(nonempty(claims.iter().map(|(c, _)| c.kind.as_str()).collect()))
        .bind(nonempty(claims.iter().map(|(c, _)| c.value.as_str()).collect()))
        .bind(claims.iter().map(|(_, s)| slot_no(*s)).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
}

fn answers(
    requests: &[&AppendRequest],
    plan: Plan,
    positions: &HashMap<(StreamRef, i64), i64>,
    ts: DateTime<Utc>,
) -> Vec<Answer> {
    let mut appended: Vec<Vec<AppendedStream>> = requests.iter().map(|_| Vec::new()).collect();
    let mut missing = vec![false; requests.len()];
    for a in &plan.accepted {
        let stream = plan.streams[a.slot];
        match (positions.get(&(stream, a.from)), positions.get(&(stream, a.to))) {
            (Some(&first), Some(&last)) => appended[a.request].push(AppendedStream {
                stream,
                version: a.to,
                first_position: first,
                last_position: last,
                head_hash: a.hash.to_vec(),
                recorded_at: ts,
            }),
            _ => missing[a.request] = true,
        }
    }
    plan.refused
        .into_iter()
        .zip(appended)
        .zip(missing)
        .map(|((refusal, mut streams), missing)| match refusal {
            Some(e) => Err(e),
            None if missing => {
                Err(AppendError::Store(StoreError::Corrupt("the log answered part of an append".into())))
            }
            None => {
                streams.sort_by_key(|s| s.stream);
                Ok(streams)
            }
        })
        .collect()
}
