//! The command side without HTTP: load a stream, fold it, decide, append at the loaded version.
//!
//! [`CommandService`] is what the HTTP handlers and the order saga call. Every command:
//! 1. answers from the idempotency record when its key was seen before (same request: the stored
//!    answer; other request: [`CommandError::IdempotencyKeyReused`]);
//! 2. loads the aggregate's stream and folds it with [`Aggregate::from_events`];
//! 3. checks the caller's expected version (`If-Match`) and the actor's rights on that state;
//! 4. decides, and appends the events with the loaded version as the exact expectation, the
//!    idempotency record (and for listings the SKU claim) in the same transaction;
//! 5. when a concurrent writer won and the caller stated no version, reloads and decides again,
//!    a bounded number of times with jittered backoff ([`RetryPolicy`]).

mod api;
mod cache;
mod placement;
mod types;

use std::future::Future;
use std::time::Instant;

use ordo_domain::Aggregate;
use ordo_event_store::{
    AppendError, EventStore, ExpectedVersion, IdempotencyRecord, NewEvent, StoreError, StreamAppend,
};
use ordo_schemas::{EventMetadata, StreamRef};
use uuid::Uuid;

pub use placement::{OrderLineRequest, PlaceOrderRequest};
pub use types::{CommandContext, CommandError, CommandOutcome, IdempotencyKey, RetryPolicy, StoredResponse};

use types::response_body;

/// Executes commands against the event store. Cheap to clone; clones share the pool.
///
/// The saga needs nothing but `CommandService::new(EventStore::new(pool))`. Listing products
/// additionally needs this crate's table ([`crate::migrate`]); the other commands use only the
/// event store's tables.
#[derive(Debug, Clone)]
pub struct CommandService {
    store: EventStore,
    retry: RetryPolicy,
    cache: cache::StateCache,
}

/// A stream folded into its aggregate, with the version the state reflects (0: no stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    pub state: A,
    pub version: i64,
}

/// Checks the actor's rights on the loaded state.
type Guard<'a, A> = &'a (dyn Fn(&A) -> Result<(), CommandError> + Send + Sync);

/// A SKU to claim in the transaction that lists the product.
#[derive(Debug, Clone)]
struct SkuClaim {
    merchant_id: Uuid,
    sku: String,
    product_id: Uuid,
}

/// Everything about one command execution except the command itself.
struct Spec<'a, A> {
    name: &'static str,
    stream: StreamRef,
    ctx: &'a CommandContext,
    guard: Guard<'a, A>,
    sku: Option<SkuClaim>,
}

/// An append that did not happen, for reasons of the store or of the SKU claim.
enum Failed {
    Append(AppendError),
    Rejected(CommandError),
}

impl CommandService {
    /// A service with the default [`RetryPolicy`].
    pub fn new(store: EventStore) -> Self {
        Self { store, retry: RetryPolicy::default(), cache: cache::StateCache::default() }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Reads a stream and folds it into its aggregate.
    ///
    /// # Errors
    /// [`CommandError::Store`] when reading fails or a stored event does not decode.
    pub async fn load<A: Aggregate + Send + Sync + 'static>(
        &self,
        stream: StreamRef,
    ) -> Result<Loaded<A>, CommandError> {
        // Start from the state this service last saw and read only what was appended since.
        let (mut state, mut version) = self.cache.get::<A>(stream).unwrap_or_default();
        let recorded = self.store.read_stream(stream, version + 1).await?;
        for r in &recorded {
            let event = r.decode::<A::Event>().map_err(|e| {
                StoreError::Corrupt(format!("event {} of {} does not decode: {e}", r.version, r.stream))
            })?;
            state.evolve(&event);
            version = r.version;
        }
        if !recorded.is_empty() {
            self.cache.put(stream, state.clone(), version);
        }
        Ok(Loaded { state, version })
    }

