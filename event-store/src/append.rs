//! Appending events: expected versions are checked (and stream heads locked) before any global
//! position is taken, so a losing writer never burns a position.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_schemas::StreamRef;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::error::{sqlstate, sqlstate_of, AppendError, ExpectedVersion, StoreError};
use crate::hash::{event_hash, HashInput};
use crate::types::{AppendedStream, IdempotencyRecord, StreamAppend};

/// A stream's head as locked at the start of an append.
struct Head {
    version: i64,
    hash: Vec<u8>,
}

const LOCK_HEADS: &str = r#"
WITH locked AS (
    SELECT s.category, s.stream_id, s.version, s.head_hash
    FROM streams s
    JOIN UNNEST($1::text[], $2::uuid[]) AS u(category, stream_id)
      ON s.category = u.category AND s.stream_id = u.stream_id
    ORDER BY s.category, s.stream_id
    FOR UPDATE OF s
)
SELECT now() AS ts, l.category, l.stream_id, l.version, l.head_hash
FROM (SELECT 1) AS one LEFT JOIN locked l ON true
"#;

const CLAIM_STREAMS: &str = r#"
INSERT INTO streams (category, stream_id, version, head_hash)
SELECT category, stream_id, 0, '\x'::bytea FROM UNNEST($1::text[], $2::uuid[]) AS u(category, stream_id)
ON CONFLICT (category, stream_id) DO NOTHING
RETURNING category, stream_id
"#;

const WRITE_EVENTS: &str = r#"
WITH ins AS (
    INSERT INTO events (category, stream_id, version, event_id, event_type, schema_version,
                        data, metadata, recorded_at, prev_hash, hash)
    SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::bigint[], $4::uuid[], $5::text[], $6::int[],
                         $7::jsonb[], $8::jsonb[], $9::timestamptz[], $10::bytea[], $11::bytea[])
    RETURNING category, stream_id, version, position
), heads AS (
    UPDATE streams s SET version = h.version, head_hash = h.head_hash, updated_at = now()
    FROM UNNEST($12::text[], $13::uuid[], $14::bigint[], $15::bytea[]) AS h(category, stream_id, version, head_hash)
    WHERE s.category = h.category AND s.stream_id = h.stream_id
    RETURNING 1
)
SELECT category, stream_id, min(position) AS first_position, max(position) AS last_position,
       max(version) AS version, (SELECT count(*) FROM heads) AS heads_updated
FROM ins GROUP BY category, stream_id
"#;

const INSERT_IDEMPOTENCY: &str = r#"
INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body)
VALUES ($1, $2, $3, $4, $5)
"#;

/// Columns of the events insert, one vector per column.
#[derive(Default)]
struct EventColumns {
    category: Vec<String>,
    stream_id: Vec<Uuid>,
    version: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    data: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    recorded_at: Vec<DateTime<Utc>>,
    prev_hash: Vec<Option<Vec<u8>>>,
    hash: Vec<Vec<u8>>,
}

#[derive(Default)]
struct HeadColumns {
    category: Vec<String>,
    stream_id: Vec<Uuid>,
    version: Vec<i64>,
    hash: Vec<Vec<u8>>,
}

