//! Rebuilding projections from the Postgres log into shadow tables and swapping them in.
//!
//! # One pass for every projection (ADR 0025)
//!
//! 1. Fresh `<table>_shadow` tables without indexes are created for every projection
//!    rebuilt, and a progress table of its own (`projection_progress_<projection>_shadow`, rows
//!    under the live name; parked streams and dead letters under the key
//!    `<projection>#rebuild`), while the live projector keeps writing the live tables, which the
//!    rebuild never touches before the swap.
//! 2. One read of the log up to its newest position at the start (the bound) fetches only the
//!    columns the projections need, in stream order (`category, stream_id, version`, from the
//!    unique index), and decodes each payload straight into its typed event. Each stream is
//!    folded in memory and its rows are COPY-loaded as soon as its last event is read, so the
//!    memory held is one stream plus the daily sales figures and a few load buffers, whatever
//!    the size of the log. A stream the fold does not expect (a poison event, a version gap) is
//!    left out and applied afterwards with the live projector's batch path, which parks and
//!    dead-letters it exactly as live.
//! 3. The tables (logged from the start, ADR 0030) get the live tables' indexes under pending
//!    names, and are analysed. The events appended since the bound are applied with the batch
//!    path, page by page, outside any lock.
//! 4. Then, per projection, the swap below.
//!
//! # Why no event applied by the live projector during the rebuild is lost
//!
//! 1. The swap transaction takes the projection's advisory lock EXCLUSIVE. Every live batch
//!    (and `retry_parked`) takes it SHARED for its whole transaction, so once the swap holds it
//!    no live batch is running and none can start until the swap commits.
//! 2. Still inside the swap, before writing anything (so the swap has no transaction id and
//!    cannot hold back the log horizon itself), the rebuild reads the log from its cursor up to
//!    the current commit-safe horizon. The relay publishes only events `read_all` returned, i.e.
//!    events below the horizon of that time; the horizon only moves forward. So every event the
//!    live projector can have applied is below the horizon now, and the catch-up brings the
//!    shadow at least as far as the live tables.
//! 3. The shadow progress replaces the live progress (the live partition of
//!    `projection_progress` is detached and dropped, the shadow's progress table attached in its
//!    place: catalog changes only, ADR 0030), the tables are renamed and the indexes take their
//!    live names back, in the same transaction. Live batches resume against the new
//!    tables and skip, by the per-stream versions, whatever the catch-up already applied.
//!
//! Readers never see a missing table: `ALTER TABLE ... RENAME` runs inside the swap transaction,
//! a reader waits on the lock for the few milliseconds of the swap and then resolves the name to
//! the new table.
//!
//! A rebuild stopped at any point (an error, a killed process) has written only shadow tables
//! and `#rebuild` bookkeeping; the next rebuild drops and recreates them.

mod decode;
mod fold;
pub(crate) mod load;
pub(crate) mod pass;
pub(crate) mod tables;

use std::time::{Duration, Instant};

use ordo_event_store::progress::Progress;
use ordo_event_store::{EventStore, LogCursor, RecordedEvent};
use sqlx::{Connection, PgPool};

use crate::batch::Projector;
use crate::incoming::Incoming;
use crate::model::{Projection, Target};
use crate::ProjectorError;

/// Events read from the log per page in the catch-ups.
const PAGE: i64 = 2000;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    pub projection: Projection,
    /// Events of the projection's categories applied in total.
    pub events: u64,
    /// Of those, the ones applied inside the swap (the final catch-up).
    pub caught_up: u64,
    pub duration: Duration,
    /// How long the swap transaction held the exclusive lock.
    pub swap: Duration,
}

/// Rebuilds `projection` from the whole log and swaps the result in; see the module docs.
///
/// # Errors
/// [`ProjectorError`] when the database fails; the live tables are untouched then.
pub async fn rebuild(pool: &PgPool, projection: Projection) -> Result<RebuildReport, ProjectorError> {
    let mut reports = rebuild_with(pool, &[projection], &Progress::new()).await?;
    reports.pop().ok_or_else(|| ProjectorError::Other("the rebuild reported nothing".into()))
}

/// Rebuilds `projections` in one pass over the log, counting the events of the pass in
/// `progress`, and swaps each one in; see the module docs.
///
/// # Errors
/// [`ProjectorError`] when the database fails or another rebuild of one of them is running;
/// the live tables of a projection not swapped yet are untouched then.
pub async fn rebuild_with(
    pool: &PgPool,
    projections: &[Projection],
    progress: &Progress,
) -> Result<Vec<RebuildReport>, ProjectorError> {
    let guard = lock_each(pool, projections, REBUILD_LOCK, "rebuild").await?;
    let result = rebuild_locked(pool, projections, progress).await;
    if result.is_err() {
        for p in projections {
            let cleared = sqlx::query("UPDATE projection_state SET rebuilding_since = NULL WHERE projection = $1")
                .bind(p.name())
                .execute(pool)
                .await;
            if let Err(e) = cleared {
                tracing::warn!(error = %e, projection = %p, "clearing the rebuilding flag failed");
            }
        }
    }
    let _ = guard.close().await;
    result
}

