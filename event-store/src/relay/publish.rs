//! Producing one batch and waiting for every acknowledgement.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::RelayConfig;
use crate::error::StoreError;
use crate::kafka;
use crate::types::RecordedEvent;

/// Why a batch was not fully acknowledged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("delivery future dropped by the producer")]
    Canceled,
    #[error("event cannot be enveloped: {0}")]
    Envelope(#[from] StoreError),
    #[error("event cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The relay's idempotent producer.
pub(crate) fn producer(cfg: &RelayConfig) -> Result<FutureProducer, KafkaError> {
    kafka::producer_config(&cfg.brokers, cfg.delivery_timeout).set("client.id", format!("ordo-{}", cfg.name)).create()
}

/// Produces `events` in order and waits for all deliveries. Succeeds only if every message
/// was acknowledged; otherwise returns the first error after every delivery settled.
pub(crate) async fn publish(producer: &FutureProducer, events: &[RecordedEvent]) -> Result<(), PublishError> {
    let mut deliveries = Vec::with_capacity(events.len());
    // One span per event, child of the request that wrote it, ended when the batch settled.
    let mut spans = Vec::with_capacity(if ordo_service::telemetry::exporting() { events.len() } else { 0 });
    for event in events {
        let envelope = event.to_envelope()?;
        if ordo_service::telemetry::exporting() {
            let meta = &envelope.metadata.metadata;
            let span = tracing::info_span!("relay_publish", otel.kind = "producer", event_id = %meta.event_id,
                event_type = %envelope.event_type, topic = envelope.category.topic());
            ordo_service::telemetry::set_remote_parent(&span, meta.traceparent.as_deref(), meta.tracestate.as_deref());
            spans.push(span);
        }
        let encoded = kafka::encode(&envelope)?;
        let mut record = FutureRecord::to(encoded.topic)
            .key(encoded.key.as_str())
            .payload(encoded.payload.as_slice())
            .headers(encoded.headers.clone());
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    // Let what was enqueued settle before reporting, so nothing is left in flight.
                    for d in deliveries {
                        let _ = d.await;
                    }
                    return Err(e.into());
                }
            }
        }
    }
    let mut first_error = None;
    for delivery in deliveries {
        let outcome = match delivery.await {
            Ok(Ok(_)) => continue,
            Ok(Err((e, _))) => PublishError::Kafka(e),
            Err(_) => PublishError::Canceled,
        };
        first_error.get_or_insert(outcome);
    }
    first_error.map_or(Ok(()), Err)
}
