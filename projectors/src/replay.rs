//! Drift detection: replaying a projection from the Postgres log into tables of its own and
//! diffing them with the live read model, without touching the live tables or bookkeeping.
//!
//! # How
//!
//! 1. Under session advisory locks (one replay per projection at a time), fresh UNLOGGED
//!    `<table>_replay` tables are created `LIKE` the live ones without indexes. Their progress,
//!    parked streams and dead letters live under the key `<projection>#replay`.
//! 2. The log up to a bound (the newest position at the start, or `to_position`, inclusive, when
//!    that is lower) is folded in the rebuild's one pass for every projection replayed at once
//!    (see [`crate::rebuild`] and ADR 0025) and bulk-loaded; the tables then get their primary
//!    key only (the diff needs nothing else). Streams the fold leaves out are applied with the
//!    same [`crate::Projector`] the live consumer uses. [`DriftReport::complete`] says whether
//!    the pass read as many events as the log held at or below the bound.
//! 3. The diff runs in one REPEATABLE READ, READ ONLY transaction, so the live rows and the
//!    live progress it compares are one consistent snapshot (a live batch commits both
//!    together). Rows are compared as `jsonb` over a `FULL JOIN` on the primary key read from
//!    the Postgres catalog, through a server-side cursor (memory stays bounded); at most
//!    [`LIST_LIMIT`] rows per kind are listed, all are counted.
//!
//! # Rows in flight are not drift
//!
//! A row whose stream the live projection has applied to another version than the replay (the
//! live projector is behind, or applied events newer than the bound while the replay ran) is
//! counted as `in_flight`, not reported as drift. This is decided from the per-stream progress
//! of both, not from the row (a corrupted `version` column is still drift). For the daily sales
//! rows, which add up many orders, a row is in flight when any in-flight order belongs to its
//! merchant. A row that is corrupted AND in flight is therefore not reported until its stream
//! settles: run the replay again when the projection is caught up.

mod diff;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ordo_event_store::progress::Progress;
use ordo_event_store::EventStore;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Connection, PgConnection, PgPool};

use self::diff::{diff_table, InFlight};
use crate::batch::Projector;
use crate::model::{Projection, Target};
use crate::rebuild::{apply_unfit, pass, tables};
use crate::ProjectorError;
/// Differing rows fetched from the diff cursor per round trip.
pub(crate) const FETCH: i64 = 500;
/// At most this many rows are listed per table and kind (missing, extra, different).
pub const LIST_LIMIT: usize = 1000;
/// Distinguishes the replay lock from the projection's batch and rebuild locks.
const REPLAY_LOCK: i64 = 0x0000_0000_0002_0000;

/// How to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Replay events up to this log position (inclusive); `None`: the whole committed log.
    pub to_position: Option<i64>,
    /// Keep the `<table>_replay` tables (and their bookkeeping) for inspection; the next replay
    /// of the projection replaces them.
    pub keep: bool,
    /// Kept for callers of earlier versions: the one pass reads a consistent snapshot up to the
    /// bound and waits for nothing.
    pub horizon_wait: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self { to_position: None, keep: false, horizon_wait: Duration::from_secs(30) }
    }
}

/// The result of one replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    #[serde(serialize_with = "projection_name")]
    pub projection: Projection,
    /// Events of the projection's categories applied to the replay.
    pub events: u64,
    /// The highest log position the replay included.
    pub to_position: i64,
    /// Every event committed at or below `to_position` was replayed (false when a transaction
    /// held the commit-safe horizon back longer than the wait).
    pub complete: bool,
    /// Streams the replay itself parked on a poison event.
    pub replay_parked: u64,
    pub duration_ms: u64,
    pub tables: Vec<TableDrift>,
    /// Some table has a missing, extra or different row.
    pub drift: bool,
}

/// The differences of one live table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableDrift {
    pub table: String,
    /// The primary key, from the Postgres catalog.
    pub key_columns: Vec<String>,
    /// Rows in the replay that the live table lacks.
    pub missing: Vec<RowDrift>,
    /// Rows in the live table that the replay does not have.
    pub extra: Vec<RowDrift>,
    /// Rows under the same key with other values.
    pub different: Vec<DifferentRow>,
    pub counts: DriftCounts,
}

/// How many rows of each kind (the lists stop at [`LIST_LIMIT`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriftCounts {
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Rows that differ because the live projection is at another version of their stream.
    pub in_flight: u64,
}

/// A whole row present on one side only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowDrift {
    pub key: Map<String, Value>,
    pub row: Value,
}

/// A row present on both sides with other values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DifferentRow {
    pub key: Map<String, Value>,
    pub columns: BTreeMap<String, ColumnDrift>,
}

/// One column's two values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDrift {
    pub live: Value,
    pub replay: Value,
}

impl TableDrift {
    pub fn has_drift(&self) -> bool {
        self.counts.missing + self.counts.extra + self.counts.different > 0
    }
}

