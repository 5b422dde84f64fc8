//! Events of merchant streams.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{codec, EventTypeInfo};
use crate::envelope::StreamCategory;
use crate::event::{DecodeError, DomainEvent};

/// Everything that can happen to a merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum MerchantEvent {
    /// A merchant registered; the stream id is `merchant_id`.
    MerchantRegistered { merchant_id: Uuid, name: String },
}

impl MerchantEvent {
    /// Every event type of the category with the schema version this code writes.
    pub const TYPES: &'static [EventTypeInfo] =
        &[EventTypeInfo::new(StreamCategory::Merchant, "MerchantRegistered", 1)];
}

impl DomainEvent for MerchantEvent {
    const CATEGORY: StreamCategory = StreamCategory::Merchant;

    fn event_type(&self) -> &'static str {
        match self {
            MerchantEvent::MerchantRegistered { .. } => "MerchantRegistered",
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
