//! Events of customer streams.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{codec, EventTypeInfo};
use crate::envelope::StreamCategory;
use crate::event::{DecodeError, DomainEvent};
use crate::values::{Address, Email};

/// Everything that can happen to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CustomerEvent {
    /// A customer registered; the stream id is `customer_id`.
    CustomerRegistered { customer_id: Uuid, name: String, email: Email, shipping_address: Address },
}

impl CustomerEvent {
    /// Every event type of the category with the schema version this code writes.
    pub const TYPES: &'static [EventTypeInfo] =
        &[EventTypeInfo::new(StreamCategory::Customer, "CustomerRegistered", 1)];
}

impl DomainEvent for CustomerEvent {
    const CATEGORY: StreamCategory = StreamCategory::Customer;

    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerRegistered { .. } => "CustomerRegistered",
        }
    }

    fn schema_version(&self) -> i32 {
        EventTypeInfo::current_version(Self::TYPES, self.event_type())
    }

    fn to_data(&self) -> Value {
        codec::to_data(self)
    }

    fn decode(event_type: &str, schema_version: i32, data: Value) -> Result<Self, DecodeError> {
        codec::decode(Self::CATEGORY, Self::TYPES, event_type, schema_version, data, codec::no_upcasts)
    }
}
