//! Values going into and coming out of the log.

use chrono::{DateTime, Utc};
use ordo_schemas::{DomainEvent, EventEnvelope, EventMetadata, RecordedMetadata, StreamCategory, StreamRef};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ExpectedVersion, StoreError};

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// The stored form of a typed domain event.
    pub fn from_domain<E: DomainEvent>(event: &E, metadata: EventMetadata) -> Self {
        Self {
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: event.to_data(),
            metadata,
        }
    }
}

/// Events for one stream, with the version the stream must be at.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream: StreamRef,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// A response stored under an idempotency key in the same transaction as the events it caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Whose key it is (keys of different principals never collide).
    pub scope: String,
    pub key: String,
    /// A digest of the request, so the same key with another body can be refused.
    pub request_hash: Vec<u8>,
    pub response_status: u16,
    pub response_body: Value,
}

/// Where one stream ended up after an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedStream {
    pub stream: StreamRef,
    /// The stream's version after the append.
    pub version: i64,
    /// Global positions of the appended events, in stream order.
    pub first_position: i64,
    pub last_position: i64,
}

/// One event as read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub tx_id: i64,
    pub stream: StreamRef,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    /// The metadata exactly as stored (the hash covers this value).
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Vec<u8>,
}

impl RecordedEvent {
    /// Decodes the payload into a typed event, upcasting older schema versions.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, ordo_schemas::DecodeError> {
        E::decode(&self.event_type, self.schema_version, self.data.clone())
    }

    /// The writer's metadata, typed.
    pub fn typed_metadata(&self) -> Result<EventMetadata, StoreError> {
        serde_json::from_value(self.metadata.clone())
            .map_err(|e| StoreError::Corrupt(format!("metadata of event {}: {e}", self.event_id)))
    }

    /// The envelope published to Kafka and served by the audit API.
    pub fn to_envelope(&self) -> Result<EventEnvelope, StoreError> {
        Ok(EventEnvelope {
            position: self.position,
            category: self.stream.category,
            stream_id: self.stream.id,
            version: self.version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            data: self.data.clone(),
            metadata: RecordedMetadata { metadata: self.typed_metadata()?, recorded_at: self.recorded_at },
            hash: hex::encode(&self.hash),
            prev_hash: self.prev_hash.as_ref().map(hex::encode),
        })
    }
}

/// A position in commit order: readers of the whole log resume after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogCursor {
    pub tx_id: i64,
    pub position: i64,
}

impl LogCursor {
    /// Before the first event.
    pub const START: LogCursor = LogCursor { tx_id: 0, position: 0 };

    /// The cursor just after this event.
    pub fn after(event: &RecordedEvent) -> Self {
        Self { tx_id: event.tx_id, position: event.position }
    }
}

/// How far the commit-safe horizon trails the newest committed event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HorizonLag {
    /// Committed events a whole-log reader cannot see yet because an older transaction is open.
    pub events_held_back: i64,
    /// Age in seconds of the oldest transaction still holding the horizon (0 when none).
    pub oldest_open_xact_seconds: f64,
}

pub(crate) fn parse_category(s: &str) -> Result<StreamCategory, StoreError> {
    StreamCategory::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown stream category {s}")))
}
