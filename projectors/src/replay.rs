//! Drift detection: replaying a projection from the Postgres log into tables of its own and
//! diffing them with the live read model, without touching the live tables or bookkeeping.
//!
//! # How
//!
//! 1. Under a session advisory lock (one replay per projection at a time), fresh UNLOGGED
//!    `<table>_replay` tables are created `LIKE` the live ones with only their primary key (the
//!    secondary indexes would slow the bulk load down and the diff does not need them). Their
//!    progress, parked streams and dead letters live under the key `<projection>#replay`.
//! 2. The log is read with the commit-safe [`EventStore::read_all`] up to a bound: the newest
//!    committed position at the start, or `to_position` (inclusive) when that is lower. Every
//!    event at or below the bound is applied with the same [`Projector`] the live consumer uses.
//!    The replay waits (bounded) until every event committed at or below the bound is below the
//!    horizon, so a transaction held open elsewhere does not silently shorten it
//!    ([`DriftReport::complete`] says whether it got them all).
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

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use ordo_event_store::{EventStore, LogCursor};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::batch::Projector;
use crate::incoming::Incoming;
use crate::model::{Projection, Target};
use crate::ProjectorError;

/// Events read from the log per page.
const PAGE: i64 = 2000;
/// Differing rows fetched from the diff cursor per round trip.
const FETCH: i64 = 500;
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
    /// How long to wait for the commit-safe horizon to pass the bound before replaying only
    /// what is below it.
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
    let mut guard = pool.acquire().await?.detach();
    let key = projection.lock_key() ^ REPLAY_LOCK;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut guard).await?;
    if !free {
        return Err(ProjectorError::Other(format!("a replay of {projection} is already running")));
    }
    let target = Target::replay(projection);
    let result = replay_locked(pool, projection, &target, options).await;
    if result.is_err() || !options.keep {
        if let Err(e) = cleanup(pool, projection, &target).await {
            tracing::warn!(error = %e, projection = %projection, "dropping the replay tables failed");
        }
    }
    let _ = guard.close().await;
    result
}

async fn replay_locked(
    pool: &PgPool,
    projection: Projection,
    target: &Target,
    options: &ReplayOptions,
) -> Result<DriftReport, ProjectorError> {
    let started = Instant::now();
    let mut keys = Vec::new();
    for base in projection.base_tables() {
        keys.push(primary_key(pool, base).await?);
    }
    prepare(pool, projection, target, &keys).await?;
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events").fetch_one(pool).await?;
    let bound = options.to_position.map_or(head, |p| p.min(head));
    let expected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE position <= $1").bind(bound).fetch_one(pool).await?;
    tracing::info!(projection = %projection, to_position = bound, "replay started");
    let (events, complete) = fill(pool, projection, target, bound, expected, options.horizon_wait).await?;

    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let owners = InFlight::load(&mut tx, projection, target).await?;
    let mut tables = Vec::new();
    for (base, key_columns) in projection.base_tables().iter().zip(keys) {
        tables.push(diff_table(&mut tx, base, &target.table(base), key_columns, &owners).await?);
    }
    let replay_parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_streams WHERE projection = $1")
        .bind(&target.key)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;

    let drift = tables.iter().any(TableDrift::has_drift);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(projection = %projection, events, drift, duration_ms, "replay finished");
    Ok(DriftReport {
        projection,
        events,
        to_position: bound,
        complete,
        replay_parked: replay_parked.unsigned_abs(),
        duration_ms,
        tables,
        drift,
    })
}

