use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command_enum;
use crate::envelope::Actor;
use crate::events::RejectedLine;
use crate::money::Money;
use crate::values::{Address, Sku};

/// An order line priced by the command handler from the product's current state. It carries the
/// product's merchant so the aggregate can refuse orders spanning merchants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PricedLine {
    pub product_id: Uuid,
    pub merchant_id: Uuid,
    pub sku: Sku,
    pub name: String,
    /// 1 to 1000.
    pub quantity: u32,
    pub unit_price: Money,
}

/// Places an order (status `pending`). At least one line, each product once, quantities 1 to
/// 1000, one merchant (`mixed_merchants`), one currency (`currency_mismatch`), totals must fit
/// (`overflow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlaceOrder {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// The merchant the order is meant for; when given, every line must belong to it. When
    /// absent, the lines' common merchant is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<Uuid>,
    pub lines: Vec<PricedLine>,
    pub shipping_address: Address,
}

/// Confirms a pending order once every line is reserved. Idempotent on a confirmed order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmOrder {}

/// Rejects a pending order with the lines that could not be reserved. Idempotent on a rejected
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RejectOrder {
    pub failed_lines: Vec<RejectedLine>,
}

/// Pays a confirmed order; `amount` must equal the total exactly (`amount_mismatch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PayOrder {
    pub amount: Money,
    /// Reference of the payment provider, 1 to 200 characters.
    pub payment_reference: String,
}

/// Ships a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipOrder {
    /// 1 to 100 characters.
    pub carrier: String,
    /// 1 to 100 characters.
    pub tracking_number: String,
}

/// Marks a shipped order delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct DeliverOrder {}

/// Cancels an order that is pending, confirmed or paid (not after shipment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CancelOrder {
    /// 1 to 500 characters.
    pub reason: String,
    /// Who cancels: the customer, the merchant, an admin or the system.
    pub by: Actor,
}

/// Commands of the order aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum OrderCommand {
    PlaceOrder(PlaceOrder),
    ConfirmOrder(ConfirmOrder),
    RejectOrder(RejectOrder),
    PayOrder(PayOrder),
    ShipOrder(ShipOrder),
    DeliverOrder(DeliverOrder),
    CancelOrder(CancelOrder),
}

command_enum!(OrderCommand { PlaceOrder, ConfirmOrder, RejectOrder, PayOrder, ShipOrder, DeliverOrder, CancelOrder });
