//! The walk over the chains: the stream-id space of each category is cut into ranges walked
//! concurrently, each by one streaming read of the hashed columns in chain order, hashed on the
//! runtime's worker threads. Beside it, in the same snapshot, a read of the slice's heads from
//! `streams` in the same order checks each stream's head against its last event on the way,
//! without a second pass of one index probe per stream. Memory is a page of events and one of
//! heads per walker plus the broken links found.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ordo_schemas::StreamCategory;
use sqlx::{PgConnection, PgPool};
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

/// One event of the walk: the hashed columns, payloads as text.
type ChainRow = (i64, Uuid, i64, Uuid, String, i32, String, String, DateTime<Utc>, Option<Vec<u8>>, Vec<u8>);

/// One stream head of the walk: stream id, version and head hash.
type HeadRow = (Uuid, i64, Vec<u8>);

/// The next page of each cursor (2,000 rows at a time).
const FETCH_CHAIN: &str = "FETCH 2000 FROM chain";
const FETCH_HEADS: &str = "FETCH 2000 FROM heads";

/// The events of a slice in chain order, along the unique `(category, stream_id, version)` index.
const CHAIN: &str = "DECLARE chain NO SCROLL CURSOR FOR \
     SELECT position, stream_id, version, event_id, event_type, schema_version, data::text, metadata::text, \
            recorded_at, prev_hash, hash FROM events \
      WHERE category = $1 AND ($2::uuid IS NULL OR stream_id = $2) AND stream_id >= $3 \
        AND ($4::uuid IS NULL OR stream_id < $4) \
      ORDER BY category, stream_id, version";

/// The stream heads of a slice in the same order, along the primary key of `streams`.
const HEADS: &str = "DECLARE heads NO SCROLL CURSOR FOR \
     SELECT stream_id, version, head_hash FROM streams \
      WHERE category = $1 AND ($2::uuid IS NULL OR stream_id = $2) AND stream_id >= $3 \
        AND ($4::uuid IS NULL OR stream_id < $4) \
      ORDER BY category, stream_id";

/// The heads of a slice, read a page at a time beside the events and checked against each
/// stream's last event.
struct Heads {
    page: std::vec::IntoIter<HeadRow>,
    next: Option<HeadRow>,
    done: bool,
}

impl Heads {
    async fn peek(&mut self, conn: &mut PgConnection) -> Result<Option<&HeadRow>, StoreError> {
        if self.next.is_none() {
            self.next = self.page.next();
            if self.next.is_none() && !self.done {
                let page: Vec<HeadRow> = sqlx::query_as(FETCH_HEADS).fetch_all(&mut *conn).await?;
                self.done = page.is_empty();
                self.page = page.into_iter();
                self.next = self.page.next();
            }
        }
        Ok(self.next.as_ref())
    }

    /// Checks every head up to `upto` (the stream whose chain just ended, with its last version
    /// and hash; `None`: every head left): a head before it has no events at all.
    async fn check(
        &mut self,
        conn: &mut PgConnection,
        category: StreamCategory,
        upto: Option<(Uuid, i64, Option<&[u8]>)>,
        report: &mut VerifyReport,
    ) -> Result<(), StoreError> {
        while let Some((id, version, hash)) = self.peek(conn).await? {
            let last = match upto {
                Some((stream, _, _)) if *id > stream => break,
                Some((stream, last_version, last_hash)) if *id == stream => Some((last_version, last_hash)),
                _ => None,
            };
            if last != Some((*version, Some(hash.as_slice()))) {
                report.broken.push(BrokenLink {
                    category,
                    stream_id: *id,
                    version: *version,
                    position: None,
                    problem: LinkProblem::HeadMismatch { head_version: *version, last_version: last.map(|l| l.0) },
                });
            }
            self.next = None;
        }
        Ok(())
    }
}

/// Walks one slice and reports what it found, the streams whose head is not their last event
/// included. The events and the heads are read through two cursors of one read-only
/// repeatable-read transaction, so both come from one snapshot, a page at a time.
pub(super) async fn walk(pool: PgPool, slice: Slice, progress: Arc<Progress>) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    // a cursor is planned for its first rows: index scans in chain order, no sort, no parallel
    // workers; compiling the expressions would cost more than it saves
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    for declare in [CHAIN, HEADS] {
        sqlx::query(declare)
            .bind(slice.category.as_str())
            .bind(slice.stream_id)
            .bind(slice.from)
            .bind(slice.to)
            .execute(&mut *tx)
            .await?;
    }
    let mut heads = Heads { page: Vec::new().into_iter(), next: None, done: false };
    let mut chain: Option<(Uuid, i64, Option<Vec<u8>>)> = None;
    let mut ticked = 0u64;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let page: Vec<ChainRow> = sqlx::query_as(FETCH_CHAIN).fetch_all(&mut *tx).await?;
        if page.is_empty() {
            break;
        }
        for (position, id, version, event_id, event_type, schema_version, data, metadata, at, prev, hash) in page {
            if chain.as_ref().map(|c| c.0) != Some(id) {
                if let Some((ended, v, h)) = &chain {
                    heads.check(&mut tx, slice.category, Some((*ended, *v, h.as_deref())), &mut report).await?;
                }
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
    }
    if let Some((ended, v, h)) = &chain {
        heads.check(&mut tx, slice.category, Some((*ended, *v, h.as_deref())), &mut report).await?;
    }
    heads.check(&mut tx, slice.category, None, &mut report).await?;
    tx.commit().await?;
    progress.add(ticked);
    Ok(report)
}
