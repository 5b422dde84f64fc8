//! Reads of single streams, of the whole log in commit-safe order, and of bookkeeping rows.

use ordo_schemas::StreamRef;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::StoreError;
use crate::types::{parse_category, Backlog, IdempotencyRecord, LogCursor, RecordedEvent, WriterLockHolder};

pub(crate) const EVENT_COLUMNS: &str = "position, category, stream_id, version, event_id, event_type, \
     schema_version, data, metadata, recorded_at, prev_hash, hash";

pub(crate) fn event_from_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let category: String = row.try_get("category")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        stream: StreamRef::new(parse_category(&category)?, row.try_get("stream_id")?),
        version: row.try_get("version")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        data: row.try_get("data")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

pub(crate) async fn read_stream(
    pool: &PgPool,
    stream: StreamRef,
    from_version: i64,
    to_version: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE category = $1 AND stream_id = $2 AND version >= $3 AND version <= $4 ORDER BY version"
    );
    let rows = sqlx::query(&sql)
        .bind(stream.category.as_str())
        .bind(stream.id)
        .bind(from_version)
        .bind(to_version)
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from_row).collect()
}

pub(crate) async fn stream_version(pool: &PgPool, stream: StreamRef) -> Result<i64, StoreError> {
    let v: Option<i64> = sqlx::query_scalar("SELECT version FROM streams WHERE category = $1 AND stream_id = $2")
        .bind(stream.category.as_str())
        .bind(stream.id)
        .fetch_optional(pool)
        .await?;
    Ok(v.unwrap_or(0))
}

/// Reads in position order. Positions follow commit order (appends hold the writer lock until
/// their commit is visible), so nothing can later commit in front of the cursor.
pub(crate) async fn read_all(
    pool: &PgPool,
    cursor: LogCursor,
    limit: i64,
) -> Result<(Vec<RecordedEvent>, LogCursor), StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
    let rows = sqlx::query(&sql).bind(cursor.position).bind(limit.max(1)).fetch_all(pool).await?;
    let events = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
    let next = events.last().map_or(cursor, LogCursor::after);
    Ok((events, next))
}

/// The cursor of the last event in the log: reading from it yields only events appended later.
pub(crate) async fn head_cursor(pool: &PgPool) -> Result<LogCursor, StoreError> {
    let last: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(pool).await?;
    Ok(LogCursor::at(last.unwrap_or(0)))
}

pub(crate) async fn backlog(pool: &PgPool, cursor: LogCursor) -> Result<Backlog, StoreError> {
    let row = sqlx::query(
        "SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(recorded_at))::float8, 0) AS age \
         FROM events WHERE position > $1",
    )
    .bind(cursor.position)
    .fetch_one(pool)
    .await?;
    let age: f64 = row.try_get("age")?;
    Ok(Backlog { events: row.try_get("n")?, oldest_seconds: age.max(0.0) })
}

/// The session holding the writer lock, if one does.
pub(crate) async fn writer_lock_holder(pool: &PgPool) -> Result<Option<WriterLockHolder>, StoreError> {
    let row = sqlx::query(
        "SELECT a.pid, COALESCE(a.application_name, '') AS application_name, COALESCE(a.state, '') AS state, \
                COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8, 0) AS held \
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
            AND l.classid = ((ordo_writer_lock_key() >> 32) & 4294967295)::oid \
            AND l.objid = (ordo_writer_lock_key() & 4294967295)::oid AND l.objsubid = 1 \
          LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(WriterLockHolder {
            pid: r.try_get("pid")?,
            application_name: r.try_get("application_name")?,
            state: r.try_get("state")?,
            held_seconds: r.try_get("held")?,
        })
    })
    .transpose()
}

pub(crate) async fn find_idempotency(
    pool: &PgPool,
    scope: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let status: i16 = r.try_get("response_status")?;
        Ok(IdempotencyRecord {
            scope: scope.to_owned(),
            key: key.to_owned(),
            request_hash: r.try_get("request_hash")?,
            response_status: u16::try_from(status).map_err(|_| StoreError::Corrupt("negative status".into()))?,
            response_body: r.try_get("response_body")?,
        })
    })
    .transpose()
}

pub(crate) async fn load_checkpoint(pool: &PgPool, name: &str) -> Result<LogCursor, StoreError> {
    let row = sqlx::query("SELECT position FROM checkpoints WHERE name = $1").bind(name).fetch_optional(pool).await?;
    match row {
        Some(r) => Ok(LogCursor::at(r.try_get("position")?)),
        None => Ok(LogCursor::START),
    }
}

pub(crate) async fn save_checkpoint(pool: &PgPool, name: &str, cursor: LogCursor) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) \
         ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
    )
    .bind(name)
    .bind(cursor.position)
    .execute(pool)
    .await?;
    Ok(())
}