    /// Runs one command end to end, with metrics and a log line for its outcome. `prepare`
    /// builds the command (it may read other streams) once the idempotency key is known to be new.
    async fn handle<A>(
        &self,
        spec: Spec<'_, A>,
        prepare: impl Future<Output = Result<A::Command, CommandError>> + Send,
    ) -> Result<CommandOutcome, CommandError>
    where
        A: Aggregate + Send + Sync + 'static,
        A::Command: Send + Sync,
    {
        let started = Instant::now();
        let result = async {
            if let Some(key) = &spec.ctx.idempotency {
                if let Some(replayed) = self.replay(spec.stream, key).await? {
                    return Ok(replayed);
                }
            }
            let command = prepare.await?;
            self.run(&spec, &command).await
        }
        .await;
        let result = self.settle_twin(&spec, result).await;
        observe(&spec, &result, started);
        result
    }

    /// Load, check, decide and append, retrying lost races when no version was expected.
    async fn run<A>(&self, spec: &Spec<'_, A>, command: &A::Command) -> Result<CommandOutcome, CommandError>
    where
        A: Aggregate + Send + Sync + 'static,
        A::Command: Send + Sync,
    {
        let ctx = spec.ctx;
        let mut retries = 0u32;
        loop {
            let Loaded { state, version } = self.load::<A>(spec.stream).await?;
            if let Some(expected) = ctx.expected_version {
                if expected != version {
                    return Err(CommandError::VersionConflict { expected, actual: version });
                }
            }
            (spec.guard)(&state)?;
            let events = state.decide(command)?;
            let outcome =
                |version, events| CommandOutcome { stream: spec.stream, version, events, retries, replayed: None };
            if events.is_empty() {
                return Ok(outcome(version, 0));
            }
            let count = events.len();
            let new_version = version + i64::try_from(count).unwrap_or(i64::MAX);
            let record = ctx.idempotency.as_ref().map(|k| k.record(response_body(spec.stream, new_version)));
            let append = StreamAppend {
                stream: spec.stream,
                expected: ExpectedVersion::Exact(version),
                events: events.iter().map(|e| NewEvent::from_domain(e, metadata(ctx))).collect(),
            };
            match self.append(append, record.as_ref(), spec.sku.as_ref()).await {
                Ok(version) => return Ok(outcome(version, count)),
                Err(Failed::Rejected(e)) => return Err(e),
                Err(Failed::Append(AppendError::Conflict { actual, .. })) => {
                    metrics::counter!("ordo_append_conflicts_total").increment(1);
                    if let Some(expected) = ctx.expected_version {
                        return Err(CommandError::VersionConflict { expected, actual });
                    }
                    if retries >= self.retry.max_retries {
                        return Err(CommandError::Contention { retries });
                    }
                    retries += 1;
                    metrics::counter!("ordo_command_retries_total", "command" => spec.name).increment(1);
                    tracing::debug!(command = spec.name, stream = %spec.stream, retries, "append conflict, retrying");
                    tokio::time::sleep(self.retry.delay(retries)).await;
                }
                Err(Failed::Append(AppendError::IdempotencyKeyTaken { .. })) => {
                    let key = ctx.idempotency.as_ref();
                    let replayed = match key {
                        Some(key) => self.replay(spec.stream, key).await?,
                        None => None,
                    };
                    return replayed.ok_or_else(|| StoreError::Corrupt("idempotency record vanished".into()).into());
                }
                Err(Failed::Append(AppendError::Invalid(reason))) => {
                    return Err(StoreError::Corrupt(format!("invalid append: {reason}")).into())
                }
                Err(Failed::Append(AppendError::Store(e))) => return Err(e.into()),
            }
        }
    }

    /// Appends, claiming the SKU first in the same transaction when there is one.
    async fn append(
        &self,
        append: StreamAppend,
        record: Option<&IdempotencyRecord>,
        sku: Option<&SkuClaim>,
    ) -> Result<i64, Failed> {
        let store_err = |e: sqlx::Error| Failed::Rejected(StoreError::from(e).into());
        let Some(sku) = sku else {
            return self
                .store
                .append_many(vec![append], record)
                .await
                .map(|s| last_version(&s))
                .map_err(Failed::Append);
        };
        let mut tx = self.store.pool().begin().await.map_err(store_err)?;
        let claimed = sqlx::query(
            "INSERT INTO command_product_skus (merchant_id, sku, product_id) VALUES ($1, $2, $3) \
             ON CONFLICT (merchant_id, sku) DO NOTHING",
        )
        .bind(sku.merchant_id)
        .bind(&sku.sku)
        .bind(sku.product_id)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await.map_err(store_err)?;
            let taken = format!("sku {} is already listed by this merchant", sku.sku);
            return Err(Failed::Rejected(CommandError::Domain(ordo_domain::DomainError::AlreadyExists(taken))));
        }
        match EventStore::append_in(&mut tx, vec![append], record).await {
            Ok(streams) => {
                tx.commit().await.map_err(store_err)?;
                Ok(last_version(&streams))
            }
            Err(e) => {
                tx.rollback().await.map_err(store_err)?;
                Err(Failed::Append(e))
            }
        }
    }

