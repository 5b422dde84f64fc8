//! Events of product streams, including the one real upcast: `ProductListed` v1 -> v2.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{codec, EventTypeInfo};
use crate::envelope::StreamCategory;
use crate::event::{DecodeError, DomainEvent};
use crate::money::{Currency, Money};
use crate::values::Sku;

/// Why stock was adjusted by hand (as opposed to reservations and shipments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StockAdjustmentReason {
    /// Goods arrived: the delta is positive.
    Restock,
    /// Goods lost or damaged: the delta is negative.
    WriteOff,
    /// A stock count fixed the figure: either sign.
    Correction,
}

impl StockAdjustmentReason {
    /// The wire name (`restock`, `write_off`, `correction`).
    pub fn as_str(self) -> &'static str {
        match self {
            StockAdjustmentReason::Restock => "restock",
            StockAdjustmentReason::WriteOff => "write_off",
            StockAdjustmentReason::Correction => "correction",
        }
    }
}

/// Everything that can happen to a product.
///
/// Stock figures: `on_hand` is physically present, `reserved` is held for orders, and
/// `available = on_hand - reserved` is what new reservations may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum ProductEvent {
    /// A merchant listed a product; the stream id is `product_id`. Schema version 2 (v1 stored
    /// the price as flat `price_minor` and `currency` fields, see [`ProductListedV1`]).
    ProductListed {
        product_id: Uuid,
        merchant_id: Uuid,
        sku: Sku,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        price: Money,
        initial_stock: u32,
    },
    /// The price changed; the currency never changes.
    ProductPriceChanged { old_price: Money, new_price: Money },
    /// Stock was adjusted by hand; `on_hand_after` is the on-hand figure after the adjustment.
    StockAdjusted { delta: i64, reason: StockAdjustmentReason, on_hand_after: i64 },
    /// Stock was reserved for an order (one reservation per order and product).
    StockReserved { order_id: Uuid, quantity: u32 },
    /// An order's reservation was released (order rejected or cancelled); stock is available
    /// again.
    StockReservationReleased { order_id: Uuid, quantity: u32 },
    /// An order's reservation shipped: on-hand and reserved both drop by `quantity`.
    ReservedStockCommitted { order_id: Uuid, quantity: u32 },
    /// The product takes no new reservations.
    ProductDiscontinued {},
}

/// The stored shape of `ProductListed` schema version 1, kept to document old events and to
/// generate their JSON Schema. [`ProductEvent::decode`] upcasts it to version 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ProductListed")]
pub struct ProductListedV1 {
    pub product_id: Uuid,
    pub merchant_id: Uuid,
    pub sku: Sku,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Price in minor units of `currency`.
    pub price_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    pub initial_stock: u32,
}

impl ProductEvent {
    /// Every event type of the category with the schema version this code writes.
    pub const TYPES: &'static [EventTypeInfo] = &[
        EventTypeInfo::new(StreamCategory::Product, "ProductListed", 2),
        EventTypeInfo::new(StreamCategory::Product, "ProductPriceChanged", 1),
        EventTypeInfo::new(StreamCategory::Product, "StockAdjusted", 1),
        EventTypeInfo::new(StreamCategory::Product, "StockReserved", 1),
        EventTypeInfo::new(StreamCategory::Product, "StockReservationReleased", 1),
        EventTypeInfo::new(StreamCategory::Product, "ReservedStockCommitted", 1),
        EventTypeInfo::new(StreamCategory::Product, "ProductDiscontinued", 1),
    ];
}

/// Upcasting steps of the product category.
fn upcast(event_type: &str, schema_version: i32, data: Value) -> Result<Value, String> {
    match (event_type, schema_version) {
        ("ProductListed", 1) => product_listed_v1_to_v2(data),
        _ => codec::no_upcasts(event_type, schema_version, data),
    }
}

/// Folds the flat `price_minor` and `currency` of v1 into the `price` money object of v2.
fn product_listed_v1_to_v2(data: Value) -> Result<Value, String> {
    let Value::Object(mut fields) = data else {
        return Err("payload is not an object".to_owned());
    };
    let amount =
        fields.remove("price_minor").and_then(|v| v.as_i64()).ok_or("price_minor is missing or not an integer")?;
    let currency = fields
        .remove("currency")
        .and_then(|v| v.as_str().map(Currency::parse))
        .ok_or("currency is missing or not a string")?
        .map_err(|e| e.to_string())?;
    fields.insert("price".to_owned(), json!({"amount_minor": amount, "currency": currency.as_str()}));
    Ok(Value::Object(fields))
}

impl DomainEvent for ProductEvent {
    const CATEGORY: StreamCategory = StreamCategory::Product;

    fn event_type(&self) -> &'static str {
        match self {
            ProductEvent::ProductListed { .. } => "ProductListed",
            ProductEvent::ProductPriceChanged { .. } => "ProductPriceChanged",
            ProductEvent::StockAdjusted { .. } => "StockAdjusted",
            ProductEvent::StockReserved { .. } => "StockReserved",
            ProductEvent::StockReservationReleased { .. } => "StockReservationReleased",
            ProductEvent::ReservedStockCommitted { .. } => "ReservedStockCommitted",
            ProductEvent::ProductDiscontinued {} => "ProductDiscontinued",
        }
    }

    fn schema_version(&self) -> i32 {
        EventTypeInfo::current_version(Self::TYPES, self.event_type())
    }

    fn to_data(&self) -> Value {
        codec::to_data(self)
    }

    fn decode(event_type: &str, schema_version: i32, data: Value) -> Result<Self, DecodeError> {
        codec::decode(Self::CATEGORY, Self::TYPES, event_type, schema_version, data, upcast)
    }
}
