//! Producing one page of the log, and waiting for every acknowledgement of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_schemas::envelope::{headers, Actor, EventMetadata, RecordedMetadata};
use ordo_schemas::EventEnvelope;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Header;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::RelayConfig;
use crate::kafka;
use crate::signing::SigningKey;
use crate::types::RecordedEvent;

/// Why a batch was not fully acknowledged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("delivery future dropped by the producer")]
    Canceled,
    #[error("the connection to the broker was lost")]
    BrokerGone,
    #[error("event cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The relay's producer, with a [`BrokerWatch`] as its context.
pub(crate) type RelayProducer = FutureProducer<BrokerWatch>;

/// Notices when a producer loses its connection to the broker. A broker that comes back may
/// have re-created its topics under new topic ids, which a librdkafka client that cached the old
/// ones does not recover from (it can skip the new metadata, or crash updating its cache), so the
/// relay replaces such a producer by a fresh one.
#[derive(Clone, Default)]
pub(crate) struct BrokerWatch(Arc<AtomicBool>);

impl BrokerWatch {
    pub(crate) fn is_gone(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Resolves once the connection was lost.
    pub(crate) async fn gone(&self) {
        while !self.is_gone() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl ClientContext for BrokerWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if kafka::broker_gone(&error) {
            self.0.store(true, Ordering::SeqCst);
        }
        tracing::warn!(error = %error, reason, "kafka producer error");
    }
}

/// The relay's idempotent producer and the watch on its connection.
pub(crate) fn producer(cfg: &RelayConfig) -> Result<(RelayProducer, BrokerWatch), KafkaError> {
    let watch = BrokerWatch::default();
    let producer = kafka::producer_config(&cfg.brokers, cfg.delivery_timeout)
        .set("client.id", format!("ordo-{}", cfg.name))
        .create_with_context(watch.clone())?;
    Ok((producer, watch))
}

/// Drops a producer off the async runtime: destroying a librdkafka client can wait for the
/// broker.
pub(crate) fn discard(producer: RelayProducer) {
    tokio::task::spawn_blocking(move || drop(producer));
}

/// Where one message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub topic: &'static str,
    pub partition: i32,
    pub offset: i64,
}

/// A stored event whose metadata does not decode: it was published with substitute metadata.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub position: i64,
    pub category: &'static str,
    pub stream_id: uuid::Uuid,
    pub version: i64,
    pub error: String,
}

/// What a fully acknowledged batch produced.
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub delivered: Vec<Delivered>,
    pub dead_letters: Vec<DeadLetter>,
}

/// What a message carries besides the envelope.
pub(crate) struct Stamp<'a> {
    pub incarnation: i64,
    pub key: &'a SigningKey,
}

/// A page handed to the producer: its deliveries, still to be acknowledged.
pub(crate) struct Enqueued {
    deliveries: Vec<(&'static str, DeliveryFuture)>,
    dead_letters: Vec<DeadLetter>,
    spans: Vec<tracing::Span>,
}

/// Hands `events` to the producer in order, stamped with the incarnation and signed, without
/// waiting for the broker. If one cannot be handed over, waits until what was handed over
/// settled (so nothing is left in flight) and returns the error.
pub(crate) async fn enqueue(
    producer: &RelayProducer,
    events: &[RecordedEvent],
    stamp: &Stamp<'_>,
) -> Result<Enqueued, PublishError> {
    let mut deliveries = Vec::with_capacity(events.len());
    let mut dead_letters = Vec::new();
    let incarnation = stamp.incarnation.to_string();
    // One span per event, child of the request that wrote it, ended when the batch settled.
    let mut spans = Vec::with_capacity(if ordo_service::telemetry::exporting() { events.len() } else { 0 });
    for event in events {
        let envelope = match event.to_envelope() {
            Ok(envelope) => envelope,
            Err(e) => {
                dead_letters.push(DeadLetter {
                    position: event.position,
                    category: event.stream.category.as_str(),
                    stream_id: event.stream.id,
                    version: event.version,
                    error: e.to_string(),
                });
                substitute_envelope(event)
            }
        };
        if ordo_service::telemetry::exporting() {
            let meta = &envelope.metadata.metadata;
            let span = tracing::info_span!("relay_publish", otel.kind = "producer", event_id = %meta.event_id,
                event_type = %envelope.event_type, topic = envelope.category.topic());
            ordo_service::telemetry::set_remote_parent(&span, meta.traceparent.as_deref(), meta.tracestate.as_deref());
            spans.push(span);
        }
        let encoded = kafka::encode(&envelope)?;
        let signature = stamp.key.sign(&encoded.payload);
        let headers = encoded
            .headers
            .insert(Header { key: headers::INCARNATION, value: Some(incarnation.as_str()) })
            .insert(Header { key: headers::SIGNATURE, value: Some(signature.as_str()) });
        let mut record = FutureRecord::to(encoded.topic)
            .key(encoded.key.as_str())
            .payload(encoded.payload.as_slice())
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push((encoded.topic, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    // Let what was enqueued settle before reporting, so nothing is left in flight.
                    for (_, d) in deliveries {
                        let _ = d.await;
                    }
                    return Err(e.into());
                }
            }
        }
    }
    Ok(Enqueued { deliveries, dead_letters, spans })
}

impl Enqueued {
    /// Waits for every delivery of the page. Succeeds only if every message was acknowledged;
    /// otherwise returns the first error, after every delivery settled.
    pub(crate) async fn acknowledged(self) -> Result<Published, PublishError> {
        let Self { deliveries, dead_letters, spans } = self;
        let mut first_error = None;
        let mut delivered = Vec::with_capacity(deliveries.len());
        for (topic, delivery) in deliveries {
            let outcome = match delivery.await {
                Ok(Ok(d)) => {
                    delivered.push(Delivered { topic, partition: d.partition, offset: d.offset });
                    continue;
                }
                Ok(Err((e, _))) => PublishError::Kafka(e),
                Err(_) => PublishError::Canceled,
            };
            first_error.get_or_insert(outcome);
        }
        // One span per event, ended now that its page settled.
        drop(spans);
        first_error.map_or(Ok(Published { delivered, dead_letters }), Err)
    }
}

/// The envelope of an event whose stored metadata does not decode: its data, version and hashes
/// as stored (all a consumer acts on), with metadata rebuilt from its columns: its event id,
/// itself as the correlation, the system as the actor, no trace.
fn substitute_envelope(event: &RecordedEvent) -> EventEnvelope {
    EventEnvelope {
        position: event.position,
        category: event.stream.category,
        stream_id: event.stream.id,
        version: event.version,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        data: event.data.clone(),
        metadata: RecordedMetadata {
            metadata: EventMetadata {
                event_id: event.event_id,
                correlation_id: event.event_id,
                causation_id: None,
                actor: Actor::system(),
                traceparent: None,
                tracestate: None,
            },
            recorded_at: event.recorded_at,
        },
        hash: hex::encode(&event.hash),
        prev_hash: event.prev_hash.as_ref().map(hex::encode),
    }
}
