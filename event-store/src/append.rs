//! One batch of append requests as one call of `ordo_append_batch` (see its migration): the
//! requests are laid out as arrays, the function decides each one in order under the writer
//! lock, and its rows are turned back into one answer per request.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_schemas::StreamRef;
use sqlx::{Executor, Postgres, Row};
use uuid::Uuid;

use crate::error::{AppendError, ExpectedVersion, StoreError};
use crate::hash::{content_bytes, HashInput};
use crate::types::{AppendRequest, AppendedStream, IdempotencyRecord, NewEvent};

const APPEND_BATCH: &str = "SELECT out_request, out_outcome, out_append, out_version, out_first, out_last, \
     out_head_hash, out_recorded_at, out_stored_hash, out_stored_status, out_stored_body FROM ordo_append_batch(\
     $1::text[], $2::text[], $3::bytea[], $4::smallint[], $5::jsonb[], $6::text[], $7::text[], $8::int[], \
     $9::int[], $10::int[], $11::bigint[], $12::bytea[], $13::int[], $14::text[], $15::uuid[], \
     $16::uuid[], $17::text[], $18::int[], $19::jsonb[], $20::jsonb[], $21::bytea[])";

/// The answer to one request of a batch.
pub(crate) type Answer = Result<Vec<AppendedStream>, AppendError>;

/// Checks a request and sorts its streams, so concurrent writers see one order.
pub(crate) fn prepare(request: &mut AppendRequest) -> Result<(), AppendError> {
    let appends = &mut request.appends;
    if appends.is_empty() || appends.iter().any(|a| a.events.is_empty()) {
        return Err(AppendError::Invalid("every stream in an append needs at least one event"));
    }
    appends.sort_by_key(|a| a.stream);
    if appends.windows(2).any(|w| w[0].stream == w[1].stream) {
        return Err(AppendError::Invalid("a stream may appear only once in an append"));
    }
    Ok(())
}

/// The arrays of one `ordo_append_batch` call.
#[derive(Default)]
struct Columns {
    idem_scope: Vec<Option<String>>,
    idem_key: Vec<Option<String>>,
    idem_hash: Vec<Option<Vec<u8>>>,
    idem_status: Vec<Option<i16>>,
    idem_body: Vec<Option<serde_json::Value>>,
    claim_kind: Vec<Option<String>>,
    claim_value: Vec<Option<String>>,
    streams: Vec<i32>,
    after: Vec<i32>,
    slot: Vec<i32>,
    expected: Vec<Option<i64>>,
    head_hash: Vec<Option<Vec<u8>>>,
    count: Vec<i32>,
    category: Vec<&'static str>,
    stream_id: Vec<Uuid>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    data: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    content: Vec<Vec<u8>>,
}

fn columns(requests: &[&AppendRequest], after: &[i32]) -> Result<Columns, AppendError> {
    let mut c = Columns { after: after.to_vec(), ..Columns::default() };
    c.after.resize(requests.len(), 0);
    let mut slots: HashMap<StreamRef, i32> = HashMap::new();
    for r in requests {
        let idem = r.idempotency.as_ref();
        c.idem_scope.push(idem.map(|i| i.scope.clone()));
        c.idem_key.push(idem.map(|i| i.key.clone()));
        c.idem_hash.push(idem.map(|i| i.request_hash.clone()));
        c.idem_status.push(idem.map(|i| i16::try_from(i.response_status).unwrap_or(i16::MAX)));
        c.idem_body.push(idem.map(|i| i.response_body.clone()));
        c.claim_kind.push(r.claim.as_ref().map(|k| k.kind.clone()));
        c.claim_value.push(r.claim.as_ref().map(|k| k.value.clone()));
        c.streams.push(i32::try_from(r.appends.len()).map_err(|_| AppendError::Invalid("too many streams"))?);
        for a in &r.appends {
            let next = i32::try_from(slots.len() + 1).map_err(|_| AppendError::Invalid("too many streams"))?;
            let slot = *slots.entry(a.stream).or_insert_with(|| {
                c.category.push(a.stream.category.as_str());
                c.stream_id.push(a.stream.id);
                next
            });
            c.slot.push(slot);
            c.expected.push(a.expected.version());
            c.head_hash.push(match a.expected {
                ExpectedVersion::Head { hash, .. } => hash.map(|h| h.to_vec()),
                _ => None,
            });
            c.count.push(i32::try_from(a.events.len()).map_err(|_| AppendError::Invalid("too many events"))?);
            for e in &a.events {
                let metadata = serde_json::to_value(&e.metadata)
                    .map_err(|err| StoreError::Corrupt(format!("metadata does not serialise: {err}")))?;
                c.content.push(event_content(a.stream, e, &metadata));
                c.event_id.push(e.metadata.event_id);
                c.event_type.push(e.event_type.clone());
                c.schema_version.push(e.schema_version);
                c.data.push(e.data.clone());
                c.metadata.push(metadata);
            }
        }
    }
    Ok(c)
}

