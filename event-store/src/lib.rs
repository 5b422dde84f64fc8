//! The Postgres event log of Ordo.
//!
//! One append-only table holds every event with its global position, stream, per-stream
//! version, type, schema version, payload, metadata and a per-stream sha256 hash chain.
//!
//! Invariants this crate keeps:
//! - An append states the version it expects each stream at ([`ExpectedVersion`]); a violated
//!   expectation is [`AppendError::Conflict`], detected while the stream head is locked and
//!   before any global position is taken.
//! - Several events and several streams append atomically, together with an optional
//!   idempotency record ([`IdempotencyRecord`]).
//! - [`EventStore::read_all`] never skips an event: it reads in commit order behind the oldest
//!   running transaction (`pg_snapshot_xmin`), so an event committed late with a low position
//!   is still delivered.
//! - UPDATE, DELETE and TRUNCATE on the events table are refused by a trigger.
//! - [`verify`] recomputes hash chains and names every broken link.

mod append;
pub mod error;
pub mod hash;
mod read;
pub mod search;
mod types;
pub mod verify;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod relay;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use error::{AppendError, ExpectedVersion, StoreError};
pub use types::{AppendedStream, HorizonLag, IdempotencyRecord, LogCursor, NewEvent, RecordedEvent, StreamAppend};
pub use verify::{BrokenLink, LinkProblem, VerifyReport};

pub use ordo_schemas::StreamRef;

/// The migrations that create the event log tables.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a connection pool with settings suited to the event log.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name("ordo"))
        .await?;
    Ok(pool)
}

/// Applies the event log migrations. Migrations of other Ordo crates share the same
/// `_sqlx_migrations` table, so versions this migrator does not know are ignored.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    run_migrations(&MIGRATOR, pool).await?;
    Ok(())
}

/// Runs one crate's migrations beside the others': every Ordo crate keeps its own migration set
/// in the shared `_sqlx_migrations` table (each in its own version range), so versions of the
/// other sets are not treated as missing.
///
/// # Errors
/// When a migration fails or an applied one was changed.
pub async fn run_migrations(
    migrator: &sqlx::migrate::Migrator,
    pool: &PgPool,
) -> Result<(), sqlx::migrate::MigrateError> {
    let migrator = sqlx::migrate::Migrator {
        migrations: migrator.migrations.clone(),
        ignore_missing: true,
        ..sqlx::migrate::Migrator::DEFAULT
    };
    migrator.run(pool).await
}

/// The event log. Cheap to clone; all clones share one pool.
#[derive(Clone, Debug)]
pub struct EventStore {
    pool: PgPool,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends events to one stream.
    ///
    /// # Errors
    /// [`AppendError::Conflict`] when the stream is not at `expected`; [`AppendError::Store`]
    /// when the database fails.
    pub async fn append(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendedStream, AppendError> {
        let mut out = self.append_many(vec![StreamAppend { stream, expected, events }], None).await?;
        out.pop().ok_or(AppendError::Invalid("append returned no stream"))
    }

    /// Appends events to several streams in one transaction, all or nothing, and stores the
    /// idempotency record (if any) in the same transaction.
    ///
    /// # Errors
    /// [`AppendError::Conflict`] names the first stream whose expectation failed;
    /// [`AppendError::IdempotencyKeyTaken`] when a concurrent request committed the same key
    /// first. In both cases nothing was written.
    pub async fn append_many(
        &self,
        mut appends: Vec<StreamAppend>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Vec<AppendedStream>, AppendError> {
        append::prepare(&mut appends)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match append::append(&self.pool, &appends, idempotency).await {
                Ok(out) => return Ok(out),
                // The statement's transaction was older than the stream's last writer; a new
                // statement gets a newer transaction id.
                Err(f) if f.older_transaction && attempt < 3 => continue,
                Err(f) => return Err(f.error),
            }
        }
    }

    /// Appends inside a transaction the caller owns (and commits or rolls back).
    ///
    /// # Errors
    /// As [`EventStore::append_many`]. After an error the transaction is aborted; roll it back.
    ///
    /// When the caller's transaction took its id before the stream's last writer (it wrote
    /// something else first and then waited for the stream), the append is refused as
    /// [`AppendError::Conflict`]: accepting it would let whole-log readers see the stream's
    /// versions out of order. Retrying in a new transaction succeeds.
    pub async fn append_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        mut appends: Vec<StreamAppend>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Vec<AppendedStream>, AppendError> {
        append::prepare(&mut appends)?;
        append::append(&mut **tx, &appends, idempotency).await.map_err(|f| f.error)
    }

    /// The stored response for an idempotency key, if one was recorded.
    pub async fn find_idempotency(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        read::find_idempotency(&self.pool, scope, key).await
    }

    /// A stream's events with version >= `from_version`, in version order.
    pub async fn read_stream(&self, stream: StreamRef, from_version: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stream(&self.pool, stream, from_version, i64::MAX).await
    }

    /// A stream's events with version in `from_version..=to_version`.
    pub async fn read_stream_range(
        &self,
        stream: StreamRef,
        from_version: i64,
        to_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stream(&self.pool, stream, from_version, to_version).await
    }

    /// The stream's current version (0 when it does not exist).
    pub async fn stream_version(&self, stream: StreamRef) -> Result<i64, StoreError> {
        read::stream_version(&self.pool, stream).await
    }

    /// Up to `limit` events after `cursor` in commit order, never skipping one that commits
    /// later with a lower position. Returns the events and the cursor to resume from.
    pub async fn read_all(&self, cursor: LogCursor, limit: i64) -> Result<(Vec<RecordedEvent>, LogCursor), StoreError> {
        read::read_all(&self.pool, cursor, limit).await
    }

    /// How far the commit-safe horizon trails what has committed.
    pub async fn horizon_lag(&self) -> Result<HorizonLag, StoreError> {
        read::horizon_lag(&self.pool).await
    }

    /// `Some((highest stored tx_id, this cluster's next transaction id))` when the log holds
    /// transaction ids this cluster has not reached yet, which happens after restoring a dump
    /// into another cluster: whole-log readers would then see nothing until the cluster's ids
    /// pass the stored ones (see the runbook's restore section).
    pub async fn transaction_ids_ahead(&self) -> Result<Option<(i64, i64)>, StoreError> {
        read::transaction_ids_ahead(&self.pool).await
    }

    /// The cursor stored under `name`, or the start of the log.
    pub async fn load_checkpoint(&self, name: &str) -> Result<LogCursor, StoreError> {
        read::load_checkpoint(&self.pool, name).await
    }

    /// Stores `cursor` under `name`.
    pub async fn save_checkpoint(&self, name: &str, cursor: LogCursor) -> Result<(), StoreError> {
        read::save_checkpoint(&self.pool, name, cursor).await
    }
}
