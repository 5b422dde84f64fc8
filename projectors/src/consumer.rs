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
use ordo_event_store::kafka::{self, ConsumerSettings, EventConsumer, Progress};
use ordo_event_store::signing::SigningKey;
use ordo_schemas::envelope::headers;
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
    let key = SigningKey::load(projector.pool()).await?;
    // The stored offsets, not the group's committed ones, say where each partition stands and
    // in which broker incarnation it was read (ADR 0021): the consumer checks every partition it
    // is given against them, and they are refreshed while it runs (other replicas move them).
    let progress = Progress::default();
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = load_progress(projector.pool(), &options.group_id, &progress).await {
        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "loading the stored offsets failed");
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    settings.progress = Some(progress.clone());
    let refresh = progress.refresh_every_2s(projector.pool().clone(), "projector_offsets", options.group_id.clone());
    let mut consumer = EventConsumer::start(settings).map_err(|e| ProjectorError::Kafka(e.to_string()))?;
    tracing::info!(group = %options.group_id, "projector consumer started");
    let mut stored: HashMap<(String, i32), Stored> = HashMap::new();
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
            .filter_map(|m| {
                let slot = stored.entry((m.topic().to_owned(), m.partition())).or_default();
                let incarnation = kafka::incarnation(m).unwrap_or(slot.incarnation);
                slot.admits(m.offset(), incarnation).then(|| to_verified_incoming(m, incarnation, &key))
            })
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
            let slot = stored.entry((m.topic().to_owned(), m.partition())).or_default();
            if kafka::incarnation(m).unwrap_or(slot.incarnation) == slot.incarnation {
                slot.next_offset = slot.next_offset.max(m.offset() + 1);
            }
            progress.record(m.topic(), m.partition(), slot.incarnation, slot.next_offset);
            consumer.commit(m);
        }
    }
    drop(refresh);
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

/// Where a partition's stored offset stands, and in which broker incarnation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub next_offset: i64,
    pub incarnation: i64,
}

impl Stored {
    /// Whether a message at `offset` of `incarnation` is still to be projected. One of a newer
    /// incarnation than the stored offset's means the topic was re-created: the stored offset
    /// counts messages of a partition that no longer exists, so it is dropped and the message
    /// projected (already applied versions are skipped per stream). One of an older incarnation,
    /// read again while a re-created partition is rewound, is projected too, for the same reason.
    pub fn admits(&mut self, offset: i64, incarnation: i64) -> bool {
        if incarnation > self.incarnation {
            *self = Stored { next_offset: 0, incarnation };
        }
        incarnation < self.incarnation || offset >= self.next_offset
    }
}

/// A message as an event to project, if the relay signed it with `key`; an unsigned or forged
/// one is rejected (dead-lettered without parking a stream: a stream is not taken from a
/// message nobody vouches for), and a malformed one becomes a poison event.
///
/// `incarnation` is the broker incarnation it counts in (its header's, or the partition's current
/// one for a message without the header).
pub fn to_verified_incoming(m: &OwnedMessage, incarnation: i64, key: &SigningKey) -> Incoming {
    let payload = m.payload().unwrap_or_default();
    let problem = match kafka::header(m, headers::SIGNATURE) {
        None => Some("an unsigned message"),
        Some(sig) if !key.verify(payload, sig) => Some("a message whose signature does not verify"),
        Some(_) => None,
    };
    match problem {
        None => to_incoming(m, incarnation),
        Some(problem) => {
            metrics::counter!("ordo_projector_forged_messages_total").increment(1);
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                problem,
                "message not signed by the relay, dead-lettered"
            );
            let origin = origin_of(m, incarnation);
            Incoming::untrusted(origin, payload.to_vec(), problem.to_owned())
        }
    }
}

fn origin_of(m: &OwnedMessage, incarnation: i64) -> Origin {
    Origin::Kafka { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset(), incarnation }
}

/// A message as an event to project; a malformed one becomes a poison event.
pub fn to_incoming(m: &OwnedMessage, incarnation: i64) -> Incoming {
    let origin = origin_of(m, incarnation);
    let raw = m.payload().unwrap_or_default().to_vec();
    match kafka::decode(m) {
        Ok(envelope) => Incoming::from_envelope(&envelope, origin, raw),
        Err(e) => Incoming::undecodable(origin, m.key(), raw, e.to_string()),
    }
}

async fn load_offsets(pool: &sqlx::PgPool, group: &str, stored: &mut HashMap<(String, i32), Stored>) {
    let rows =
        sqlx::query("SELECT topic, partition, next_offset, incarnation FROM projector_offsets WHERE group_id = $1")
            .bind(group)
            .fetch_all(pool)
            .await;
    match rows {
        Ok(rows) => {
            for r in rows {
                if let (Ok(t), Ok(p), Ok(o), Ok(i)) = (
                    r.try_get::<String, _>("topic"),
                    r.try_get::<i32, _>("partition"),
                    r.try_get::<i64, _>("next_offset"),
                    r.try_get::<i64, _>("incarnation"),
                ) {
                    let slot = stored.entry((t, p)).or_default();
                    if i > slot.incarnation || (i == slot.incarnation && o > slot.next_offset) {
                        *slot = Stored { next_offset: o, incarnation: i };
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "loading stored offsets failed"),
    }
}

async fn load_progress(pool: &sqlx::PgPool, group: &str, progress: &Progress) -> Result<(), sqlx::Error> {
    progress.load(pool, "projector_offsets", group).await
}
