//! The contract between typed domain events and their stored form (type name, schema version,
//! JSON payload), including upcasting of old versions on read.

use crate::envelope::StreamCategory;
use serde_json::Value;

/// Why a stored event could not be turned back into a typed event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type} in category {category}")]
    UnknownType { category: StreamCategory, event_type: String },
    #[error("event type {event_type} has schema version {found}, newest known is {newest}")]
    FutureVersion { event_type: String, found: i32, newest: i32 },
    #[error("event type {event_type} v{schema_version} cannot be upcast: {reason}")]
    Upcast { event_type: String, schema_version: i32, reason: String },
    #[error("payload of {event_type} does not match its schema: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A typed event of one stream category.
///
/// Implementors are enums whose variants are the event types of a category. The stored form is
/// `(event_type, schema_version, data)`; [`DomainEvent::decode`] accepts every schema version
/// ever written and upcasts old ones, so stored events are never rewritten.
pub trait DomainEvent: Sized + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The category of the streams these events belong to.
    const CATEGORY: StreamCategory;

    /// The stable type name, e.g. `OrderPlaced`.
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes for this event type.
    fn schema_version(&self) -> i32;

    /// The JSON payload stored in the log (without the type name).
    fn to_data(&self) -> Value;

    /// Rebuilds a typed event from its stored form, upcasting older schema versions.
    fn decode(event_type: &str, schema_version: i32, data: Value) -> Result<Self, DecodeError>;
}
