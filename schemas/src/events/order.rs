//! Events of order streams.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{codec, EventTypeInfo};
use crate::envelope::{Actor, StreamCategory};
use crate::event::{DecodeError, DomainEvent};
use crate::money::Money;
use crate::personal::Personal;
use crate::values::{Address, Sku};

/// One line of a placed order, priced at placement time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub sku: Sku,
    pub name: String,
    /// 1 to 1000.
    pub quantity: u32,
    pub unit_price: Money,
    /// `unit_price * quantity`.
    pub line_total: Money,
}

/// A line that could not be reserved, reported when an order is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RejectedLine {
    pub product_id: Uuid,
    pub requested: u32,
    /// Stock available when the reservation was attempted (0 for unknown products).
    pub available: i64,
    /// Machine code of the refusal, e.g. `out_of_stock`, `product_discontinued`, `not_found`.
    pub reason: String,
}

/// Everything that can happen to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    /// A customer placed an order with one merchant; it is pending until every line is reserved.
    /// The stream id is `order_id`.
    OrderPlaced {
        order_id: Uuid,
        customer_id: Uuid,
        merchant_id: Uuid,
        lines: Vec<OrderLine>,
        /// Sum of the line totals.
        total: Money,
        /// Personal: stored encrypted under the customer's key.
        shipping_address: Personal<Address>,
    },
    /// Every line is reserved.
    OrderConfirmed {},
    /// Some lines could not be reserved; reservations of the other lines are released.
    OrderRejected { failed_lines: Vec<RejectedLine> },
    /// Payment of exactly the order total was received.
    OrderPaid {
        amount: Money,
        /// Personal (free text): stored encrypted under the key of the order's customer.
        payment_reference: Personal<String>,
    },
    /// The merchant handed the parcel to a carrier; reserved stock is committed.
    OrderShipped { carrier: String, tracking_number: String },
    /// The parcel arrived.
    OrderDelivered {},
    /// The order was cancelled before shipment; reserved stock is released.
    OrderCancelled {
        /// Personal (free text): stored encrypted under the key of the order's customer.
        reason: Personal<String>,
        cancelled_by: Actor,
    },
}

impl OrderEvent {
    /// Every event type of the category with the schema version this code writes.
    pub const TYPES: &'static [EventTypeInfo] = &[
        EventTypeInfo::new(StreamCategory::Order, "OrderPlaced", 1),
        EventTypeInfo::new(StreamCategory::Order, "OrderConfirmed", 1),
        EventTypeInfo::new(StreamCategory::Order, "OrderRejected", 1),
        EventTypeInfo::new(StreamCategory::Order, "OrderPaid", 1),
        EventTypeInfo::new(StreamCategory::Order, "OrderShipped", 1),
        EventTypeInfo::new(StreamCategory::Order, "OrderDelivered", 1),
        EventTypeInfo::new(StreamCategory::Order, "OrderCancelled", 1),
    ];
}

impl DomainEvent for OrderEvent {
    const CATEGORY: StreamCategory = StreamCategory::Order;

    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::OrderConfirmed {} => "OrderConfirmed",
            OrderEvent::OrderRejected { .. } => "OrderRejected",
            OrderEvent::OrderPaid { .. } => "OrderPaid",
            OrderEvent::OrderShipped { .. } => "OrderShipped",
            OrderEvent::OrderDelivered {} => "OrderDelivered",
            OrderEvent::OrderCancelled { .. } => "OrderCancelled",
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
