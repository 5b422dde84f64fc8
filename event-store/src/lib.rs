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
//! - Appends are group-committed: one writer task per store appends whatever is queued in one
//!   statement ([`EventStore::submit_all`]); each request is still accepted or refused alone.
//!   The writer decides a batch on the stream heads it knows and computes versions and hashes;
//!   the database checks under the writer lock that those heads still hold (ADR 0032).
//! - Positions follow commit order: every batch holds one writer lock from before it draws
//!   positions until its commit is visible. [`EventStore::read_all`] pages by position and never
//!   skips an event.
//! - Each event's `recorded_at` is its writer's clock, checked under the writer lock to be never
//!   earlier than the event before it in the log (a writer whose clock is behind takes the log's
//!   time instead).
//! - UPDATE, DELETE and TRUNCATE on the events table are refused by a trigger.
//! - [`verify`] recomputes hash chains and names every broken link.
//! - Fields marked personal in the schemas are sealed under their customer's key before they are
//!   hashed and stored; destroying the key erases them ([`personal`], ADR 0027).

mod append;
mod checked;
pub mod error;
pub mod hash;
pub mod personal;
pub mod progress;
mod read;
pub mod search;
pub mod signing;
mod types;
pub mod verify;
mod writer;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod relay;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use error::{AppendError, ExpectedVersion, StoreError};
pub use types::{
    AppendRequest, AppendedStream, Backlog, IdempotencyRecord, InvalidCursor, LogCursor, NewEvent, RecordedEvent,
    StreamAppend, UniqueClaim, WriterLockHolder,
};
pub use verify::{BrokenLink, LinkProblem, VerifyReport};
pub use writer::WriterOptions;

pub use ordo_schemas::StreamRef;

/// The migrations that create the event log tables.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a connection pool with settings suited to the event log.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url.parse()?;
    // No ping before every checkout: a dead connection fails its statement and is replaced.
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name("ordo"))
        .await?;
    Ok(pool)
}

/// Applies the event log migrations. Migrations of other Ordo crates share the same
/// `_sqlx_migrations` table, so versions this migrator does not know are ignored.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    run_migrations(&MIGRATOR, pool).await?;
    // A restored backup may hold keys of customers erased since: erase them again.
    personal::erase_recorded(pool).await?;
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

/// The schema is not what this release needs.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is behind this release: {missing} migration(s) not applied, the first {first}; \
         run `ordo migrate` (with a role that may change the schema), or start the process with --migrate"
    )]
    Behind { missing: usize, first: String },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("reading the applied migrations: {0}")]
    Database(#[from] sqlx::Error),
}

/// Readies the schema for a process that needs the tables of `migrators`: applies their pending
/// migrations when `migrate` is set (the process's role then needs DDL rights), otherwise checks
/// that every one of them is applied, so a service can run as a role without DDL rights and a
/// forgotten `ordo migrate` stops it at start with a message instead of failing later.
///
/// # Errors
/// [`SchemaError::Behind`] when a migration is missing and `migrate` is off; a failed migration.
pub async fn prepare_schema(
    pool: &PgPool,
    migrators: &[&sqlx::migrate::Migrator],
    migrate: bool,
) -> Result<(), SchemaError> {
    if migrate {
        for migrator in migrators {
            run_migrations(migrator, pool).await?;
        }
        return Ok(());
    }
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await {
            Ok(versions) => versions,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
    let missing: Vec<_> = migrators
        .iter()
        .flat_map(|m| m.iter())
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .collect();
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(SchemaError::Behind {
            missing: missing.len(),
            first: format!("{} ({})", first.version, first.description),
        }),
    }
}

