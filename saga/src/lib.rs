//! The order saga: a Kafka consumer group on `ordo.orders` that drives each order through the
//! command handlers of the write side (not over HTTP).
//!
//! - `OrderPlaced`: reserve every line; all reserved: confirm; any refused: release the
//!   reserved lines and reject with the refused ones (product, requested, available, reason).
//! - `OrderCancelled`: release every line's reservation. `OrderShipped`: commit them.
//! - A cancellation that wins the race against the confirmation is compensated (released).
//!
//! Commands carry the triggering event's correlation id, its event id as causation id and its
//! trace context. Events of different orders are handled concurrently (up to
//! [`SagaConfig::concurrency`] at once), the events of one order one after another in the order
//! the partition delivered them ([`queue`]). An offset is committed only when it and every
//! earlier offset of its partition were handled ([`watermark`]), so a crash redelivers whatever
//! was not; handling is idempotent (see [`handler`]), so a redelivery changes nothing.
//! Infrastructure failures are retried with backoff on the same event (its order waits, and its
//! partition's watermark with it); an event that cannot be decoded is logged, counted and
//! skipped. See ADR 0024.
//!
//! Where each partition's watermark reached is also stored in Postgres (`saga_offsets`, with the
//! broker incarnation of the message it follows) and given to the consumer, which checks every
//! partition it is assigned against it: after the broker lost its data, a late commit of the old
//! log does not hide the orders below it (ADR 0021).
//!
//! Metrics: `ordo_saga_outcomes_total{outcome}` (see [`Outcome::as_str`], plus `malformed`,
//! `failed` and `retry`), `ordo_saga_in_flight` (events being handled) and
//! `ordo_saga_uncommitted` (events received whose offset is not committed yet).

mod dispatch;
pub mod handler;
mod offsets;
pub mod process;
pub mod queue;
pub mod watermark;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_commands::CommandService;
use ordo_event_store::kafka::{self, ConsumerSettings, EventConsumer, Progress};
use ordo_schemas::StreamCategory;
use ordo_service::shutdown::Shutdown;

pub use handler::{OrderSaga, Outcome, SagaError};

/// The migrations of the saga's own tables (`saga_offsets`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies the saga's migrations (beside the other crates', see
/// [`ordo_event_store::run_migrations`]).
///
/// # Errors
/// When a migration fails or an applied one was changed.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    ordo_event_store::run_migrations(&MIGRATOR, pool).await
}

/// Events handled at once by default.
pub const DEFAULT_CONCURRENCY: u16 = 64;

/// How the saga runs. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Kafka bootstrap servers (default `127.0.0.1:9092`).
    pub brokers: String,
    /// Consumer group (default `ordo-order-saga`); replicas share it.
    pub group_id: String,
    /// Partitions of topics created at start-up if missing (default 3).
    pub partitions: i32,
    /// Longest wait between retries of an event that failed for infrastructure reasons (5 s).
    pub max_backoff: Duration,
    /// Events handled at once, of different orders (default [`DEFAULT_CONCURRENCY`]; 1 handles
    /// one event at a time). Received events waiting behind one of their order count too.
    pub concurrency: usize,
    /// How long shutdown waits for the events in flight before abandoning them (10 s); an
    /// abandoned event is not committed and is redelivered.
    pub shutdown_grace: Duration,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            brokers: kafka::DEFAULT_BROKERS.into(),
            group_id: "ordo-order-saga".into(),
            partitions: 3,
            max_backoff: Duration::from_secs(5),
            concurrency: usize::from(DEFAULT_CONCURRENCY),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Counts of a running saga, for tests and readiness.
#[derive(Debug, Default)]
pub struct SagaStatus {
    handled: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl SagaStatus {
    /// Messages handled (including ignored and already-handled ones); each is committed once
    /// every earlier message of its partition was handled too.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }

    /// The most events that were being handled at the same moment.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Counts an event as being handled until the answer is dropped.
    fn in_flight(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        metrics::gauge!("ordo_saga_in_flight").increment(1.0);
        InFlight(self.clone())
    }
}

/// An event being handled (also when its task is aborted).
struct InFlight(Arc<SagaStatus>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("ordo_saga_in_flight").decrement(1.0);
    }
}

/// Why the saga could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Consumes `ordo.orders` until `shutdown` fires, then finishes the events in flight (for at
/// most [`SagaConfig::shutdown_grace`]), drops the ones waiting behind them, commits the offsets
/// every handled event allows and leaves the group.
///
/// Where each partition's watermark reached is also stored in `saga_offsets` (with the broker
/// incarnation of the message it follows), and the consumer checks every partition it is given
/// against that record (ADR 0021), so a late commit of an old log does not hide orders.
///
/// # Errors
/// [`RunError`] when the consumer cannot be created.
pub async fn run(
    service: CommandService,
    config: SagaConfig,
    status: Arc<SagaStatus>,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    ensure_topics(&config, &shutdown).await;
    if shutdown.is_triggered() {
        return Ok(());
    }
    let pool = service.store().pool().clone();
    let progress = Progress::default();
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = offsets::load(&pool, &config.group_id, &progress).await {
        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "loading the saga's stored offsets failed");
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
    let mut settings = ConsumerSettings::new(&config.brokers, &config.group_id, &[StreamCategory::Order.topic()]);
    settings.progress = Some(progress.clone());
    let consumer = EventConsumer::start(settings)?;
    let refresh = progress.refresh_every_2s(pool.clone(), "saga_offsets", config.group_id.clone());
    let (recorder, writer) = offsets::Recorder::start(pool, config.group_id.clone(), progress);
    tracing::info!(group = %config.group_id, concurrency = config.concurrency, "order saga consuming");
    let mut dispatcher =
        dispatch::Dispatcher::new(OrderSaga::new(service), consumer, recorder, config, status, shutdown);
    dispatcher.consume().await;
    let consumer = dispatcher.drain().await;
    consumer.shutdown().await;
    drop(refresh);
    // The recorder went with the dispatcher: the writer stores what is left, and gives up on a
    // database that does not answer (the record may lag; it is read again from a lower offset).
    if tokio::time::timeout(OFFSETS_GRACE, writer).await.is_err() {
        tracing::warn!("the saga's last offsets were not stored in time");
    }
    tracing::info!("order saga stopped");
    Ok(())
}

/// How long shutdown waits for the saga's last offsets to be stored.
const OFFSETS_GRACE: Duration = Duration::from_secs(5);

/// Creates the topics if missing, retrying until the broker answers or shutdown.
async fn ensure_topics(config: &SagaConfig, shutdown: &Shutdown) {
    let mut delay = Duration::from_millis(100);
    loop {
        match kafka::ensure_topics(&config.brokers, config.partitions).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "cannot ensure topics, retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.wait() => return,
        }
        delay = (delay * 2).min(config.max_backoff);
    }
}