/// The bytes of an event its hash covers before its version and recorded_at, which whoever
/// decides the append (the writer or the database) hashes after them.
pub(crate) fn event_content(stream: StreamRef, event: &NewEvent, metadata: &serde_json::Value) -> Vec<u8> {
    content_bytes(&HashInput {
        category: stream.category.as_str(),
        stream_id: stream.id,
        version: 0,
        event_id: event.metadata.event_id,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        data: &event.data,
        metadata,
        recorded_at: chrono::DateTime::UNIX_EPOCH,
    })
}

/// Appends `requests` in one statement and answers each. `after[i]` is the 1-based index of the
/// request that request `i` depends on (0: none): it is refused if that one is. `Err` only when
/// the statement itself failed: then nothing of the batch was written.
pub(crate) async fn append_batch<'e, E>(
    executor: E,
    requests: &[&AppendRequest],
    after: &[i32],
) -> Result<Vec<Answer>, sqlx::Error>
where
    E: Executor<'e, Database = Postgres>,
{
    let c = match columns(requests, after) {
        Ok(c) => c,
        // A request that cannot be encoded is refused before anything is sent.
        Err(e) => return Ok(requests.iter().map(|_| Err(clone_invalid(&e))).collect()),
    };
    let rows = sqlx::query(APPEND_BATCH)
        .bind(&c.idem_scope)
        .bind(&c.idem_key)
        .bind(&c.idem_hash)
        .bind(&c.idem_status)
        .bind(&c.idem_body)
        .bind(&c.claim_kind)
        .bind(&c.claim_value)
        .bind(&c.streams)
        .bind(&c.after)
        .bind(&c.slot)
        .bind(&c.expected)
        .bind(&c.head_hash)
        .bind(&c.count)
        .bind(&c.category)
        .bind(&c.stream_id)
        .bind(&c.event_id)
        .bind(&c.event_type)
        .bind(&c.schema_version)
        .bind(&c.data)
        .bind(&c.metadata)
        .bind(&c.content)
        .fetch_all(executor)
        .await?;
    Ok(answers(requests, &rows))
}

fn clone_invalid(e: &AppendError) -> AppendError {
    match e {
        AppendError::Invalid(reason) => AppendError::Invalid(reason),
        other => AppendError::Store(StoreError::Corrupt(other.to_string())),
    }
}

/// Outcomes of `ordo_append_batch`.
const APPENDED: i16 = 0;
const CONFLICT: i16 = 1;
const IDEMPOTENCY_TAKEN: i16 = 2;
const CLAIM_TAKEN: i16 = 3;

fn answers(requests: &[&AppendRequest], rows: &[sqlx::postgres::PgRow]) -> Vec<Answer> {
    let mut appended: Vec<Vec<AppendedStream>> = requests.iter().map(|_| Vec::new()).collect();
    let mut refused: Vec<Option<AppendError>> = requests.iter().map(|_| None).collect();
    // Stream appends are numbered across the whole batch, request after request.
    let mut first_append = Vec::with_capacity(requests.len());
    let mut n = 1i32;
    for r in requests {
        first_append.push(n);
        n += i32::try_from(r.appends.len()).unwrap_or(i32::MAX);
    }
    for row in rows {
        if let Err(e) = decode_row(requests, &first_append, row, &mut appended, &mut refused) {
            tracing::error!(error = %e, "append answer does not decode");
        }
    }
    requests
        .iter()
        .zip(appended.into_iter().zip(refused))
        .map(|(r, (streams, refusal))| match refusal {
            Some(e) => Err(e),
            None if streams.len() == r.appends.len() => {
                let mut streams = streams;
                streams.sort_by_key(|s| s.stream);
                Ok(streams)
            }
            None => Err(AppendError::Store(StoreError::Corrupt("the log answered part of an append".into()))),
        })
        .collect()
}

