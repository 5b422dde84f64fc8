//! Hash-chain verification: recomputes every event's hash from the stored columns and names
//! each broken link (changed payload, missing version, reordered events, wrong stream head).

mod canonical;
mod walk;

use std::sync::Arc;

use ordo_schemas::{StreamCategory, StreamRef};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::StoreError;
use crate::hash::{event_hash, HashInput};
use crate::progress::Progress;
use crate::types::RecordedEvent;

/// What is wrong at one link of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum LinkProblem {
    /// The stored hash does not match the event's content: the event was altered.
    HashMismatch { stored: String, computed: String },
    /// The event does not point at its predecessor's hash: events were reordered or replaced.
    PrevHashMismatch { stored: Option<String>, expected: Option<String> },
    /// Versions before this event are missing: events were deleted.
    MissingVersions { from: i64, to: i64 },
    /// The stream head does not match the last stored event: events were removed at the end.
    HeadMismatch { head_version: i64, last_version: Option<i64> },
}

/// One broken link, located by stream, version and position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub category: StreamCategory,
    pub stream_id: Uuid,
    pub version: i64,
    pub position: Option<i64>,
    #[serde(flatten)]
    pub problem: LinkProblem,
}

/// The result of checking one stream, a category or the whole log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Events whose hash was recomputed.
    pub checked: u64,
    pub streams: u64,
    pub broken: Vec<BrokenLink>,
}

/// Checks the chains of one stream, one category, or (both `None`) the whole log.
///
/// # Errors
/// [`StoreError`] when the database fails or a stored payload is not JSON.
pub async fn verify(
    pool: &PgPool,
    category: Option<StreamCategory>,
    stream_id: Option<Uuid>,
) -> Result<VerifyReport, StoreError> {
    verify_with(pool, category, stream_id, Arc::new(Progress::new())).await
}

/// [`verify`], counting the events checked in `progress` (its total is set first). The
/// stream-id space of each category is cut into ranges walked concurrently (as many at once as
/// half of `pool`'s connections, at most four), each by one streaming read in chain order, on
/// the runtime's worker threads.
///
/// # Errors
/// As [`verify`].
pub async fn verify_with(
    pool: &PgPool,
    category: Option<StreamCategory>,
    stream_id: Option<Uuid>,
    progress: Arc<Progress>,
) -> Result<VerifyReport, StoreError> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE ($1::text IS NULL OR category = $1) AND ($2::uuid IS NULL OR stream_id = $2)",
    )
    .bind(category.map(|c| c.as_str()))
    .bind(stream_id)
    .fetch_one(pool)
    .await?;
    progress.set_total(total.unsigned_abs());
    let slices = walk::slices(category, stream_id);
    // at most half of the pool's connections, so the pool's other users are not starved
    let connections = usize::try_from(pool.options().get_max_connections() / 2).unwrap_or(1);
    let walkers = usize::try_from(walk::RANGES).unwrap_or(4).min(connections).max(1);
    let mut report = VerifyReport::default();
    let mut pending = slices.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < walkers {
            let Some(slice) = pending.next() else { break };
            running.spawn(walk::walk(pool.clone(), slice, progress.clone()));
        }
        let Some(done) = running.join_next().await else { break };
        let part = done.map_err(|e| StoreError::Corrupt(format!("a verification walker failed: {e}")))??;
        report.checked += part.checked;
        report.streams += part.streams;
        report.broken.extend(part.broken);
    }
    report.broken.sort_by_key(|b| (b.category, b.stream_id, b.version));
    report.ok = report.broken.is_empty();
    Ok(report)
}

/// The hash an event should carry given the prev_hash it stores.
pub fn recompute(event: &RecordedEvent) -> [u8; 32] {
    event_hash(
        event.prev_hash.as_deref(),
        &HashInput {
            category: event.stream.category.as_str(),
            stream_id: event.stream.id,
            version: event.version,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            data: &event.data,
            metadata: &event.metadata,
            recorded_at: event.recorded_at,
        },
    )
}

/// Whether a stream's current history still extends a digest saved earlier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestProof {
    /// True when the chain up to the head is intact and its event at `version` has `head_hash`.
    pub extends: bool,
    pub version: i64,
    pub head_hash: String,
    pub current_version: i64,
    pub current_head_hash: Option<String>,
    /// Every broken link found in the stream (empty when `extends`).
    pub broken: Vec<BrokenLink>,
    /// Why the proof failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Proves (or refutes) that the stream's current history extends the digest `(version, head_hash)`.
pub async fn prove_digest(
    pool: &PgPool,
    stream: StreamRef,
    version: i64,
    head_hash: &str,
) -> Result<DigestProof, StoreError> {
    let report = verify(pool, Some(stream.category), Some(stream.id)).await?;
    let at: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM events WHERE category = $1 AND stream_id = $2 AND version = $3")
            .bind(stream.category.as_str())
            .bind(stream.id)
            .bind(version)
            .fetch_optional(pool)
            .await?;
    let head = sqlx::query("SELECT version, head_hash FROM streams WHERE category = $1 AND stream_id = $2")
        .bind(stream.category.as_str())
        .bind(stream.id)
        .fetch_optional(pool)
        .await?;
    let (current_version, current_head_hash) = match head {
        Some(r) => (r.try_get::<i64, _>("version")?, Some(hex::encode(r.try_get::<Vec<u8>, _>("head_hash")?))),
        None => (0, None),
    };
    let reason = match at {
        None => Some(format!("the stream has no event at version {version}")),
        Some(h) if !hex::encode(&h).eq_ignore_ascii_case(head_hash) => {
            Some(format!("the event at version {version} no longer has the saved hash"))
        }
        Some(_) if !report.ok => Some("the chain is broken".to_owned()),
        Some(_) => None,
    };
    Ok(DigestProof {
        extends: reason.is_none(),
        version,
        head_hash: head_hash.to_owned(),
        current_version,
        current_head_hash,
        broken: report.broken,
        reason,
    })
}

/// Recomputes the hash of an exported or published envelope (its metadata minus `recorded_at`
/// is exactly the stored metadata), so exports can be verified without the database.
pub fn envelope_hash(envelope: &ordo_schemas::EventEnvelope) -> Result<[u8; 32], StoreError> {
    let mut metadata = serde_json::to_value(&envelope.metadata.metadata)
        .map_err(|e| StoreError::Corrupt(format!("envelope metadata: {e}")))?;
    if let Some(map) = metadata.as_object_mut() {
        map.remove("recorded_at");
    }
    let prev = match &envelope.prev_hash {
        Some(h) => Some(hex::decode(h).map_err(|e| StoreError::Corrupt(format!("prev_hash: {e}")))?),
        None => None,
    };
    Ok(event_hash(
        prev.as_deref(),
        &HashInput {
            category: envelope.category.as_str(),
            stream_id: envelope.stream_id,
            version: envelope.version,
            event_id: envelope.metadata.metadata.event_id,
            event_type: &envelope.event_type,
            schema_version: envelope.schema_version,
            data: &envelope.data,
            metadata: &metadata,
            recorded_at: envelope.metadata.recorded_at,
        },
    ))
}
