//! The write side of Ordo without HTTP: decide commands on the streams' folded state and append
//! the events through the event store's group-commit writer.
//!
//! [`CommandService`] is what the HTTP command API, the order saga and the CLI call. Every command:
//! 1. is prepared (a placement prices its lines from the products' current state);
//! 2. waits in its stream's lane (see [`lane`]): commands of one stream are decided one after
//!    another on the in-memory state this process keeps, checked against the caller's expected
//!    version (`If-Match`) and the actor's rights, and appended together;
//! 3. is appended at the version it was decided on (the first of a lane's round also states the
//!    cached head hash), with its idempotency record and, for listings, the SKU claim in the same
//!    transaction;
//! 4. when the log moved under the cached state (another process wrote), is decided again on the
//!    refreshed state, a bounded number of times ([`RetryPolicy`]); callers without `If-Match`
//!    never see such a race;
//! 5. when its idempotency key was used before, answers with the stored [`Receipt`] (same
//!    request) or [`CommandError::IdempotencyKeyReused`] (another request).

mod api;
mod lane;
mod placement;
mod snapshot;
mod types;

use std::future::Future;
use std::time::Instant;

use ordo_event_store::{EventStore, IdempotencyRecord, UniqueClaim};
use ordo_schemas::StreamRef;
use uuid::Uuid;

pub use placement::{OrderLineRequest, PlaceOrderRequest};
pub use snapshot::Snapshot;
pub use types::{CommandContext, CommandError, CommandOutcome, IdempotencyKey, Receipt, ReceiptKind, RetryPolicy};

use lane::{Env, Guard, Job, Lanes};

/// The migrations of the command side's own tables (the SKU registry).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies this crate's migrations. All Ordo crates share one `_sqlx_migrations` table, so
/// versions this migrator does not know are ignored.
///
/// # Errors
/// When a migration fails or an applied one was changed.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    ordo_event_store::run_migrations(&MIGRATOR, pool).await
}

/// Executes commands against the event store. Cheap to clone; clones share the pool, the
/// writer and the lanes (the folded state of the streams this process wrote or read lately).
///
/// The saga needs nothing but `CommandService::new(EventStore::new(pool))`; snapshots of long
/// streams need this crate's table ([`migrate`]) and are skipped without it.
#[derive(Debug, Clone)]
pub struct CommandService {
    env: Env,
    lanes: Lanes,
}

/// Streams whose folded state a service keeps by default.
pub const DEFAULT_LANES: usize = 10_000;

/// A stream folded into its aggregate, with the version the state reflects (0: no stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    pub state: A,
    pub version: i64,
}

/// A SKU to claim in the transaction that lists the product.
#[derive(Debug, Clone)]
struct SkuClaim {
    merchant_id: Uuid,
    sku: String,
}

impl SkuClaim {
    /// The claim in the event log: unique per merchant (a UUID holds no `:`).
    fn claim(&self) -> UniqueClaim {
        UniqueClaim { kind: "product_sku".into(), value: format!("{}:{}", self.merchant_id, self.sku) }
    }
}

/// Everything about one command execution except the command itself.
struct Spec<'a, A> {
    name: &'static str,
    stream: StreamRef,
    ctx: &'a CommandContext,
    guard: Guard<A>,
    sku: Option<SkuClaim>,
}

impl CommandService {
    /// A service with the default [`RetryPolicy`] keeping up to [`DEFAULT_LANES`] streams.
    pub fn new(store: EventStore) -> Self {
        Self { env: Env { store, retry: RetryPolicy::default() }, lanes: Lanes::new(DEFAULT_LANES) }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.env.retry = retry;
        self
    }

    /// Keeps the folded state of at most `streams` streams (the least recently used go first).
    pub fn with_lanes(mut self, streams: usize) -> Self {
        self.lanes = Lanes::new(streams);
        self
    }

    pub fn store(&self) -> &EventStore {
        &self.env.store
    }

    /// The stream's current state as the log has it: what this process holds, caught up with
    /// what was appended since.
    ///
    /// # Errors
    /// [`CommandError::Store`] when reading fails or a stored event does not decode.
    pub async fn load<A>(&self, stream: StreamRef) -> Result<Loaded<A>, CommandError>
    where
        A: Snapshot + Send + Sync + 'static,
        A::Command: Send + Sync + 'static,
        A::Event: Send + Sync,
    {
        let folded = self.lanes.lane::<A>(stream).fresh(&self.env).await?;
        Ok(Loaded { state: folded.state, version: folded.version })
    }