/// Applies the log up to `bound` to the replay target; returns the events applied and whether
/// all `expected` events at or below the bound were read.
async fn fill(
    pool: &PgPool,
    projection: Projection,
    target: &Target,
    bound: i64,
    expected: i64,
    wait: Duration,
) -> Result<(u64, bool), ProjectorError> {
    let projector = Projector::new(pool.clone(), vec![target.clone()]);
    let store = EventStore::new(pool.clone());
    let deadline = Instant::now() + wait;
    let (mut cursor, mut seen, mut events) = (LogCursor::START, 0i64, 0u64);
    loop {
        let (page, next) = store.read_all(cursor, PAGE).await?;
        if page.is_empty() {
            if seen >= expected {
                return Ok((events, true));
            }
            if Instant::now() >= deadline {
                tracing::warn!(projection = %projection, seen, expected,
                    "commit-safe horizon held back, replaying only what is below it");
                return Ok((events, false));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        cursor = next;
        let within: Vec<_> = page.iter().filter(|e| e.position <= bound).collect();
        seen += within.len() as i64;
        let incoming: Vec<Incoming> =
            within.into_iter().filter(|e| projection.reads(e.stream.category)).map(Incoming::from_recorded).collect();
        events += incoming.len() as u64;
        projector.apply_batch(&incoming, None).await?;
        // stop once everything up to the bound is in, without chasing newer writes
        if seen >= expected {
            return Ok((events, true));
        }
    }
}

/// Double-quotes an identifier read from the catalog.
fn ident(name: &str) -> String {
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

/// Fresh replay tables and an empty replay bookkeeping namespace.
async fn prepare(
    pool: &PgPool,
    projection: Projection,
    target: &Target,
    keys: &[Vec<String>],
) -> Result<(), ProjectorError> {
    let mut tx = pool.begin().await?;
    for (base, key) in projection.base_tables().iter().zip(keys) {
        let table = target.table(base);
        let key = key.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&mut *tx).await?;
        sqlx::query(&format!(
            "CREATE UNLOGGED TABLE {table} (LIKE {base} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("ALTER TABLE {table} ADD PRIMARY KEY ({key})")).execute(&mut *tx).await?;
    }
    clear_bookkeeping(&mut tx, &target.key).await?;
    tx.commit().await?;
    Ok(())
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

/// The streams (and, for sales, merchants) whose rows are still moving: see the module docs.
struct InFlight {
    streams: HashSet<Uuid>,
    merchants: HashSet<Uuid>,
}

impl InFlight {
    async fn load(conn: &mut PgConnection, projection: Projection, target: &Target) -> Result<Self, ProjectorError> {
        let streams: Vec<Uuid> = sqlx::query_scalar(
            "SELECT stream_id FROM (SELECT category, stream_id, version FROM projection_progress \
             WHERE projection = $1) l FULL JOIN (SELECT category, stream_id, version FROM projection_progress \
             WHERE projection = $2) r USING (category, stream_id) WHERE l.version IS DISTINCT FROM r.version",
        )
        .bind(projection.name())
        .bind(&target.key)
        .fetch_all(&mut *conn)
        .await?;
        let mut merchants = HashSet::new();
        if projection == Projection::Sales && !streams.is_empty() {
            let sql = format!(
                "SELECT merchant_id FROM rm_sales_orders WHERE order_id = ANY($1) \
                 UNION SELECT merchant_id FROM {} WHERE order_id = ANY($1)",
                target.table("rm_sales_orders")
            );
            let found: Vec<Uuid> = sqlx::query_scalar(&sql).bind(&streams).fetch_all(&mut *conn).await?;
            merchants.extend(found);
        }
        Ok(Self { streams: streams.into_iter().collect(), merchants })
    }

    /// Whether the row (of live table `base`) belongs to a stream in flight.
    fn holds(&self, base: &str, row: &Value) -> bool {
        let id = |column: &str| row.get(column).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
        match base {
            "rm_orders" | "rm_sales_orders" => id("order_id").is_some_and(|i| self.streams.contains(&i)),
            "rm_products" => id("product_id").is_some_and(|i| self.streams.contains(&i)),
            "rm_merchant_daily_sales" => id("merchant_id").is_some_and(|i| self.merchants.contains(&i)),
            _ => false,
        }
    }
}

/// Compares live table `base` with `replay` row by row as jsonb, through a cursor.
async fn diff_table(
    conn: &mut PgConnection,
    base: &str,
    replay: &str,
    key_columns: Vec<String>,
    in_flight: &InFlight,
) -> Result<TableDrift, ProjectorError> {
    let on: Vec<String> = key_columns.iter().map(|c| format!("l.{0} = r.{0}", ident(c))).collect();
    let order: Vec<String> = key_columns.iter().map(|c| format!("COALESCE(l.{0}, r.{0})", ident(c))).collect();
    // no bind parameters: the table names are fixed and the columns come from the catalog
    sqlx::query(&format!(
        "DECLARE ordo_drift NO SCROLL CURSOR FOR SELECT to_jsonb(l) AS live, to_jsonb(r) AS replay \
         FROM {base} l FULL JOIN {replay} r ON {} WHERE to_jsonb(l) IS DISTINCT FROM to_jsonb(r) ORDER BY {}",
        on.join(" AND "),
        order.join(", ")
    ))
    .execute(&mut *conn)
    .await?;
    let mut out = TableDrift {
        table: base.to_owned(),
        key_columns,
        missing: Vec::new(),
        extra: Vec::new(),
        different: Vec::new(),
        counts: DriftCounts::default(),
    };
    loop {
        let rows = sqlx::query(&format!("FETCH FORWARD {FETCH} FROM ordo_drift")).fetch_all(&mut *conn).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let live: Option<Value> = row.try_get("live")?;
            let replayed: Option<Value> = row.try_get("replay")?;
            out.classify(base, live, replayed, in_flight);
        }
    }
    sqlx::query("CLOSE ordo_drift").execute(&mut *conn).await?;
    Ok(out)
}

impl TableDrift {
    fn key_of(&self, row: &Value) -> Map<String, Value> {
        self.key_columns.iter().map(|c| (c.clone(), row.get(c).cloned().unwrap_or(Value::Null))).collect()
    }

    fn classify(&mut self, base: &str, live: Option<Value>, replay: Option<Value>, in_flight: &InFlight) {
        let Some(either) = live.as_ref().or(replay.as_ref()) else { return };
        if in_flight.holds(base, either) {
            self.counts.in_flight += 1;
            return;
        }
        let key = self.key_of(either);
        match (live, replay) {
            (None, Some(row)) => {
                self.counts.missing += 1;
                if self.missing.len() < LIST_LIMIT {
                    self.missing.push(RowDrift { key, row });
                }
            }
            (Some(row), None) => {
                self.counts.extra += 1;
                if self.extra.len() < LIST_LIMIT {
                    self.extra.push(RowDrift { key, row });
                }
            }
            (Some(live), Some(replay)) => {
                self.counts.different += 1;
                if self.different.len() < LIST_LIMIT {
                    self.different.push(DifferentRow { key, columns: columns_that_differ(&live, &replay) });
                }
            }
            (None, None) => {}
        }
    }
}

fn columns_that_differ(live: &Value, replay: &Value) -> BTreeMap<String, ColumnDrift> {
    let empty = Map::new();
    let (l, r) = (live.as_object().unwrap_or(&empty), replay.as_object().unwrap_or(&empty));
    l.keys()
        .chain(r.keys())
        .filter(|c| l.get(*c) != r.get(*c))
        .map(|c| {
            let drift = ColumnDrift {
                live: l.get(c).cloned().unwrap_or(Value::Null),
                replay: r.get(c).cloned().unwrap_or(Value::Null),
            };
            (c.clone(), drift)
        })
        .collect()
}
