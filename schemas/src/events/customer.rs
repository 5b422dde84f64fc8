//! Events of customer streams.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{codec, EventTypeInfo};
use crate::envelope::{Actor, StreamCategory};
use crate::event::{DecodeError, DomainEvent};
use crate::personal::Personal;
use crate::values::{Address, Email};

/// Everything that can happen to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
// Events are short-lived values decoded one at a time; boxing the registration buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum CustomerEvent {
    /// A customer registered; the stream id is `customer_id`. Name, email and address are
    /// personal: stored encrypted under the customer's key.
    CustomerRegistered {
        customer_id: Uuid,
        name: Personal<String>,
        email: Personal<Email>,
        shipping_address: Personal<Address>,
    },
    /// The customer's key was destroyed on request (GDPR Art. 17): every personal field written
    /// for this customer now reads as erased. `reason` says why, without personal data.
    PersonalDataErased { customer_id: Uuid, reason: String, erased_by: Actor },
}

impl CustomerEvent {
    /// Every event type of the category with the schema version this code writes.
    pub const TYPES: &'static [EventTypeInfo] = &[
        EventTypeInfo::new(StreamCategory::Customer, "CustomerRegistered", 1),
        EventTypeInfo::new(StreamCategory::Customer, "PersonalDataErased", 1),
    ];
}

impl DomainEvent for CustomerEvent {
    const CATEGORY: StreamCategory = StreamCategory::Customer;

    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerRegistered { .. } => "CustomerRegistered",
            CustomerEvent::PersonalDataErased { .. } => "PersonalDataErased",
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
