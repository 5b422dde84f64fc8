//! Searching the whole log in position order: by position or time range, event type, actor,
//! correlation id or category, with keyset pagination. Serves audit search and export.

use chrono::{DateTime, Utc};
use ordo_schemas::StreamCategory;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::StoreError;
use crate::read::{event_from_row, EVENT_COLUMNS};
use crate::types::RecordedEvent;

/// Filters of a log search; `None` means "any". Ranges are inclusive of `from`, exclusive of `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub from_time: Option<DateTime<Utc>>,
    pub to_time: Option<DateTime<Utc>>,
    pub from_position: Option<i64>,
    pub to_position: Option<i64>,
    pub event_type: Option<String>,
    pub actor: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub category: Option<StreamCategory>,
}

/// Up to `limit` matching events with position greater than `after`, in position order.
pub async fn search(pool: &PgPool, query: &LogQuery, after: i64, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE position > $1 \
           AND ($2::timestamptz IS NULL OR recorded_at >= $2) \
           AND ($3::timestamptz IS NULL OR recorded_at < $3) \
           AND ($4::bigint IS NULL OR position >= $4) \
           AND ($5::bigint IS NULL OR position < $5) \
           AND ($6::text IS NULL OR event_type = $6) \
           AND ($7::uuid IS NULL OR (metadata -> 'actor' ->> 'id')::uuid = $7) \
           AND ($8::uuid IS NULL OR (metadata ->> 'correlation_id')::uuid = $8) \
           AND ($9::text IS NULL OR category = $9) \
         ORDER BY position LIMIT $10"
    );
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(query.from_time)
        .bind(query.to_time)
        .bind(query.from_position)
        .bind(query.to_position)
        .bind(query.event_type.as_deref())
        .bind(query.actor)
        .bind(query.correlation_id)
        .bind(query.category.map(|c| c.as_str()))
        .bind(limit.clamp(1, 10_000))
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from_row).collect()
}
