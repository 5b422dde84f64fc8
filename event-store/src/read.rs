//! Reads of single streams, of the whole log in commit-safe order, and of bookkeeping rows.

use ordo_schemas::StreamRef;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::StoreError;
use crate::types::{parse_category, HorizonLag, IdempotencyRecord, LogCursor, RecordedEvent};

pub(crate) const EVENT_COLUMNS: &str = "position, tx_id, category, stream_id, version, event_id, event_type, \
     schema_version, data, metadata, recorded_at, prev_hash, hash";

pub(crate) fn event_from_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let category: String = row.try_get("category")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        tx_id: row.try_get("tx_id")?,
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

/// Reads in `(tx_id, position)` order and only rows written by transactions older than the
/// oldest one still running: such a transaction has finished, so nothing can later commit in
/// front of the cursor.
pub(crate) async fn read_all(
    pool: &PgPool,
    cursor: LogCursor,
    limit: i64,
) -> Result<(Vec<RecordedEvent>, LogCursor), StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE (tx_id, position) > ($1, $2) \
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
         ORDER BY tx_id, position LIMIT $3"
    );
    let rows = sqlx::query(&sql).bind(cursor.tx_id).bind(cursor.position).bind(limit.max(1)).fetch_all(pool).await?;
    let events = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
    let next = events.last().map_or(cursor, LogCursor::after);
    Ok((events, next))
}

pub(crate) async fn horizon_lag(pool: &PgPool) -> Result<HorizonLag, StoreError> {
    let row = sqlx::query(
        "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) \
         SELECT (SELECT count(*) FROM events, h WHERE tx_id >= h.xmin) AS held, \
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(xact_start))::float8 \
                          FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
                            AND pid <> pg_backend_pid()), 0) AS oldest",
    )
    .fetch_one(pool)
    .await?;
    Ok(HorizonLag { events_held_back: row.try_get("held")?, oldest_open_xact_seconds: row.try_get("oldest")? })
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
    let row =
        sqlx::query("SELECT tx_id, position FROM checkpoints WHERE name = $1").bind(name).fetch_optional(pool).await?;
    match row {
        Some(r) => Ok(LogCursor { tx_id: r.try_get("tx_id")?, position: r.try_get("position")? }),
        None => Ok(LogCursor::START),
    }
}

pub(crate) async fn save_checkpoint(pool: &PgPool, name: &str, cursor: LogCursor) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (name, tx_id, position, updated_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (name) DO UPDATE SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()",
    )
    .bind(name)
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn transaction_ids_ahead(pool: &PgPool) -> Result<Option<(i64, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT max(tx_id) FROM events) AS stored, pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next",
    )
    .fetch_one(pool)
    .await?;
    let stored: Option<i64> = row.try_get("stored")?;
    let next: i64 = row.try_get("next")?;
    Ok(stored.filter(|s| *s >= next).map(|s| (s, next)))
}
