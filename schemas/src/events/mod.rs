//! Domain events, one enum per stream category, and [`AnyEvent`] for consumers that read every
//! category.
//!
//! Each enum is adjacently tagged (`{"type": "OrderPlaced", "data": {...}}`), so
//! [`DomainEvent::to_data`] is just the payload and events without fields store `{}`.

mod codec;
mod customer;
mod merchant;
mod order;
mod product;

pub use customer::CustomerEvent;
pub use merchant::MerchantEvent;
pub use order::{OrderEvent, OrderLine, RejectedLine};
pub use product::{ProductEvent, ProductListedV1, StockAdjustmentReason};

use serde_json::Value;

use crate::envelope::{EventEnvelope, StreamCategory};
use crate::event::{DecodeError, DomainEvent};

/// An event type and the schema version this code writes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventTypeInfo {
    pub category: StreamCategory,
    pub event_type: &'static str,
    pub schema_version: i32,
}

impl EventTypeInfo {
    pub const fn new(category: StreamCategory, event_type: &'static str, schema_version: i32) -> Self {
        Self { category, event_type, schema_version }
    }

    fn current_version(types: &[EventTypeInfo], event_type: &str) -> i32 {
        types.iter().find(|t| t.event_type == event_type).map_or(1, |t| t.schema_version)
    }
}

/// Every event type of one category with its current schema version.
pub fn event_types_of(category: StreamCategory) -> &'static [EventTypeInfo] {
    match category {
        StreamCategory::Customer => CustomerEvent::TYPES,
        StreamCategory::Merchant => MerchantEvent::TYPES,
        StreamCategory::Product => ProductEvent::TYPES,
        StreamCategory::Order => OrderEvent::TYPES,
    }
}

/// Every event type of every category, categories in [`StreamCategory::ALL`] order.
pub fn event_types() -> impl Iterator<Item = EventTypeInfo> {
    StreamCategory::ALL.into_iter().flat_map(|c| event_types_of(c).iter().copied())
}

/// The schema version this code writes for `event_type` of `category`, if the type is known.
pub fn current_schema_version(category: StreamCategory, event_type: &str) -> Option<i32> {
    event_types_of(category).iter().find(|t| t.event_type == event_type).map(|t| t.schema_version)
}

/// An event of any category, for consumers (relay, projectors, audit) that read the whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyEvent {
    Customer(CustomerEvent),
    Merchant(MerchantEvent),
    Product(ProductEvent),
    Order(OrderEvent),
}

impl AnyEvent {
    /// Decodes a stored event of `category`, upcasting old schema versions.
    ///
    /// # Errors
    /// As [`DomainEvent::decode`] of the category's enum.
    pub fn decode(
        category: StreamCategory,
        event_type: &str,
        schema_version: i32,
        data: Value,
    ) -> Result<Self, DecodeError> {
        Ok(match category {
            StreamCategory::Customer => AnyEvent::Customer(CustomerEvent::decode(event_type, schema_version, data)?),
            StreamCategory::Merchant => AnyEvent::Merchant(MerchantEvent::decode(event_type, schema_version, data)?),
            StreamCategory::Product => AnyEvent::Product(ProductEvent::decode(event_type, schema_version, data)?),
            StreamCategory::Order => AnyEvent::Order(OrderEvent::decode(event_type, schema_version, data)?),
        })
    }

    /// Decodes the event carried by an envelope.
    ///
    /// # Errors
    /// As [`AnyEvent::decode`].
    pub fn from_envelope(envelope: &EventEnvelope) -> Result<Self, DecodeError> {
        Self::decode(envelope.category, &envelope.event_type, envelope.schema_version, envelope.data.clone())
    }

    pub fn category(&self) -> StreamCategory {
        match self {
            AnyEvent::Customer(_) => StreamCategory::Customer,
            AnyEvent::Merchant(_) => StreamCategory::Merchant,
            AnyEvent::Product(_) => StreamCategory::Product,
            AnyEvent::Order(_) => StreamCategory::Order,
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            AnyEvent::Customer(e) => e.event_type(),
            AnyEvent::Merchant(e) => e.event_type(),
            AnyEvent::Product(e) => e.event_type(),
            AnyEvent::Order(e) => e.event_type(),
        }
    }

    pub fn schema_version(&self) -> i32 {
        match self {
            AnyEvent::Customer(e) => e.schema_version(),
            AnyEvent::Merchant(e) => e.schema_version(),
            AnyEvent::Product(e) => e.schema_version(),
            AnyEvent::Order(e) => e.schema_version(),
        }
    }

    pub fn to_data(&self) -> Value {
        match self {
            AnyEvent::Customer(e) => e.to_data(),
            AnyEvent::Merchant(e) => e.to_data(),
            AnyEvent::Product(e) => e.to_data(),
            AnyEvent::Order(e) => e.to_data(),
        }
    }
}

impl From<CustomerEvent> for AnyEvent {
    fn from(e: CustomerEvent) -> Self {
        AnyEvent::Customer(e)
    }
}

impl From<MerchantEvent> for AnyEvent {
    fn from(e: MerchantEvent) -> Self {
        AnyEvent::Merchant(e)
    }
}

impl From<ProductEvent> for AnyEvent {
    fn from(e: ProductEvent) -> Self {
        AnyEvent::Product(e)
    }
}

impl From<OrderEvent> for AnyEvent {
    fn from(e: OrderEvent) -> Self {
        AnyEvent::Order(e)
    }
}

#[cfg(test)]
mod tests;
