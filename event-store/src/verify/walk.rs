//! The walk over the chains: the stream-id space of each category is cut into ranges walked
//! concurrently, each by one streaming read of the hashed columns in chain order (from the
//! unique `(category, stream_id, version)` index), hashed on the runtime's worker threads.
//! Memory is one stream's chain state per walker plus the broken links found.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ordo_schemas::StreamCategory;
use sqlx::PgPool;
use uuid::Uuid;

use super::canonical::{self, Row};
use super::{BrokenLink, LinkProblem, VerifyReport};
use crate::error::StoreError;
use crate::progress::Progress;

/// Ranges of stream ids per category walked concurrently for a whole-log or category check.
pub(super) const RANGES: u32 = 4;
/// Events between two updates of the progress counters.
const TICK: u64 = 512;

/// One range of one category: stream ids in `[from, to)` (`to` `None`: to the end).
#[derive(Debug, Clone, Copy)]
pub(super) struct Slice {
    pub category: StreamCategory,
    pub stream_id: Option<Uuid>,
    pub from: Uuid,
    pub to: Option<Uuid>,
}

/// The slices of a check: one per stream, else `RANGES` per category.
pub(super) fn slices(category: Option<StreamCategory>, stream_id: Option<Uuid>) -> Vec<Slice> {
    let categories: Vec<StreamCategory> = category.map_or_else(|| StreamCategory::ALL.to_vec(), |c| vec![c]);
    let mut out = Vec::new();
    for category in categories {
        if stream_id.is_some() {
            out.push(Slice { category, stream_id, from: Uuid::nil(), to: None });
            continue;
        }
        let step = u128::MAX / u128::from(RANGES) + 1;
        for i in 0..RANGES {
            let from = Uuid::from_u128(step * u128::from(i));
            let to = (i + 1 < RANGES).then(|| Uuid::from_u128(step * u128::from(i + 1)));
            out.push(Slice { category, stream_id: None, from, to });
        }
    }
    out
}

/// One row of the walk: the hashed columns, payloads as text.
type ChainRow = (i64, Uuid, i64, Uuid, String, i32, String, String, DateTime<Utc>, Option<Vec<u8>>, Vec<u8>);

/// Walks one slice and reports what it found (head mismatches excluded).
pub(super) async fn walk(pool: PgPool, slice: Slice, progress: Arc<Progress>) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query_as::<_, ChainRow>(
        "SELECT position, stream_id, version, event_id, event_type, schema_version, data::text, metadata::text, \
         recorded_at, prev_hash, hash FROM events \
         WHERE category = $1 AND ($2::uuid IS NULL OR stream_id = $2) AND stream_id >= $3 \
           AND ($4::uuid IS NULL OR stream_id < $4) \
         ORDER BY category, stream_id, version",
    )
    .bind(slice.category.as_str())
    .bind(slice.stream_id)
    .bind(slice.from)
    .bind(slice.to)
    .fetch(&mut *conn);
    let mut chain: Option<(Uuid, i64, Option<Vec<u8>>)> = None;
    let mut ticked = 0u64;
    let mut buf = Vec::with_capacity(1024);
    while let Some((position, id, version, event_id, event_type, schema_version, data, metadata, at, prev, hash)) =
        rows.try_next().await?
    {
        if chain.as_ref().map(|c| c.0) != Some(id) {
            report.streams += 1;
            chain = Some((id, 0, None));
        }
        let Some((_, last_version, last_hash)) = chain.as_mut() else { continue };
        report.checked += 1;
        let link = |problem| BrokenLink {
            category: slice.category,
            stream_id: id,
            version,
            position: Some(position),
            problem,
        };
        if version != *last_version + 1 {
            report.broken.push(link(LinkProblem::MissingVersions { from: *last_version + 1, to: version - 1 }));
        } else if prev != *last_hash {
            report.broken.push(link(LinkProblem::PrevHashMismatch {
                stored: prev.as_ref().map(hex::encode),
                expected: last_hash.as_ref().map(hex::encode),
            }));
        } else {
            let row = Row {
                category: slice.category.as_str(),
                stream_id: id,
                version,
                event_id,
                event_type: &event_type,
                schema_version,
                data: &data,
                metadata: &metadata,
                recorded_at: at,
            };
            let computed = canonical::hash(prev.as_deref(), &row, &mut buf).map_err(StoreError::Corrupt)?;
            if computed.as_slice() != hash.as_slice() {
                report.broken.push(link(LinkProblem::HashMismatch {
                    stored: hex::encode(&hash),
                    computed: hex::encode(computed),
                }));
            }
        }
        *last_version = version;
        *last_hash = Some(hash);
        ticked += 1;
        if ticked == TICK {
            progress.add(ticked);
            ticked = 0;
            // hashing is CPU work: let the other walkers and the runtime's I/O run
            tokio::task::yield_now().await;
        }
    }
    progress.add(ticked);
    Ok(report)
}