/// Distinguishes the rebuild lock from the projection's batch lock.
const REBUILD_LOCK: i64 = 0x0000_0000_0001_0000;

/// One `what` (rebuild, replay) per projection at a time: session locks, keyed by the projection
/// and `kind`, on a connection of their own, released when that connection closes (also when the
/// caller's future is dropped or the process dies). Fails if any is already held.
pub(crate) async fn lock_each(
    pool: &PgPool,
    projections: &[Projection],
    kind: i64,
    what: &str,
) -> Result<sqlx::PgConnection, ProjectorError> {
    let mut guard = pool.acquire().await?.detach();
    for p in projections {
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(p.lock_key() ^ kind)
            .fetch_one(&mut guard)
            .await?;
        if !free {
            let _ = guard.close().await;
            return Err(ProjectorError::Other(format!("a {what} of {p} is already running")));
        }
    }
    Ok(guard)
}

async fn rebuild_locked(
    pool: &PgPool,
    projections: &[Projection],
    progress: &Progress,
) -> Result<Vec<RebuildReport>, ProjectorError> {
    let started = Instant::now();
    let shadows: Vec<Target> = projections.iter().map(|p| Target::shadow(*p)).collect();
    for shadow in &shadows {
        prepare(pool, shadow).await?;
    }
    let bound: i64 = sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events").fetch_one(pool).await?;
    tracing::info!(projections = ?projections, to_position = bound, "rebuild started");
    let outcome = pass::run(pool, &shadows, bound, progress).await?;
    let passed = started.elapsed();
    // each projection's tables on a connection of their own: the server builds them side by side
    futures::future::try_join_all(shadows.iter().map(|shadow| tables::finish(pool, shadow, true))).await?;
    for shadow in &shadows {
        let t = outcome.totals.get(&shadow.projection).copied().unwrap_or_default();
        sqlx::query(
            "INSERT INTO projection_state (projection, events_applied, last_position, last_recorded_at, \
             last_applied_at) VALUES ($1, $2, $3, $4, now())",
        )
        .bind(&shadow.key)
        .bind(i64::try_from(t.events).unwrap_or(i64::MAX))
        .bind(t.last_position)
        .bind(t.last_recorded_at)
        .execute(pool)
        .await?;
    }
    tracing::info!(
        events = progress.done(),
        pass_ms = passed.as_millis() as u64,
        unfit = outcome.unfit.len(),
        indexed_ms = (started.elapsed() - passed).as_millis() as u64,
        "rebuild pass loaded"
    );

    let store = EventStore::new(pool.clone());
    let projector = Projector::new(pool.clone(), shadows.clone());
    let mut extra = apply_unfit(&store, &projector, &outcome.unfit, bound).await?;
    // what was appended during the pass, outside any lock
    let mut cursor = LogCursor::at(bound);
    loop {
        let (page, next) = store.read_all(cursor, PAGE).await?;
        if page.is_empty() {
            break;
        }
        let incoming = relevant(projections, &page);
        for i in &incoming {
            for p in projections {
                if i.category.is_some_and(|c| p.reads(c)) {
                    *extra.entry(*p).or_default() += 1;
                }
            }
        }
        projector.apply_batch(&incoming, None).await?;
        cursor = next;
    }

    let mut reports = Vec::new();
    for shadow in &shadows {
        let projection = shadow.projection;
        let (caught_up, swap) = swap(pool, &store, shadow, cursor).await?;
        let events = outcome.totals.get(&projection).map_or(0, |t| t.events)
            + extra.get(&projection).copied().unwrap_or(0)
            + caught_up;
        metrics::counter!("ordo_projection_rebuilds_total", "projection" => projection.name()).increment(1);
        tracing::info!(projection = %projection, events, caught_up, swap_ms = swap.as_millis() as u64, "rebuild swapped in");
        reports.push(RebuildReport { projection, events, caught_up, duration: started.elapsed(), swap });
    }
    Ok(reports)
}