fn decode_row(
    requests: &[&AppendRequest],
    first_append: &[i32],
    row: &sqlx::postgres::PgRow,
    appended: &mut [Vec<AppendedStream>],
    refused: &mut [Option<AppendError>],
) -> Result<(), StoreError> {
    let request: i32 = row.try_get("out_request")?;
    let index = usize::try_from(request - 1).map_err(|_| StoreError::Corrupt("request index".into()))?;
    let r = requests.get(index).ok_or_else(|| StoreError::Corrupt("request index".into()))?;
    let append_no: i32 = row.try_get("out_append")?;
    let within = usize::try_from(append_no - first_append[index]).map_err(|_| StoreError::Corrupt("append".into()))?;
    let a = r.appends.get(within).ok_or_else(|| StoreError::Corrupt("append index".into()))?;
    let outcome: i16 = row.try_get("out_outcome")?;
    match outcome {
        APPENDED => {
            let recorded_at: DateTime<Utc> = row.try_get("out_recorded_at")?;
            appended[index].push(AppendedStream {
                stream: a.stream,
                version: row.try_get("out_version")?,
                first_position: row.try_get("out_first")?,
                last_position: row.try_get("out_last")?,
                head_hash: row.try_get("out_head_hash")?,
                recorded_at,
            });
        }
        CONFLICT => {
            let actual: Option<i64> = row.try_get("out_version")?;
            refused[index] =
                Some(AppendError::Conflict { stream: a.stream, expected: a.expected, actual: actual.unwrap_or(0) });
        }
        IDEMPOTENCY_TAKEN => {
            let stored = stored_record(r, row, ["out_stored_hash", "out_stored_status", "out_stored_body"])?;
            refused[index] = Some(key_taken(r, stored));
        }
        CLAIM_TAKEN => refused[index] = Some(claim_taken(r)),
        other => return Err(StoreError::Corrupt(format!("unknown append outcome {other}"))),
    }
    Ok(())
}

/// The answer stored under `request`'s idempotency key, from the columns of a refusal row named
/// `[hash, status, body]`; `None` when the request has no key or the row no stored hash.
pub(crate) fn stored_record(
    request: &AppendRequest,
    row: &sqlx::postgres::PgRow,
    [hash, status, body]: [&str; 3],
) -> Result<Option<IdempotencyRecord>, sqlx::Error> {
    let (Some(idem), Some(request_hash)) = (&request.idempotency, row.try_get::<Option<Vec<u8>>, _>(hash)?) else {
        return Ok(None);
    };
    let status: i16 = row.try_get::<Option<i16>, _>(status)?.unwrap_or_default();
    Ok(Some(IdempotencyRecord {
        scope: idem.scope.clone(),
        key: idem.key.clone(),
        request_hash,
        response_status: u16::try_from(status).unwrap_or_default(),
        response_body: row.try_get::<Option<serde_json::Value>, _>(body)?.unwrap_or_default(),
    }))
}

/// The refusal of a request whose idempotency key is taken, with the stored answer.
pub(crate) fn key_taken(request: &AppendRequest, stored: Option<IdempotencyRecord>) -> AppendError {
    let (scope, key) = request.idempotency.as_ref().map(|i| (i.scope.clone(), i.key.clone())).unwrap_or_default();
    AppendError::IdempotencyKeyTaken { scope, key, stored: stored.map(Box::new) }
}

/// The refusal of a request whose unique claim is taken.
pub(crate) fn claim_taken(request: &AppendRequest) -> AppendError {
    let (kind, value) = request.claim.as_ref().map(|c| (c.kind.clone(), c.value.clone())).unwrap_or_default();
    AppendError::ClaimTaken { kind, value }
}
