use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command_enum;
use crate::events::StockAdjustmentReason;
use crate::money::Money;
use crate::values::Sku;

/// Lists a new product of one merchant. Price must be positive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListProduct {
    pub product_id: Uuid,
    pub merchant_id: Uuid,
    pub sku: Sku,
    /// 1 to 200 characters, not blank.
    pub name: String,
    /// At most 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub price: Money,
    pub initial_stock: u32,
}

/// Changes the price. The currency must stay the one the product was listed in, and the price
/// must stay positive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangePrice {
    pub price: Money,
}

/// Adjusts on-hand stock by a signed delta. Restock must be positive, write-off negative; the
/// result may not drop below zero or below reserved stock (`insufficient_stock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdjustStock {
    pub delta: i64,
    pub reason: StockAdjustmentReason,
}

/// Reserves stock for an order. Idempotent per order: a second reservation for the same order is
/// a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReserveStock {
    pub order_id: Uuid,
    /// 1 to 1000.
    pub quantity: u32,
}

/// Releases an order's reservation (rejection, cancellation). A no-op without a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseReservation {
    pub order_id: Uuid,
}

/// Commits an order's reservation at shipment: on-hand and reserved both drop. A no-op without a
/// reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommitReservation {
    pub order_id: Uuid,
}

/// Stops new reservations of the product.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct DiscontinueProduct {}

/// Commands of the product aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum ProductCommand {
    ListProduct(ListProduct),
    ChangePrice(ChangePrice),
    AdjustStock(AdjustStock),
    ReserveStock(ReserveStock),
    ReleaseReservation(ReleaseReservation),
    CommitReservation(CommitReservation),
    DiscontinueProduct(DiscontinueProduct),
}

command_enum!(ProductCommand {
    ListProduct,
    ChangePrice,
    AdjustStock,
    ReserveStock,
    ReleaseReservation,
    CommitReservation,
    DiscontinueProduct,
});