    /// The stored answer for a repeated idempotency key, `None` for a new key.
    async fn replay(&self, stream: StreamRef, key: &IdempotencyKey) -> Result<Option<CommandOutcome>, CommandError> {
        let Some(record) = self.store.find_idempotency(&key.scope, &key.key).await? else { return Ok(None) };
        if record.request_hash != key.request_hash {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let body = record.response_body;
        let id = body.get("id").and_then(|v| v.as_str()).and_then(|s| Uuid::parse_str(s).ok()).unwrap_or(stream.id);
        Ok(Some(CommandOutcome {
            stream: StreamRef::new(stream.category, id),
            version: body.get("version").and_then(serde_json::Value::as_i64).unwrap_or(0),
            events: 0,
            retries: 0,
            replayed: Some(StoredResponse { status: record.response_status, body }),
        }))
    }

    /// A command that failed while a twin request with the same idempotency key succeeded
    /// (e.g. both registered the same customer at once) answers with the twin's stored response.
    async fn settle_twin<A>(
        &self,
        spec: &Spec<'_, A>,
        result: Result<CommandOutcome, CommandError>,
    ) -> Result<CommandOutcome, CommandError> {
        match (&result, &spec.ctx.idempotency) {
            (Err(e), Some(key)) if !matches!(e, CommandError::IdempotencyKeyReused | CommandError::Store(_)) => {
                match self.replay(spec.stream, key).await {
                    Ok(Some(replayed)) => Ok(replayed),
                    Err(CommandError::IdempotencyKeyReused) => Err(CommandError::IdempotencyKeyReused),
                    _ => result,
                }
            }
            _ => result,
        }
    }
}

fn last_version(streams: &[ordo_event_store::AppendedStream]) -> i64 {
    streams.last().map_or(0, |s| s.version)
}

/// Metadata of one new event: a fresh event id, the rest from the context.
fn metadata(ctx: &CommandContext) -> EventMetadata {
    EventMetadata {
        event_id: Uuid::now_v7(),
        correlation_id: ctx.correlation_id,
        causation_id: ctx.causation_id,
        actor: ctx.actor,
        traceparent: ctx.traceparent.clone(),
    }
}

/// Records `ordo_commands_total`, `ordo_command_duration_seconds` and a log line.
fn observe<A>(spec: &Spec<'_, A>, result: &Result<CommandOutcome, CommandError>, started: Instant) {
    let name = spec.name;
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
            tracing::info!(command = name, stream = %spec.stream, outcome, reason = %e, "command rejected")
        }
        Err(e) => tracing::warn!(command = name, stream = %spec.stream, outcome, error = %e, "command not recorded"),
    }
}