    /// Runs one command end to end, with metrics and a log line for its outcome. `prepare`
    /// builds the command (it may read other streams).
    async fn handle<A>(
        &self,
        spec: Spec<'_, A>,
        prepare: impl Future<Output = Result<A::Command, CommandError>> + Send,
    ) -> Result<CommandOutcome, CommandError>
    where
        A: Snapshot + Send + Sync + 'static,
        A::Command: Send + Sync + 'static,
        A::Event: Send + Sync,
    {
        let started = Instant::now();
        let (name, stream) = (spec.name, spec.stream);
        let key = spec.ctx.idempotency.clone();
        let result = async {
            let command = prepare.await?;
            let claim = spec.sku.as_ref().map(SkuClaim::claim);
            let (job, answer) = Job::new(spec.name, command, spec.guard, spec.ctx.clone(), claim);
            self.lanes.lane::<A>(spec.stream).run(&self.env, job, answer).await
        }
        .await;
        let result = self.settle_twin(stream, key.as_ref(), result).await;
        observe(name, stream, &result, started);
        result
    }

    /// The stored answer for a repeated idempotency key, `None` for a new key.
    async fn replay(&self, stream: StreamRef, key: &IdempotencyKey) -> Result<Option<CommandOutcome>, CommandError> {
        let Some(record) = self.env.store.find_idempotency(&key.scope, &key.key).await? else { return Ok(None) };
        if record.request_hash != key.request_hash {
            return Err(CommandError::IdempotencyKeyReused);
        }
        Ok(Some(replayed(stream, record)))
    }

    /// A keyed command that was refused or changed nothing while its key already holds an
    /// answer (a repeat of a request that succeeded, or a twin that won the race) answers with
    /// the stored receipt.
    async fn settle_twin(
        &self,
        stream: StreamRef,
        key: Option<&IdempotencyKey>,
        result: Result<CommandOutcome, CommandError>,
    ) -> Result<CommandOutcome, CommandError> {
        let settle = match (&result, key) {
            (Ok(o), Some(_)) => o.events == 0 && o.replayed.is_none(),
            (Err(e), Some(_)) => {
                !matches!(e, CommandError::IdempotencyKeyReused | CommandError::Store(_) | CommandError::Unavailable(_))
            }
            _ => false,
        };
        let Some(key) = key.filter(|_| settle) else { return result };
        match self.replay(stream, key).await {
            Ok(Some(replayed)) => Ok(replayed),
            Err(CommandError::IdempotencyKeyReused) => Err(CommandError::IdempotencyKeyReused),
            _ => result,
        }
    }
}

/// The outcome of a repeated request: the receipt its first answer stored.
pub(crate) fn replayed(stream: StreamRef, record: IdempotencyRecord) -> CommandOutcome {
    let receipt = Receipt::from_record(stream, &record);
    CommandOutcome { stream: receipt.stream, version: receipt.version, events: 0, retries: 0, replayed: Some(receipt) }
}

/// Records `ordo_commands_total`, `ordo_command_duration_seconds` and a log line.
fn observe(name: &'static str, stream: StreamRef, result: &Result<CommandOutcome, CommandError>, started: Instant) {
    let outcome = match result {
        Ok(o) if o.replayed.is_some() => "replayed",
        Ok(o) if o.events == 0 => "unchanged",
        Ok(_) => "accepted",
        Err(e) => e.outcome(),
    };
    metrics::counter!("ordo_commands_total", "command" => name, "outcome" => outcome).increment(1);
    metrics::histogram!("ordo_command_duration_seconds", "command" => name).record(started.elapsed().as_secs_f64());
    match result {
        Ok(o) => tracing::info!(
            command = name,
            stream = %o.stream,
            version = o.version,
            events = o.events,
            retries = o.retries,
            outcome,
            "command handled"
        ),
        Err(e) if e.is_rejection() => {
            tracing::info!(command = name, stream = %stream, outcome, reason = %e, "command rejected")
        }
        Err(e) => tracing::warn!(command = name, stream = %stream, outcome, error = %e, "command not recorded"),
    }
}
