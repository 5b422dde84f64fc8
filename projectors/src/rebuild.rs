//! Rebuilding a projection from the Postgres log into shadow tables and swapping them in.
//!
//! # Why no event applied by the live projector during the rebuild is lost
//!
//! 1. The bulk phase reads the whole log with the commit-safe [`EventStore::read_all`] into
//!    `<table>_shadow` tables (progress, parked streams and dead letters under the key
//!    `<projection>#rebuild`), while the live projector keeps writing the live tables.
//! 2. The swap transaction takes the projection's advisory lock EXCLUSIVE. Every live batch
//!    (and `retry_parked`) takes it SHARED for its whole transaction, so once the swap holds it
//!    no live batch is running and none can start until the swap commits.
//! 3. Still inside the swap, before writing anything (so the swap has no transaction id and
//!    cannot hold back the log horizon itself), the rebuild reads the log from its cursor up to
//!    the current commit-safe horizon. The relay publishes only events `read_all` returned, i.e.
//!    events below the horizon of that time; the horizon only moves forward. So every event the
//!    live projector can have applied is below the horizon now, and the catch-up brings the
//!    shadow at least as far as the live tables.
//! 4. The shadow progress replaces the live progress and the tables are renamed in the same
//!    transaction. Live batches resume against the new tables and skip, by the per-stream
//!    versions, whatever the catch-up already applied.
//!
//! Readers never see a missing table: `ALTER TABLE ... RENAME` runs inside the swap transaction,
//! a reader waits on the lock for the few milliseconds of the swap and then resolves the name to
//! the new table.

use std::time::{Duration, Instant};

use ordo_event_store::{EventStore, LogCursor, RecordedEvent};
use sqlx::{Connection, PgPool};

use crate::batch::Projector;
use crate::incoming::Incoming;
use crate::model::{Projection, Target};
use crate::ProjectorError;

/// Events read from the log per page.
const PAGE: i64 = 2000;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    pub projection: Projection,
    /// Events of the projection's categories read from the log in total.
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
    // one rebuild per projection at a time: a session lock on a connection of its own, released
    // when that connection closes (also when this future is dropped)
    let mut guard = pool.acquire().await?.detach();
    let key = projection.lock_key() ^ REBUILD_LOCK;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut guard).await?;
    if !free {
        return Err(ProjectorError::Other(format!("a rebuild of {projection} is already running")));
    }
    let result = rebuild_locked(pool, projection).await;
    if result.is_err() {
        let cleared = sqlx::query("UPDATE projection_state SET rebuilding_since = NULL WHERE projection = $1")
            .bind(projection.name())
            .execute(pool)
            .await;
        if let Err(e) = cleared {
            tracing::warn!(error = %e, projection = %projection, "clearing the rebuilding flag failed");
        }
    }
    let _ = guard.close().await;
    result
}

/// Distinguishes the rebuild lock from the projection's batch lock.
const REBUILD_LOCK: i64 = 0x0000_0000_0001_0000;

async fn rebuild_locked(pool: &PgPool, projection: Projection) -> Result<RebuildReport, ProjectorError> {
    let started = Instant::now();
    let shadow = Target::shadow(projection);
    let projector = Projector::new(pool.clone(), vec![shadow.clone()]);
    let store = EventStore::new(pool.clone());
    prepare(pool, projection, &shadow).await?;
    tracing::info!(projection = %projection, "rebuild started");

    let mut cursor = LogCursor::START;
    let mut events = 0u64;
    loop {
        let (page, next) = store.read_all(cursor, PAGE).await?;
        if page.is_empty() {
            break;
        }
        let incoming = relevant(projection, &page);
        events += incoming.len() as u64;
        projector.apply_batch(&incoming, None).await?;
        cursor = next;
    }

    let swap_started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(projection.lock_key()).execute(&mut *tx).await?;
    // read before this transaction writes anything: see step 3 of the module docs
    let mut tail = Vec::new();
    loop {
        let (page, next) = store.read_all(cursor, PAGE).await?;
        if page.is_empty() {
            break;
        }
        tail.extend(relevant(projection, &page));
        cursor = next;
    }
    let caught_up = tail.len() as u64;
    projector.batch_in(&mut tx, &tail, None).await?;
    swap_in(&mut tx, projection, &shadow).await?;
    tx.commit().await?;
    let swap = swap_started.elapsed();
    events += caught_up;
    metrics::counter!("ordo_projection_rebuilds_total", "projection" => projection.name()).increment(1);
    tracing::info!(projection = %projection, events, caught_up, swap_ms = swap.as_millis() as u64, "rebuild swapped in");
    Ok(RebuildReport { projection, events, caught_up, duration: started.elapsed(), swap })
}

fn relevant(projection: Projection, page: &[RecordedEvent]) -> Vec<Incoming> {
    page.iter().filter(|e| projection.reads(e.stream.category)).map(Incoming::from_recorded).collect()
}

/// Fresh shadow tables and an empty shadow progress namespace.
async fn prepare(pool: &PgPool, projection: Projection, shadow: &Target) -> Result<(), ProjectorError> {
    let mut tx = pool.begin().await?;
    for base in projection.base_tables() {
        let table = shadow.table(base);
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&mut *tx).await?;
        sqlx::query(&format!("CREATE TABLE {table} (LIKE {base} INCLUDING ALL)")).execute(&mut *tx).await?;
    }
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
    .bind(projection.name())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces the live bookkeeping with the shadow's and renames the shadow tables into place.
async fn swap_in(conn: &mut sqlx::PgConnection, projection: Projection, shadow: &Target) -> Result<(), ProjectorError> {
    let live = projection.name();
    let key = shadow.key.as_str();
    sqlx::query("DELETE FROM projection_progress WHERE projection = $1").bind(live).execute(&mut *conn).await?;
    sqlx::query("UPDATE projection_progress SET projection = $1 WHERE projection = $2")
        .bind(live)
        .bind(key)
        .execute(&mut *conn)
        .await?;
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
    }
    Ok(())
}