pub(crate) async fn append(
    tx: &mut Transaction<'_, Postgres>,
    appends: &mut [StreamAppend],
    idempotency: Option<&IdempotencyRecord>,
) -> Result<Vec<AppendedStream>, AppendError> {
    if appends.is_empty() || appends.iter().any(|a| a.events.is_empty()) {
        return Err(AppendError::Invalid("every stream in an append needs at least one event"));
    }
    // A fixed lock order keeps concurrent multi-stream appends from deadlocking.
    appends.sort_by_key(|a| a.stream);
    if appends.windows(2).any(|w| w[0].stream == w[1].stream) {
        return Err(AppendError::Invalid("a stream may appear only once in an append"));
    }
    let categories: Vec<&str> = appends.iter().map(|a| a.stream.category.as_str()).collect();
    let ids: Vec<Uuid> = appends.iter().map(|a| a.stream.id).collect();

    let rows = sqlx::query(LOCK_HEADS).bind(&categories).bind(&ids).fetch_all(&mut **tx).await?;
    let recorded_at: DateTime<Utc> = match rows.first() {
        Some(row) => row.try_get("ts")?,
        None => return Err(StoreError::Corrupt("head lock returned no row".into()).into()),
    };
    let mut heads: HashMap<StreamRef, Head> = HashMap::new();
    for row in &rows {
        let Some(category) = row.try_get::<Option<String>, _>("category")? else { continue };
        let stream = StreamRef::new(crate::types::parse_category(&category)?, row.try_get("stream_id")?);
        heads.insert(stream, Head { version: row.try_get("version")?, hash: row.try_get("head_hash")? });
    }

    for a in appends.iter() {
        let actual = heads.get(&a.stream).map_or(0, |h| h.version);
        if !expectation_holds(a.expected, actual) {
            return Err(AppendError::Conflict { stream: a.stream, expected: a.expected, actual });
        }
    }

    // Streams without a head row are claimed first: a concurrent creator of the same stream
    // blocks here and then finds the row taken, before either of us takes a position.
    let new: Vec<&StreamAppend> = appends.iter().filter(|a| !heads.contains_key(&a.stream)).collect();
    if !new.is_empty() {
        let cats: Vec<&str> = new.iter().map(|a| a.stream.category.as_str()).collect();
        let ids: Vec<Uuid> = new.iter().map(|a| a.stream.id).collect();
        let claimed = sqlx::query(CLAIM_STREAMS).bind(&cats).bind(&ids).fetch_all(&mut **tx).await?;
        if claimed.len() != new.len() {
            let lost = new
                .iter()
                .find(|a| {
                    !claimed.iter().any(|r| {
                        r.try_get::<Uuid, _>("stream_id").ok() == Some(a.stream.id)
                            && r.try_get::<String, _>("category").ok().as_deref() == Some(a.stream.category.as_str())
                    })
                })
                .map_or(new[0], |a| *a);
            return Err(AppendError::Conflict { stream: lost.stream, expected: lost.expected, actual: 1 });
        }
    }

    if let Some(record) = idempotency {
        let res = sqlx::query(INSERT_IDEMPOTENCY)
            .bind(&record.scope)
            .bind(&record.key)
            .bind(&record.request_hash)
            .bind(i16::try_from(record.response_status).unwrap_or(i16::MAX))
            .bind(&record.response_body)
            .execute(&mut **tx)
            .await;
        if let Err(e) = res {
            if sqlstate_of(&e).as_deref() == Some(sqlstate::UNIQUE_VIOLATION) {
                return Err(AppendError::IdempotencyKeyTaken { scope: record.scope.clone(), key: record.key.clone() });
            }
            return Err(e.into());
        }
    }

    let (events, new_heads) = build_rows(appends, &heads, recorded_at);
    let rows = sqlx::query(WRITE_EVENTS)
        .bind(&events.category)
        .bind(&events.stream_id)
        .bind(&events.version)
        .bind(&events.event_id)
        .bind(&events.event_type)
        .bind(&events.schema_version)
        .bind(&events.data)
        .bind(&events.metadata)
        .bind(&events.recorded_at)
        .bind(&events.prev_hash)
        .bind(&events.hash)
        .bind(&new_heads.category)
        .bind(&new_heads.stream_id)
        .bind(&new_heads.version)
        .bind(&new_heads.hash)
        .fetch_all(&mut **tx)
        .await?;

    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let category: String = row.try_get("category")?;
        out.push(AppendedStream {
            stream: StreamRef::new(crate::types::parse_category(&category)?, row.try_get("stream_id")?),
            version: row.try_get("version")?,
            first_position: row.try_get("first_position")?,
            last_position: row.try_get("last_position")?,
        });
    }
    out.sort_by_key(|a| a.stream);
    Ok(out)
}

fn expectation_holds(expected: ExpectedVersion, actual: i64) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == 0,
        ExpectedVersion::Exact(v) => v == actual,
    }
}

/// Numbers the events, chains their hashes and computes each stream's new head.
fn build_rows(
    appends: &[StreamAppend],
    heads: &HashMap<StreamRef, Head>,
    recorded_at: DateTime<Utc>,
) -> (EventColumns, HeadColumns) {
    let mut ev = EventColumns::default();
    let mut hd = HeadColumns::default();
    for a in appends {
        let head = heads.get(&a.stream);
        let mut version = head.map_or(0, |h| h.version);
        let mut prev: Option<Vec<u8>> = head.filter(|h| h.version > 0).map(|h| h.hash.clone());
        for e in &a.events {
            version += 1;
            let metadata = metadata_value(&e.metadata);
            let hash = event_hash(
                prev.as_deref(),
                &HashInput {
                    category: a.stream.category.as_str(),
                    stream_id: a.stream.id,
                    version,
                    event_id: e.metadata.event_id,
                    event_type: &e.event_type,
                    schema_version: e.schema_version,
                    data: &e.data,
                    metadata: &metadata,
                    recorded_at,
                },
            )
            .to_vec();
            ev.category.push(a.stream.category.as_str().to_owned());
            ev.stream_id.push(a.stream.id);
            ev.version.push(version);
            ev.event_id.push(e.metadata.event_id);
            ev.event_type.push(e.event_type.clone());
            ev.schema_version.push(e.schema_version);
            ev.data.push(e.data.clone());
            ev.metadata.push(metadata);
            ev.recorded_at.push(recorded_at);
            ev.prev_hash.push(prev.take());
            prev = Some(hash.clone());
            ev.hash.push(hash);
        }
        hd.category.push(a.stream.category.as_str().to_owned());
        hd.stream_id.push(a.stream.id);
        hd.version.push(version);
        hd.hash.push(prev.unwrap_or_default());
    }
    (ev, hd)
}

fn metadata_value(m: &ordo_schemas::EventMetadata) -> serde_json::Value {
    serde_json::to_value(m).unwrap_or(serde_json::Value::Null)
}
