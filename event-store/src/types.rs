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

/// A unique value (such as a merchant's SKU) claimed by the stream of an append, in the same
/// transaction as its events. A value can be claimed once; a request whose claim is taken is
/// refused whole ([`crate::AppendError::ClaimTaken`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueClaim {
    /// What kind of value it is, e.g. `product_sku`.
    pub kind: String,
    /// The value, unique within its kind.
    pub value: String,
}

/// One atomic append: events for one or more streams, with an optional idempotency record and
/// unique claim, all committed together or not at all.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub appends: Vec<StreamAppend>,
    pub idempotency: Option<IdempotencyRecord>,
    pub claim: Option<UniqueClaim>,
}

impl AppendRequest {
    /// A request appending `events` to one stream.
    pub fn single(stream: StreamRef, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self { appends: vec![StreamAppend { stream, expected, events }], idempotency: None, claim: None }
    }
}

/// Where one stream ended up after an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedStream {
    pub stream: StreamRef,
    /// The stream's version after the append.
    pub version: i64,
    /// Global positions of the appended events, in stream order.
    pub first_position: i64,
    pub last_position: i64,
    /// The hash of the stream's last event after the append (its new head).
    pub head_hash: Vec<u8>,
    /// When the events were recorded: the writer's clock, never earlier than the event before them
    /// in the log.
    pub recorded_at: DateTime<Utc>,
}

/// One event as read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
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

/// A place in the log: readers of the whole log resume after it. Positions follow commit order
/// (appends serialise on the writer lock), so every event after a cursor has a higher position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogCursor {
    /// The position of the last event read (0: before the first event).
    pub position: i64,
}

impl LogCursor {
    /// Before the first event.
    pub const START: LogCursor = LogCursor { position: 0 };

    /// The cursor just after the event at `position`.
    pub const fn at(position: i64) -> Self {
        Self { position }
    }

    /// The cursor just after this event.
    pub fn after(event: &RecordedEvent) -> Self {
        Self { position: event.position }
    }
}

/// The cursor as text (for example an HTTP `Last-Event-ID`): its position. Clients treat it as
/// opaque; only [`LogCursor::from_str`](std::str::FromStr) reads it back.
impl std::fmt::Display for LogCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.position)
    }
}

/// Text that is not a cursor [`LogCursor`]'s `Display` wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a log cursor")]
pub struct InvalidCursor;

impl std::str::FromStr for LogCursor {
    type Err = InvalidCursor;

    /// Reads what `Display` wrote: a non-negative decimal integer.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidCursor);
        }
        Ok(Self { position: s.parse().map_err(|_| InvalidCursor)? })
    }
}

/// Who holds the writer lock right now, when some session has held it for a while: every
/// other append waits for it (see [`crate::EventStore::writer_lock_holder`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WriterLockHolder {
    pub pid: i32,
    pub application_name: String,
    /// `active`, `idle in transaction`, ... as `pg_stat_activity` says.
    pub state: String,
    /// Seconds since the holder's transaction started.
    pub held_seconds: f64,
}

/// How much of the log lies after a cursor (a reader's backlog).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Events after the cursor.
    pub events: i64,
    /// Age in seconds of the oldest of them (0 when there is none).
    pub oldest_seconds: f64,
}

pub(crate) fn parse_category(s: &str) -> Result<StreamCategory, StoreError> {
    StreamCategory::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown stream category {s}")))
}

#[cfg(test)]
mod cursor_text_tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_from_its_text_and_nothing_else_parses() {
        for c in [LogCursor::START, LogCursor::at(42), LogCursor::at(i64::MAX)] {
            assert_eq!(c.to_string().parse::<LogCursor>(), Ok(c));
        }
        for bad in ["", "-", "-1", "1-2", "a", "+2", " 1", "1 ", "99999999999999999999", "9223372036854775808"] {
            assert_eq!(bad.parse::<LogCursor>(), Err(InvalidCursor), "{bad:?}");
        }
    }
}
