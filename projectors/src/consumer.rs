//! The live projector: a member of the Kafka consumer group `ordo-projectors` over the four
//! `ordo.*` topics, applying what it receives in batches through [`Projector::apply_batch`].
//!
//! Offsets: each batch records the next offset per topic and partition in Postgres in the same
//! transaction as its read-model writes. Messages below the stored offset of their partition are
//! skipped without touching the read models (a restart or rebalance re-delivers from Kafka's
//! committed offset, which is only a hint committed after the Postgres commit, so it can lag but
//! never lead). Whatever slips past is still skipped per stream by version.

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt;
use ordo_event_store::kafka::{self, ConsumerSettings, EventConsumer};
use ordo_service::shutdown::Shutdown;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use sqlx::Row;
use tracing::Instrument;

use crate::batch::{BatchStats, Projector};
use crate::incoming::{Incoming, Origin};
use crate::ProjectorError;

/// How the consumer batches.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub brokers: String,
    pub group_id: String,
    /// Most messages per Postgres transaction. A batch is whatever is queued when the previous
    /// one committed, up to this many; no timer waits to fill it.
    pub batch_size: usize,
}

impl ConsumerOptions {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), group_id: crate::GROUP_ID.to_owned(), batch_size: 500 }
    }
}

/// Consumes until `shutdown`; the batch in hand is finished and committed first.
///
/// # Errors
/// [`ProjectorError::Kafka`] when the consumer cannot join the group. Database failures are
/// retried with a backoff, never skipped.
pub async fn run_consumer(
    projector: Projector,
    options: ConsumerOptions,
    shutdown: Shutdown,
) -> Result<(), ProjectorError> {
    let topics = kafka::topics();
    let mut settings = ConsumerSettings::new(options.brokers.clone(), options.group_id.clone(), &topics);
    settings.buffer = options.batch_size.max(1) * 2;
    let mut consumer = EventConsumer::start(settings).map_err(|e| ProjectorError::Kafka(e.to_string()))?;
    tracing::info!(group = %options.group_id, "projector consumer started");
    let mut stored: HashMap<(String, i32), i64> = HashMap::new();
    loop {
        let first = tokio::select! {
            _ = shutdown.wait() => break,
            m = consumer.recv() => m,
        };
        let Some(first) = first else { break };
        // whatever is queued already joins the batch; nothing waits for more
        let mut batch = vec![first];
        while batch.len() < options.batch_size {
            match consumer.recv().now_or_never() {
                Some(Some(m)) => batch.push(m),
                _ => break,
            }
        }
        if batch.iter().any(|m| !stored.contains_key(&(m.topic().to_owned(), m.partition()))) {
            load_offsets(projector.pool(), &options.group_id, &mut stored).await;
        }
        let incoming: Vec<Incoming> = batch
            .iter()
            .filter(|m| m.offset() >= stored.get(&(m.topic().to_owned(), m.partition())).copied().unwrap_or(0))
            .map(to_incoming)
            .collect();
        let skipped = batch.len() - incoming.len();
        if skipped > 0 {
            metrics::counter!("ordo_projector_offsets_skipped_total").increment(skipped as u64);
        }
        let span = tracing::info_span!("projector_batch", size = incoming.len(), skipped);
        let traces = || batch.iter().map(|m| (kafka::header(m, "traceparent"), kafka::header(m, "tracestate")));
        ordo_service::telemetry::follow(&span, traces());
        let _applies = ordo_service::telemetry::message_spans(&span, "projector_apply", traces());
        let stats = apply_with_retry(&projector, &incoming, &options.group_id, &shutdown).instrument(span).await;
        let Some(stats) = stats else { break };
        tracing::debug!(applied = stats.applied, skipped = stats.skipped, "batch committed");
        for m in &batch {
            let slot = stored.entry((m.topic().to_owned(), m.partition())).or_insert(0);
            *slot = (*slot).max(m.offset() + 1);
            consumer.commit(m);
        }
    }
    consumer.shutdown().await;
    tracing::info!(group = %options.group_id, "projector consumer stopped");
    Ok(())
}

/// Applies a batch, retrying database failures with a capped backoff. `None` when shutdown came
/// first (nothing of the batch was committed; it is delivered again later).
async fn apply_with_retry(
    projector: &Projector,
    incoming: &[Incoming],
    group: &str,
    shutdown: &Shutdown,
) -> Option<BatchStats> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match projector.apply_batch(incoming, Some(group)).await {
            Ok(stats) => return Some(stats),
            Err(e) => {
                metrics::counter!("ordo_projector_batch_failures_total").increment(1);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "projector batch failed");
                tokio::select! {
                    _ = shutdown.wait() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A message as an event to project; a malformed one becomes a poison event.
pub fn to_incoming(m: &OwnedMessage) -> Incoming {
    let origin = Origin::Kafka { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() };
    let raw = m.payload().unwrap_or_default().to_vec();
    match kafka::decode(m) {
        Ok(envelope) => Incoming::from_envelope(&envelope, origin, raw),
        Err(e) => Incoming::undecodable(origin, m.key(), raw, e.to_string()),
    }
}

async fn load_offsets(pool: &sqlx::PgPool, group: &str, stored: &mut HashMap<(String, i32), i64>) {
    let rows = sqlx::query("SELECT topic, partition, next_offset FROM projector_offsets WHERE group_id = $1")
        .bind(group)
        .fetch_all(pool)
        .await;
    match rows {
        Ok(rows) => {
            for r in rows {
                if let (Ok(t), Ok(p), Ok(o)) = (
                    r.try_get::<String, _>("topic"),
                    r.try_get::<i32, _>("partition"),
                    r.try_get::<i64, _>("next_offset"),
                ) {
                    let slot = stored.entry((t, p)).or_insert(o);
                    *slot = (*slot).max(o);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "loading stored offsets failed"),
    }
}