/// The event log. Cheap to clone; all clones share one pool and one group-commit writer.
#[derive(Clone, Debug)]
pub struct EventStore {
    pool: PgPool,
    options: WriterOptions,
    writer: Arc<OnceLock<writer::Writer>>,
    personal: Arc<personal::PersonalData>,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self::with_writer_options(pool, WriterOptions::default())
    }

    /// A store whose writer batches and waits as `options` say.
    pub fn with_writer_options(pool: PgPool, options: WriterOptions) -> Self {
        let personal = Arc::new(personal::PersonalData::new(pool.clone()));
        Self { pool, options, writer: Arc::new(OnceLock::new()), personal }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sealing, revealing and erasing personal data.
    pub fn personal(&self) -> &personal::PersonalData {
        &self.personal
    }

    /// The writer task, started on first use (it needs the runtime).
    fn writer(&self) -> &writer::Writer {
        self.writer.get_or_init(|| writer::Writer::start(self.pool.clone(), self.options.clone()))
    }

    /// Appends events to one stream.
    ///
    /// # Errors
    /// As [`EventStore::submit`].
    pub async fn append(
        &self,
        stream: StreamRef,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendedStream, AppendError> {
        let mut out = self.submit(AppendRequest::single(stream, expected, events)).await?;
        out.pop().ok_or(AppendError::Invalid("append returned no stream"))
    }

    /// Appends events to several streams atomically, with the idempotency record (if any) in
    /// the same transaction.
    ///
    /// # Errors
    /// As [`EventStore::submit`].
    pub async fn append_many(
        &self,
        appends: Vec<StreamAppend>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Vec<AppendedStream>, AppendError> {
        self.submit(AppendRequest { appends, idempotency: idempotency.cloned(), claim: None }).await
    }

    /// Appends one request through the writer: its streams, idempotency record and claim commit
    /// together or not at all, in the same transaction as whatever else was queued.
    ///
    /// # Errors
    /// [`AppendError::Conflict`] names the first stream whose expectation failed;
    /// [`AppendError::IdempotencyKeyTaken`] carries the record stored under the key;
    /// [`AppendError::ClaimTaken`]; [`AppendError::Unavailable`] when the writer lock could not be
    /// had in time. In all these cases nothing was written.
    pub async fn submit(&self, request: AppendRequest) -> Result<Vec<AppendedStream>, AppendError> {
        self.submit_all(vec![request]).await.pop().unwrap_or(Err(AppendError::Invalid("no answer")))
    }

    /// Queues independent requests together and answers each as if it ran alone.
    pub async fn submit_all(&self, requests: Vec<AppendRequest>) -> Vec<Result<Vec<AppendedStream>, AppendError>> {
        self.submit_queued(requests, false).await
    }

    /// Queues a chain: each request was decided on the state the one before it leaves, so it
    /// expects the version that one creates. The chain goes into one batch, and from the first
    /// refused link on, every link is refused with [`AppendError::Conflict`] (even one whose
    /// expected version happens to match the log): nothing is appended on a state that did not
    /// happen.
    pub async fn submit_chain(&self, requests: Vec<AppendRequest>) -> Vec<Result<Vec<AppendedStream>, AppendError>> {
        self.submit_queued(requests, true).await
    }

    #[tracing::instrument(name = "append", skip_all, fields(requests = requests.len()))]
    async fn submit_queued(
        &self,
        mut requests: Vec<AppendRequest>,
        chained: bool,
    ) -> Vec<Result<Vec<AppendedStream>, AppendError>> {
        let mut answers: Vec<Option<Result<Vec<AppendedStream>, AppendError>>> = Vec::with_capacity(requests.len());
        let mut valid = Vec::with_capacity(requests.len());
        let mut broken = false;
        let sealing = self.personal.seal_requests(&mut requests).await;
        for (request, sealed) in requests.iter_mut().zip(sealing) {
            let refused = match sealed.map_or_else(|| append::prepare(request), Err) {
                Err(e) => Some(e),
                // A link after an invalid one depends on what never happens.
                Ok(()) if broken => Some(writer::chain_broken(request)),
                Ok(()) => None,
            };
            broken = chained && refused.is_some();
            answers.push(refused.map(Err));
        }
        for (request, answer) in requests.into_iter().zip(&answers) {
            if answer.is_none() {
                valid.push(request);
            }
        }
        let mut appended = self.writer().submit(valid, chained).await.into_iter();
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| appended.next().unwrap_or(Err(AppendError::Invalid("no answer")))))
            .collect()
    }

    /// Appends inside a transaction the caller owns (and commits or rolls back), for tools and
    /// tests. It does not seal personal fields, so it refuses events that carry any in clear.
    /// It takes the writer lock, so every other append waits until that transaction ends; the
    /// server ends a transaction that then stays idle for more than 5 seconds.
    ///
    /// # Errors
    /// As [`EventStore::submit`]. After a database error the transaction is aborted; roll it back.
    pub async fn append_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        appends: Vec<StreamAppend>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Vec<AppendedStream>, AppendError> {
        let mut request = AppendRequest { appends, idempotency: idempotency.cloned(), claim: None };
        if personal::holds_clear_personal_data(&request) {
            return Err(AppendError::Invalid("append_in does not seal personal fields: append them with submit"));
        }
        append::prepare(&mut request)?;
        let mut answers = append::append_batch(&mut **tx, &[&request], &[0]).await?;
        answers.pop().unwrap_or(Err(AppendError::Invalid("no answer")))
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

    /// Up to `limit` events after `cursor` in position order, which is commit order: an event
    /// that commits later always has a higher position. Returns the events and the cursor to
    /// resume from.
    pub async fn read_all(&self, cursor: LogCursor, limit: i64) -> Result<(Vec<RecordedEvent>, LogCursor), StoreError> {
        read::read_all(&self.pool, cursor, limit).await
    }

    /// The session holding the writer lock right now, if any (every other append waits for it).
    pub async fn writer_lock_holder(&self) -> Result<Option<WriterLockHolder>, StoreError> {
        read::writer_lock_holder(&self.pool).await
    }

    /// The cursor after every event in the log now: reading from it yields only events
    /// appended later. [`LogCursor::START`] on an empty log.
    pub async fn head_cursor(&self) -> Result<LogCursor, StoreError> {
        read::head_cursor(&self.pool).await
    }

    /// How many events lie after `cursor` and how old the oldest of them is (a reader's lag).
    pub async fn backlog(&self, cursor: LogCursor) -> Result<Backlog, StoreError> {
        read::backlog(&self.pool, cursor).await
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
