//! Appending events through `ordo_append` (see its migration): one round trip that locks or
//! claims every stream head, checks expected versions before any global position is taken,
//! chains the hashes with the database clock and inserts the events (and the idempotency
//! record) atomically.

use ordo_schemas::StreamRef;
use sqlx::{Executor, Postgres, Row};
use uuid::Uuid;

use crate::error::{sqlstate, sqlstate_of, AppendError, ExpectedVersion, StoreError};
use crate::hash::{content_bytes, HashInput};
use crate::types::{parse_category, AppendedStream, IdempotencyRecord, StreamAppend};

/// SQLSTATE raised by `ordo_append` when an expected version does not hold.
const VERSION_CONFLICT: &str = "OR002";
/// SQLSTATE raised by `ordo_append` when the stream's last writer has a newer transaction id
/// than this one (which would put versions out of order for whole-log readers).
pub(crate) const OLDER_TRANSACTION: &str = "OR003";
const IDEMPOTENCY_PKEY: &str = "idempotency_keys_pkey";

const APPEND: &str = "SELECT out_category, out_stream_id, out_version, out_first, out_last FROM ordo_append(\
     $1::text[], $2::uuid[], $3::bigint[], $4::int[], $5::uuid[], $6::text[], $7::int[], $8::jsonb[], \
     $9::jsonb[], $10::bytea[], $11, $12, $13, $14, $15)";

/// Per-stream and per-event columns for `ordo_append`.
#[derive(Default)]
struct Columns {
    category: Vec<&'static str>,
    stream_id: Vec<Uuid>,
    expected: Vec<Option<i64>>,
    count: Vec<i32>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    data: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    content: Vec<Vec<u8>>,
}

/// Sorts and checks the appends so concurrent multi-stream writers lock heads in one order.
pub(crate) fn prepare(appends: &mut [StreamAppend]) -> Result<(), AppendError> {
    if appends.is_empty() || appends.iter().any(|a| a.events.is_empty()) {
        return Err(AppendError::Invalid("every stream in an append needs at least one event"));
    }
    appends.sort_by_key(|a| a.stream);
    if appends.windows(2).any(|w| w[0].stream == w[1].stream) {
        return Err(AppendError::Invalid("a stream may appear only once in an append"));
    }
    Ok(())
}

/// An append that failed; `older_transaction` marks the refusal a new transaction would not meet.
pub(crate) struct Failure {
    pub error: AppendError,
    pub older_transaction: bool,
}

impl<E: Into<AppendError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { error: e.into(), older_transaction: false }
    }
}

pub(crate) async fn append<'e, E>(
    executor: E,
    appends: &[StreamAppend],
    idempotency: Option<&IdempotencyRecord>,
) -> Result<Vec<AppendedStream>, Failure>
where
    E: Executor<'e, Database = Postgres>,
{
    let cols = columns(appends)?;
    let result = sqlx::query(APPEND)
        .bind(&cols.category)
        .bind(&cols.stream_id)
        .bind(&cols.expected)
        .bind(&cols.count)
        .bind(&cols.event_id)
        .bind(&cols.event_type)
        .bind(&cols.schema_version)
        .bind(&cols.data)
        .bind(&cols.metadata)
        .bind(&cols.content)
        .bind(idempotency.map(|r| r.scope.as_str()))
        .bind(idempotency.map(|r| r.key.as_str()))
        .bind(idempotency.map(|r| r.request_hash.as_slice()))
        .bind(idempotency.map(|r| i16::try_from(r.response_status).unwrap_or(i16::MAX)))
        .bind(idempotency.map(|r| &r.response_body))
        .fetch_all(executor)
        .await;
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let older_transaction = sqlstate_of(&e).as_deref() == Some(OLDER_TRANSACTION);
            return Err(Failure { error: classify(e, appends, idempotency), older_transaction });
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let category: String = row.try_get("out_category")?;
        out.push(AppendedStream {
            stream: StreamRef::new(parse_category(&category)?, row.try_get("out_stream_id")?),
            version: row.try_get("out_version")?,
            first_position: row.try_get("out_first")?,
            last_position: row.try_get("out_last").map_err(AppendError::from)?,
        });
    }
    out.sort_by_key(|a| a.stream);
    Ok(out)
}

fn columns(appends: &[StreamAppend]) -> Result<Columns, AppendError> {
    let mut c = Columns::default();
    for a in appends {
        c.category.push(a.stream.category.as_str());
        c.stream_id.push(a.stream.id);
        c.expected.push(match a.expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
        });
        c.count.push(i32::try_from(a.events.len()).map_err(|_| AppendError::Invalid("too many events"))?);
        for e in &a.events {
            let metadata = serde_json::to_value(&e.metadata)
                .map_err(|err| StoreError::Corrupt(format!("metadata does not serialise: {err}")))?;
            c.content.push(content_bytes(&HashInput {
                category: a.stream.category.as_str(),
                stream_id: a.stream.id,
                // Version and recorded_at are hashed by the database after the content.
                version: 0,
                event_id: e.metadata.event_id,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                data: &e.data,
                metadata: &metadata,
                recorded_at: chrono::DateTime::UNIX_EPOCH,
            }));
            c.event_id.push(e.metadata.event_id);
            c.event_type.push(e.event_type.clone());
            c.schema_version.push(e.schema_version);
            c.data.push(e.data.clone());
            c.metadata.push(metadata);
        }
    }
    Ok(c)
}

/// Turns the database's refusals into typed errors, by SQLSTATE and constraint name.
fn classify(e: sqlx::Error, appends: &[StreamAppend], idempotency: Option<&IdempotencyRecord>) -> AppendError {
    let code = sqlstate_of(&e);
    let sqlx::Error::Database(db) = &e else { return e.into() };
    if code.as_deref() == Some(VERSION_CONFLICT) || code.as_deref() == Some(OLDER_TRANSACTION) {
        if let Some(conflict) = conflict_from_detail(db.as_ref(), appends) {
            return conflict;
        }
    }
    if code.as_deref() == Some(sqlstate::UNIQUE_VIOLATION) && db.constraint() == Some(IDEMPOTENCY_PKEY) {
        if let Some(r) = idempotency {
            return AppendError::IdempotencyKeyTaken { scope: r.scope.clone(), key: r.key.clone() };
        }
    }
    e.into()
}

fn conflict_from_detail(db: &dyn sqlx::error::DatabaseError, appends: &[StreamAppend]) -> Option<AppendError> {
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    let detail: serde_json::Value = serde_json::from_str(pg.detail()?).ok()?;
    let index = usize::try_from(detail.get("index")?.as_i64()?).ok()?.checked_sub(1)?;
    let actual = detail.get("actual")?.as_i64()?;
    let a = appends.get(index)?;
    Some(AppendError::Conflict { stream: a.stream, expected: a.expected, actual })
}
