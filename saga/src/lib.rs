//! The order saga: a Kafka consumer group on `ordo.orders` that drives each order through the
//! command handlers of the write side (not over HTTP).
//!
//! - `OrderPlaced`: reserve every line; all reserved: confirm; any refused: release the
//!   reserved lines and reject with the refused ones (product, requested, available, reason).
//! - `OrderCancelled`: release every line's reservation. `OrderShipped`: commit them.
//! - A cancellation that wins the race against the confirmation is compensated (released).
//!
//! Commands carry the triggering event's correlation id, its event id as causation id and its
//! trace context. Offsets are committed only after an event was handled, so a crash
//! redelivers; handling is idempotent (see [`handler`]), so a redelivery changes nothing.
//! Infrastructure failures are retried with backoff on the same event (the partition waits);
//! an event that cannot be decoded is logged, counted and skipped.
//!
//! Metrics: `ordo_saga_outcomes_total{outcome}` (see [`Outcome::as_str`], plus `malformed`,
//! `failed` and `retry`).

pub mod handler;
pub mod queue;
pub mod watermark;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_commands::CommandService;
use ordo_event_store::kafka::{self, ConsumerSettings, EventConsumer};
use ordo_schemas::StreamCategory;
use ordo_service::shutdown::Shutdown;
use tracing::Instrument;

pub use handler::{OrderSaga, Outcome, SagaError};

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
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            brokers: kafka::DEFAULT_BROKERS.into(),
            group_id: "ordo-order-saga".into(),
            partitions: 3,
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counts of a running saga, for tests and readiness.
#[derive(Debug, Default)]
pub struct SagaStatus {
    handled: AtomicU64,
}

impl SagaStatus {
    /// Messages handled and committed (including ignored and already-handled ones).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }
}

/// Why the saga could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Consumes `ordo.orders` until `shutdown` fires, then finishes the event in hand, commits
/// offsets and leaves the group.
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
    let settings = ConsumerSettings::new(&config.brokers, &config.group_id, &[StreamCategory::Order.topic()]);
    let mut consumer = EventConsumer::start(settings)?;
    let saga = OrderSaga::new(service);
    tracing::info!(group = %config.group_id, "order saga consuming");
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            () = shutdown.wait() => None,
        };
        let Some(message) = message else { break };
        let envelope = match kafka::decode(&message) {
            Ok(e) => e,
            Err(e) => {
                use rdkafka::Message;
                tracing::error!(error = %e, topic = message.topic(), partition = message.partition(),
                    offset = message.offset(), "malformed message skipped");
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => "malformed").increment(1);
                consumer.commit(&message);
                continue;
            }
        };
        let meta = &envelope.metadata.metadata;
        let span = tracing::info_span!("saga_event", event_type = %envelope.event_type, order_id = %envelope.stream_id,
            event_id = %meta.event_id, correlation_id = %meta.correlation_id,
            traceparent = meta.traceparent.as_deref().unwrap_or_default());
        ordo_service::telemetry::set_remote_parent(&span, meta.traceparent.as_deref(), meta.tracestate.as_deref());
        let finished = handle_with_retries(&saga, &envelope, &config, &shutdown).instrument(span).await;
        if !finished {
            break; // shutdown while retrying: the event stays uncommitted and is redelivered
        }
        consumer.commit(&message);
        status.handled.fetch_add(1, Ordering::SeqCst);
    }
    consumer.shutdown().await;
    tracing::info!("order saga stopped");
    Ok(())
}

/// Handles one event, retrying transient failures. Returns false if shutdown interrupted it.
async fn handle_with_retries(
    saga: &OrderSaga,
    envelope: &ordo_schemas::EventEnvelope,
    config: &SagaConfig,
    shutdown: &Shutdown,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match saga.handle(envelope).await {
            Ok(outcome) => {
                tracing::debug!(outcome = outcome.as_str(), "saga event handled");
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => outcome.as_str()).increment(1);
                return true;
            }
            Err(e) if e.is_transient() => {
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => "retry").increment(1);
                tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "saga step failed, retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.wait() => return false,
                }
                delay = (delay * 2).min(config.max_backoff);
            }
            Err(e) => {
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => "failed").increment(1);
                tracing::error!(error = %e, "saga cannot handle event, skipped");
                return true;
            }
        }
    }
}

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
