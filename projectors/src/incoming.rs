//! An event as it reaches a projection, from Kafka or from the Postgres log, decoded once.

use chrono::{DateTime, Utc};
use ordo_event_store::RecordedEvent;
use ordo_schemas::{AnyEvent, EventEnvelope, StreamCategory, StreamRef};

/// Where an event came from, for dead letters and offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `incarnation`: the broker incarnation the relay published it in (0: not stamped).
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
        incarnation: i64,
    },
    Log,
}

/// One event to project. `event` is `Err` when it could not be decoded (a poison event).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub origin: Origin,
    /// The category, when known (from the envelope or the topic).
    pub category: Option<StreamCategory>,
    /// The stream, when known (from the envelope or the message key).
    pub stream: Option<StreamRef>,
    pub version: i64,
    pub position: i64,
    pub recorded_at: Option<DateTime<Utc>>,
    pub event: Result<AnyEvent, String>,
    /// The bytes as received, kept for dead letters.
    pub raw: Vec<u8>,
}

impl Incoming {
    /// An event read from the log.
    pub fn from_recorded(e: &RecordedEvent) -> Self {
        let event = AnyEvent::decode(e.stream.category, &e.event_type, e.schema_version, e.data.clone())
            .map_err(|err| err.to_string());
        let raw = match e.to_envelope() {
            Ok(env) => serde_json::to_vec(&env).unwrap_or_default(),
            Err(_) => serde_json::to_vec(&e.data).unwrap_or_default(),
        };
        Self {
            origin: Origin::Log,
            category: Some(e.stream.category),
            stream: Some(e.stream),
            version: e.version,
            position: e.position,
            recorded_at: Some(e.recorded_at),
            event,
            raw,
        }
    }

    /// An envelope received from Kafka.
    pub fn from_envelope(envelope: &EventEnvelope, origin: Origin, raw: Vec<u8>) -> Self {
        Self {
            origin,
            category: Some(envelope.category),
            stream: Some(envelope.stream()),
            version: envelope.version,
            position: envelope.position,
            recorded_at: Some(envelope.metadata.recorded_at),
            event: AnyEvent::from_envelope(envelope).map_err(|e| e.to_string()),
            raw,
        }
    }

    /// A Kafka message whose value is not an envelope. The stream is taken from the key and the
    /// category from the topic when they parse.
    pub fn undecodable(origin: Origin, key: Option<&[u8]>, raw: Vec<u8>, error: String) -> Self {
        let category = match &origin {
            Origin::Kafka { topic, .. } => StreamCategory::ALL.into_iter().find(|c| c.topic() == topic),
            Origin::Log => None,
        };
        let id = key.and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| uuid::Uuid::parse_str(k).ok());
        let stream = category.zip(id).map(|(c, id)| StreamRef::new(c, id));
        Self { origin, category, stream, version: 0, position: 0, recorded_at: None, event: Err(error), raw }
    }

    /// A Kafka message the relay did not sign: only its category (from the topic) is taken
    /// from it, so it is dead-lettered without parking any stream.
    pub fn untrusted(origin: Origin, raw: Vec<u8>, error: String) -> Self {
        Self::undecodable(origin, None, raw, error)
    }

    /// A Kafka message value: an envelope when it parses, otherwise a poison event.
    pub fn from_kafka(topic: &str, partition: i32, offset: i64, key: Option<&[u8]>, payload: &[u8]) -> Self {
        let origin = Origin::Kafka { topic: topic.to_owned(), partition, offset, incarnation: 0 };
        match serde_json::from_slice::<EventEnvelope>(payload) {
            Ok(env) => Self::from_envelope(&env, origin, payload.to_vec()),
            Err(e) => Self::undecodable(origin, key, payload.to_vec(), format!("not an event envelope: {e}")),
        }
    }

    pub(crate) fn kafka_origin(&self) -> (Option<&str>, Option<i32>, Option<i64>) {
        match &self.origin {
            Origin::Kafka { topic, partition, offset, .. } => (Some(topic.as_str()), Some(*partition), Some(*offset)),
            Origin::Log => (None, None, None),
        }
    }
}
