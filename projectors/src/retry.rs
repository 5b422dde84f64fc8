//! Retrying parked streams from the Postgres log after a fix.

use ordo_event_store::EventStore;
use ordo_schemas::{StreamCategory, StreamRef};
use sqlx::{PgPool, Row};

use crate::apply::{Applying, Changes, WriteError};
use crate::bookkeeping::Applied;
use crate::model::{Projection, Target};
use crate::ProjectorError;

/// What a retry did to one parked stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOutcome {
    pub projection: Projection,
    pub stream: StreamRef,
    /// The stream applies again.
    pub unparked: bool,
    /// Events applied from the log.
    pub applied: u64,
    /// Why it is still parked.
    pub error: Option<String>,
}

/// Re-applies parked streams from the log, after the last version each projection applied, and
/// unparks each stream whose events all apply. `None` filters match every projection / stream.
///
/// Each stream is retried in its own transaction, holding the projection's advisory lock shared
/// (like a live batch) and the parked row and progress row locked, so it cannot interleave with
/// a live batch or a rebuild swap. Later Kafka deliveries of the re-applied events are skipped as
/// redeliveries. A stream whose event still fails stays parked with the new error.
///
/// # Errors
/// [`ProjectorError`] when the database fails.
pub async fn retry_parked(
    pool: &PgPool,
    projection: Option<Projection>,
    stream: Option<StreamRef>,
) -> Result<Vec<RetryOutcome>, ProjectorError> {
    let names: Vec<String> = Projection::ALL
        .into_iter()
        .filter(|p| projection.is_none_or(|want| want == *p))
        .map(|p| p.name().to_owned())
        .collect();
    let rows = sqlx::query(
        "SELECT projection, category, stream_id FROM parked_streams WHERE projection = ANY($1) \
         AND ($2::uuid IS NULL OR stream_id = $2) AND ($3::text IS NULL OR category = $3) ORDER BY parked_at",
    )
    .bind(&names)
    .bind(stream.map(|s| s.id))
    .bind(stream.map(|s| s.category.as_str()))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let p: String = row.try_get("projection")?;
        let c: String = row.try_get("category")?;
        let (Some(p), Some(c)) = (Projection::parse(&p), StreamCategory::parse(&c)) else { continue };
        let s = StreamRef::new(c, row.try_get("stream_id")?);
        out.push(retry_one(pool, p, s).await?);
    }
    Ok(out)
}

async fn retry_one(pool: &PgPool, projection: Projection, stream: StreamRef) -> Result<RetryOutcome, ProjectorError> {
    let target = Target::live(projection);
    let mut outcome = RetryOutcome { projection, stream, unparked: false, applied: 0, error: None };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(projection.lock_key()).execute(&mut *tx).await?;
    let still_parked = sqlx::query(
        "SELECT 1 FROM parked_streams WHERE projection = $1 AND category = $2 AND stream_id = $3 FOR UPDATE",
    )
    .bind(&target.key)
    .bind(stream.category.as_str())
    .bind(stream.id)
    .fetch_optional(&mut *tx)
    .await?;
    if still_parked.is_none() {
        outcome.unparked = true;
        return Ok(outcome);
    }
    let progress = sqlx::query(
        "SELECT version, position FROM projection_progress \
         WHERE projection = $1 AND category = $2 AND stream_id = $3 FOR UPDATE",
    )
    .bind(target.progress_key())
    .bind(stream.category.as_str())
    .bind(stream.id)
    .fetch_optional(&mut *tx)
    .await?;
    let (mut version, mut position) = match progress {
        Some(r) => (r.try_get::<i64, _>("version")?, r.try_get::<i64, _>("position")?),
        None => (0, 0),
    };
    let mut last_recorded_at = None;
    let events = EventStore::new(pool.clone()).read_stream(stream, version + 1).await?;
    let mut changes = Changes::new(projection);
    let mut failed = None;
    for e in &events {
        let decoded = ordo_schemas::AnyEvent::decode(stream.category, &e.event_type, e.schema_version, e.data.clone());
        let folded = match &decoded {
            Ok(event) => changes.fold(&Applying {
                stream,
                version: e.version,
                position: e.position,
                recorded_at: e.recorded_at,
                event,
            }),
            Err(err) => Err(err.to_string()),
        };
        if let Err(error) = folded {
            failed = Some((e.version, error));
            break;
        }
        version = e.version;
        position = e.position;
        last_recorded_at = Some(e.recorded_at);
        outcome.applied += 1;
    }
    if failed.is_none() && outcome.applied > 0 {
        let mismatched = changes.write(&mut tx, &target).await.map_err(|e| match e {
            WriteError::Db(e) => ProjectorError::Database(e),
            WriteError::Data(message) => ProjectorError::Other(message),
        })?;
        if !mismatched.is_empty() {
            let first = version - i64::try_from(outcome.applied).unwrap_or(0) + 1;
            failed = Some((first, format!("no {projection} row of {stream} at version {}", first - 1)));
        }
    }
    if let Some((at, error)) = failed {
        drop(tx);
        sqlx::query("UPDATE parked_streams SET reason = $4 WHERE projection = $1 AND category = $2 AND stream_id = $3")
            .bind(&target.key)
            .bind(stream.category.as_str())
            .bind(stream.id)
            .bind(&error)
            .execute(pool)
            .await?;
        tracing::warn!(projection = %projection, stream = %stream, version = at, %error, "retry of parked stream failed");
        outcome.applied = 0;
        outcome.error = Some(error);
        return Ok(outcome);
    }
    if outcome.applied > 0 {
        let mut applied = Applied::default();
        applied.push(&target, stream, version, position, i64::try_from(outcome.applied).unwrap_or(i64::MAX));
        applied.recorded(&target.key, last_recorded_at);
        applied.save(&mut tx, None, &[]).await?;
    }
    sqlx::query("DELETE FROM parked_streams WHERE projection = $1 AND category = $2 AND stream_id = $3")
        .bind(&target.key)
        .bind(stream.category.as_str())
        .bind(stream.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE dead_letters SET resolved_at = now() \
         WHERE projection = $1 AND category = $2 AND stream_id = $3 AND resolved_at IS NULL",
    )
    .bind(&target.key)
    .bind(stream.category.as_str())
    .bind(stream.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(projection = %projection, stream = %stream, applied = outcome.applied, "parked stream retried and unparked");
    outcome.unparked = true;
    Ok(outcome)
}
