//! The envelope every stored and published event travels in, and the metadata a writer attaches.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The kind of aggregate a stream belongs to. Each category has its own Kafka topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamCategory {
    Customer,
    Merchant,
    Product,
    Order,
}

impl StreamCategory {
    /// Every category, in a fixed order.
    pub const ALL: [StreamCategory; 4] =
        [StreamCategory::Customer, StreamCategory::Merchant, StreamCategory::Product, StreamCategory::Order];

    /// The name stored in the `category` column of the log and used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamCategory::Customer => "customer",
            StreamCategory::Merchant => "merchant",
            StreamCategory::Product => "product",
            StreamCategory::Order => "order",
        }
    }

    /// The Kafka topic events of this category are published to.
    pub fn topic(self) -> &'static str {
        match self {
            StreamCategory::Customer => "ordo.customers",
            StreamCategory::Merchant => "ordo.merchants",
            StreamCategory::Product => "ordo.products",
            StreamCategory::Order => "ordo.orders",
        }
    }

    /// Parses the stored name (`customer`, `merchant`, `product`, `order`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for StreamCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream's identity: its category and the id of the aggregate it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct StreamRef {
    pub category: StreamCategory,
    pub id: Uuid,
}

impl StreamRef {
    pub fn new(category: StreamCategory, id: Uuid) -> Self {
        Self { category, id }
    }
}

impl std::fmt::Display for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.category, self.id)
    }
}

/// Who a principal is to Ordo. `System` is the order saga and operator tooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Merchant,
    Admin,
    Auditor,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Merchant => "merchant",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::System => "system",
        }
    }
}

/// The principal that caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    pub id: Uuid,
    pub role: Role,
}

impl Actor {
    /// The actor used by the saga and operator tools.
    pub fn system() -> Self {
        Self { id: Uuid::nil(), role: Role::System }
    }
}

/// What a writer attaches to every event it appends.
///
/// `recorded_at` is not here: the event log stamps it at append time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventMetadata {
    /// Unique per event; consumers deduplicate on it.
    pub event_id: Uuid,
    /// Shared by every event of one business flow (an order and everything it caused).
    pub correlation_id: Uuid,
    /// The event (or command) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub actor: Actor,
    /// W3C trace context of the request that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate` that came with `traceparent` (vendor-specific trace data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Metadata as read back from the log: the writer's metadata plus the database timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordedMetadata {
    #[serde(flatten)]
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

/// One event as stored in the log and published to Kafka (the message value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope {
    /// Global position in the log (unique, increasing with insertion, not with commit).
    pub position: i64,
    pub category: StreamCategory,
    pub stream_id: Uuid,
    /// Per-stream version, starting at 1 and without gaps.
    pub version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: RecordedMetadata,
    /// Hex sha256 of the previous event's hash in this stream and this event's canonical bytes.
    pub hash: String,
    /// Hex hash of the previous event in the stream; absent for version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
}

impl EventEnvelope {
    pub fn stream(&self) -> StreamRef {
        StreamRef::new(self.category, self.stream_id)
    }
}

/// Kafka header names carried by every published event.
pub mod headers {
    pub const EVENT_TYPE: &str = "ordo-event-type";
    pub const SCHEMA_VERSION: &str = "ordo-schema-version";
    pub const EVENT_ID: &str = "ordo-event-id";
    pub const CORRELATION_ID: &str = "ordo-correlation-id";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    /// The broker incarnation the relay published the message in (see the relay's docs): a
    /// consumer that sees a higher one than before knows the topic was re-created.
    pub const INCARNATION: &str = "ordo-incarnation";
    /// HMAC-SHA256 of the message value with the event signing key, hex: consumers apply only
    /// messages the relay signed.
    pub const SIGNATURE: &str = "ordo-signature";
}