fn projection_name<S: serde::Serializer>(p: &Projection, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

/// Replays `projection` from the log up to `to_position` (or the whole committed log) and diffs
/// it with the live tables; the replay tables are dropped afterwards. See the module docs.
///
/// # Errors
/// [`ProjectorError`] when the database fails or another replay of the projection is running.
pub async fn replay(
    pool: &PgPool,
    projection: Projection,
    to_position: Option<i64>,
) -> Result<DriftReport, ProjectorError> {
    replay_with(pool, projection, &ReplayOptions { to_position, ..ReplayOptions::default() }).await
}

/// [`replay`] with every option.
///
/// # Errors
/// As [`replay`]. The replay tables are dropped on error even with `keep`.
pub async fn replay_with(
    pool: &PgPool,
    projection: Projection,
    options: &ReplayOptions,
) -> Result<DriftReport, ProjectorError> {
    let mut reports = replay_all(pool, &[projection], options, &Progress::new()).await?;
    reports.pop().ok_or_else(|| ProjectorError::Other("the replay reported nothing".into()))
}

/// Replays `projections` in one pass over the log, counting its events in `progress`, and
/// diffs each with its live tables. See the module docs.
///
/// # Errors
/// As [`replay`]. The replay tables are dropped on error even with `keep`.
pub async fn replay_all(
    pool: &PgPool,
    projections: &[Projection],
    options: &ReplayOptions,
    progress: &Progress,
) -> Result<Vec<DriftReport>, ProjectorError> {
    let guard = crate::rebuild::lock_each(pool, projections, REPLAY_LOCK, "replay").await?;
    let targets: Vec<Target> = projections.iter().map(|p| Target::replay(*p)).collect();
    let result = replay_locked(pool, &targets, options, progress).await;
    if result.is_err() || !options.keep {
        for target in &targets {
            if let Err(e) = cleanup(pool, target.projection, target).await {
                tracing::warn!(error = %e, projection = %target.projection, "dropping the replay tables failed");
            }
        }
    }
    let _ = guard.close().await;
    result
}

async fn replay_locked(
    pool: &PgPool,
    targets: &[Target],
    options: &ReplayOptions,
    progress: &Progress,
) -> Result<Vec<DriftReport>, ProjectorError> {
    let started = Instant::now();
    let mut keys = Vec::new();
    for target in targets {
        let mut tx = pool.begin().await?;
        tables::create_bare(&mut tx, target, false).await?;
        clear_bookkeeping(&mut tx, &target.key).await?;
        tx.commit().await?;
        for base in target.projection.base_tables() {
            keys.push(primary_key(pool, base).await?);
        }
    }
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events").fetch_one(pool).await?;
    let bound = options.to_position.map_or(head, |p| p.min(head));
    tracing::info!(projections = targets.len(), to_position = bound, "replay started");
    let outcome = pass::run(pool, targets, bound, progress).await?;
    let complete = outcome.read == progress.total();
    for target in targets {
        tables::finish(pool, target, false).await?;
    }
    let store = EventStore::new(pool.clone());
    let projector = Projector::new(pool.clone(), targets.to_vec());
    let unfit = apply_unfit(&store, &projector, &outcome.unfit, bound).await?;

    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let mut keys = keys.into_iter();
    let mut reports = Vec::new();
    for target in targets {
        let projection = target.projection;
        let owners = InFlight::load(&mut tx, projection, target).await?;
        let mut tables = Vec::new();
        for base in projection.base_tables() {
            let key_columns = keys.next().unwrap_or_default();
            tables.push(diff_table(&mut tx, base, &target.table(base), key_columns, &owners).await?);
        }
        let replay_parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_streams WHERE projection = $1")
            .bind(&target.key)
            .fetch_one(&mut *tx)
            .await?;
        let events =
            outcome.totals.get(&projection).map_or(0, |t| t.events) + unfit.get(&projection).copied().unwrap_or(0);
        let drift = tables.iter().any(TableDrift::has_drift);
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(projection = %projection, events, drift, duration_ms, "replay finished");
        reports.push(DriftReport {
            projection,
            events,
            to_position: bound,
            complete,
            replay_parked: replay_parked.unsigned_abs(),
            duration_ms,
            tables,
            drift,
        });
    }
    tx.commit().await?;
    Ok(reports)
}

/// Double-quotes an identifier read from the catalog.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The primary key columns of `table`, in key order.
async fn primary_key(pool: &PgPool, table: &str) -> Result<Vec<String>, ProjectorError> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    if columns.is_empty() {
        return Err(ProjectorError::Other(format!("table {table} has no primary key to compare rows by")));
    }
    Ok(columns)
}

async fn clear_bookkeeping(conn: &mut PgConnection, key: &str) -> Result<(), ProjectorError> {
    for sql in [
        "DELETE FROM projection_progress WHERE projection = $1",
        "DELETE FROM parked_streams WHERE projection = $1",
        "DELETE FROM dead_letters WHERE projection = $1",
        "DELETE FROM projection_state WHERE projection = $1",
    ] {
        sqlx::query(sql).bind(key).execute(&mut *conn).await?;
    }
    Ok(())
}

async fn cleanup(pool: &PgPool, projection: Projection, target: &Target) -> Result<(), ProjectorError> {
    let mut tx = pool.begin().await?;
    for base in projection.base_tables() {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", target.table(base))).execute(&mut *tx).await?;
    }
    clear_bookkeeping(&mut tx, &target.key).await?;
    tx.commit().await?;
    Ok(())
}