/// Applies the streams the fold left out with the batch path; returns the events per projection.
pub(crate) async fn apply_unfit(
    store: &EventStore,
    projector: &Projector,
    unfit: &[ordo_schemas::StreamRef],
    bound: i64,
) -> Result<std::collections::BTreeMap<Projection, u64>, ProjectorError> {
    let mut counts = std::collections::BTreeMap::new();
    for stream in unfit {
        tracing::warn!(stream = %stream, "stream left to the batch path in the rebuild");
        let events = store.read_stream_range(*stream, 1, i64::MAX).await?;
        let incoming: Vec<Incoming> =
            events.iter().filter(|e| e.position <= bound).map(Incoming::from_recorded).collect();
        for p in projector_projections(projector) {
            if p.reads(stream.category) {
                *counts.entry(p).or_default() += incoming.len() as u64;
            }
        }
        projector.apply_batch(&incoming, None).await?;
    }
    Ok(counts)
}

fn projector_projections(projector: &Projector) -> Vec<Projection> {
    projector.targets().iter().map(|t| t.projection).collect()
}

/// The swap of one projection: the final catch-up under the exclusive lock, then the rename.
/// Returns the events caught up and how long the lock was held.
async fn swap(
    pool: &PgPool,
    store: &EventStore,
    shadow: &Target,
    mut cursor: LogCursor,
) -> Result<(u64, Duration), ProjectorError> {
    let projection = shadow.projection;
    let projector = Projector::new(pool.clone(), vec![shadow.clone()]);
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(projection.lock_key()).execute(&mut *tx).await?;
    // read before this transaction writes anything: see step 2 of the module docs
    let mut tail = Vec::new();
    loop {
        let (page, next) = store.read_all(cursor, PAGE).await?;
        if page.is_empty() {
            break;
        }
        tail.extend(relevant(&[projection], &page));
        cursor = next;
    }
    let caught_up = tail.len() as u64;
    projector.batch_in(&mut tx, &tail, None).await?;
    swap_in(&mut tx, projection, shadow).await?;
    // the query API's cache holds rows of the tables just replaced
    crate::bookkeeping::notify_whole(&mut tx, projection).await?;
    tx.commit().await?;
    Ok((caught_up, started.elapsed()))
}

fn relevant(projections: &[Projection], page: &[RecordedEvent]) -> Vec<Incoming> {
    page.iter()
        .filter(|e| projections.iter().any(|p| p.reads(e.stream.category)))
        .map(Incoming::from_recorded)
        .collect()
}

/// Fresh bare shadow tables and an empty shadow bookkeeping namespace.
async fn prepare(pool: &PgPool, shadow: &Target) -> Result<(), ProjectorError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    tables::create_bare(&mut tx, shadow, true).await?;
    for sql in [
        "DELETE FROM projection_progress WHERE projection = $1",
        "DELETE FROM parked_streams WHERE projection = $1",
        "DELETE FROM dead_letters WHERE projection = $1",
        "DELETE FROM projection_state WHERE projection = $1",
    ] {
        sqlx::query(sql).bind(&shadow.key).execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO projection_state (projection, rebuilding_since) VALUES ($1, now()) \
         ON CONFLICT (projection) DO UPDATE SET rebuilding_since = now()",
    )
    .bind(shadow.projection.name())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces the live bookkeeping with the shadow's and renames the shadow tables into place.
async fn swap_in(conn: &mut sqlx::PgConnection, projection: Projection, shadow: &Target) -> Result<(), ProjectorError> {
    let live = projection.name();
    let key = shadow.key.as_str();
    tables::swap_progress(conn, shadow).await?;
    sqlx::query("DELETE FROM parked_streams WHERE projection = $1").bind(live).execute(&mut *conn).await?;
    sqlx::query("UPDATE parked_streams SET projection = $1 WHERE projection = $2")
        .bind(live)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE dead_letters SET resolved_at = now() WHERE projection = $1 AND resolved_at IS NULL")
        .bind(live)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE dead_letters SET projection = $1 WHERE projection = $2")
        .bind(live)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE projection_state AS l SET events_applied = COALESCE(s.events_applied, 0), \
         last_position = COALESCE(s.last_position, 0), last_recorded_at = s.last_recorded_at, \
         last_applied_at = now(), rebuilding_since = NULL, rebuilt_at = now() \
         FROM (SELECT $2::text AS k) AS k LEFT JOIN projection_state s ON s.projection = k.k \
         WHERE l.projection = $1",
    )
    .bind(live)
    .bind(key)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM projection_state WHERE projection = $1").bind(key).execute(&mut *conn).await?;
    for base in projection.base_tables() {
        let table = shadow.table(base);
        sqlx::query(&format!("ALTER TABLE {base} RENAME TO {base}_old")).execute(&mut *conn).await?;
        sqlx::query(&format!("ALTER TABLE {table} RENAME TO {base}")).execute(&mut *conn).await?;
        sqlx::query(&format!("DROP TABLE {base}_old")).execute(&mut *conn).await?;
        tables::rename_indexes(conn, base).await?;
    }
    Ok(())
}
