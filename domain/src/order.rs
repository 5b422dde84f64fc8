//! The order aggregate: one customer, one merchant, and the lifecycle
//! `pending -> confirmed | rejected`, `confirmed -> paid -> shipped -> delivered`, cancellable
//! while pending, confirmed or paid.

use std::collections::{BTreeMap, BTreeSet};

use ordo_schemas::values::check_text;
use ordo_schemas::{
    Actor, Address, FieldError, Money, OrderCommand, OrderEvent, OrderLine, OrderStatus, Personal, PlaceOrder,
    RejectedLine,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::limits::{MAX_NAME, MAX_QUANTITY, MAX_REASON, MAX_REFERENCE, MIN_QUANTITY};

/// The payment of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub amount: Money,
    /// Personal (free text): sealed, or erased, unless revealed.
    pub payment_reference: Personal<String>,
}

/// The shipment of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
}

/// Why and by whom an order was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// Personal (free text): sealed, or erased, unless revealed.
    pub reason: Personal<String>,
    pub cancelled_by: Actor,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub merchant_id: Uuid,
    pub lines: Vec<OrderLine>,
    /// Sum of the line totals, in the one currency of the order.
    pub total: Money,
    /// Personal: sealed, or erased, unless revealed.
    pub shipping_address: Personal<Address>,
    pub status: OrderStatus,
    /// Lines that could not be reserved, when rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_lines: Vec<RejectedLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
}

/// The order aggregate; serialises as `null` before placement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Order {
    state: Option<OrderState>,
}

impl Order {
    /// The placed order, `None` before placement.
    pub fn state(&self) -> Option<&OrderState> {
        self.state.as_ref()
    }

    pub fn exists(&self) -> bool {
        self.state.is_some()
    }

    /// The status, `None` before placement.
    pub fn status(&self) -> Option<OrderStatus> {
        self.state.as_ref().map(|s| s.status)
    }
}

/// Validates and prices a new order.
fn place(c: &PlaceOrder) -> Result<Vec<OrderEvent>, DomainError> {
    let mut errors = Vec::new();
    if c.lines.is_empty() {
        errors.push(FieldError::new("lines", "must contain at least one line"));
    }
    let mut seen = BTreeSet::new();
    for (i, line) in c.lines.iter().enumerate() {
        if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&line.quantity) {
            errors.push(FieldError::new(
                format!("lines[{i}].quantity"),
                format!("must be between {MIN_QUANTITY} and {MAX_QUANTITY}"),
            ));
        }
        if !line.unit_price.is_positive() {
            errors.push(FieldError::new(format!("lines[{i}].unit_price"), "must be positive"));
        }
        if let Some(e) = check_text(&format!("lines[{i}].name"), &line.name, MAX_NAME) {
            errors.push(e);
        }
        if !seen.insert(line.product_id) {
            errors.push(FieldError::new(format!("lines[{i}].product_id"), "product appears in more than one line"));
        }
    }
    DomainError::check(errors)?;

    let merchants: BTreeSet<Uuid> = c.lines.iter().map(|l| l.merchant_id).chain(c.merchant_id).collect();
    let merchant_id = match merchants.iter().collect::<Vec<_>>().as_slice() {
        [only] => **only,
        _ => return Err(DomainError::MixedMerchants { merchants: merchants.into_iter().collect() }),
    };

    let mut lines = Vec::with_capacity(c.lines.len());
    let mut total: Option<Money> = None;
    for line in &c.lines {
        let line_total = line.unit_price.checked_mul(line.quantity)?;
        total = Some(match total {
            None => line_total,
            Some(t) => t.checked_add(&line_total)?,
        });
        lines.push(OrderLine {
            product_id: line.product_id,
            sku: line.sku.clone(),
            name: line.name.clone(),
            quantity: line.quantity,
            unit_price: line.unit_price,
            line_total,
        });
    }
    let total = total.ok_or_else(|| DomainError::field("lines", "must contain at least one line"))?;
    Ok(vec![OrderEvent::OrderPlaced {
        order_id: c.order_id,
        customer_id: c.customer_id,
        merchant_id,
        lines,
        total,
        shipping_address: c.shipping_address.clone().into(),
    }])
}

fn invalid(action: &str, status: OrderStatus) -> DomainError {
    DomainError::InvalidState(format!("cannot {action} an order that is {status}"))
}

fn decide_existing(s: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
    let status = s.status;
    match command {
        OrderCommand::PlaceOrder(_) => Err(DomainError::AlreadyExists("order is already placed".into())),
        OrderCommand::ConfirmOrder(_) => match status {
            OrderStatus::Confirmed => Ok(vec![]),
            OrderStatus::Pending => Ok(vec![OrderEvent::OrderConfirmed {}]),
            _ => Err(invalid("confirm", status)),
        },
        OrderCommand::RejectOrder(c) => match status {
            OrderStatus::Rejected => Ok(vec![]),
            OrderStatus::Pending if c.failed_lines.is_empty() => {
                Err(DomainError::field("failed_lines", "must name at least one line"))
            }
            OrderStatus::Pending => Ok(vec![OrderEvent::OrderRejected { failed_lines: c.failed_lines.clone() }]),
            _ => Err(invalid("reject", status)),
        },
        OrderCommand::PayOrder(c) => {
            DomainError::check(
                check_text("payment_reference", &c.payment_reference, MAX_REFERENCE).into_iter().collect(),
            )?;
            if status != OrderStatus::Confirmed {
                return Err(invalid("pay", status));
            }
            if c.amount != s.total {
                return Err(DomainError::AmountMismatch { expected: s.total, actual: c.amount });
            }
            Ok(vec![OrderEvent::OrderPaid { amount: c.amount, payment_reference: c.payment_reference.clone().into() }])
        }
        OrderCommand::ShipOrder(c) => {
            let errors = [
                check_text("carrier", &c.carrier, MAX_REFERENCE),
                check_text("tracking_number", &c.tracking_number, MAX_REFERENCE),
            ];
            DomainError::check(errors.into_iter().flatten().collect())?;
            if status != OrderStatus::Paid {
                return Err(invalid("ship", status));
            }
            Ok(vec![OrderEvent::OrderShipped {
                carrier: c.carrier.clone(),
                tracking_number: c.tracking_number.clone(),
            }])
        }
        OrderCommand::DeliverOrder(_) => {
            if status != OrderStatus::Shipped {
                return Err(invalid("deliver", status));
            }
            Ok(vec![OrderEvent::OrderDelivered {}])
        }
        OrderCommand::CancelOrder(c) => {
            DomainError::check(check_text("reason", &c.reason, MAX_REASON).into_iter().collect())?;
            if !status.is_cancellable() {
                return Err(invalid("cancel", status));
            }
            Ok(vec![OrderEvent::OrderCancelled { reason: c.reason.clone().into(), cancelled_by: c.by }])
        }
    }
}

impl Order {
    /// Quantity per product, what the saga reserves, releases and commits.
    pub fn quantities(&self) -> BTreeMap<Uuid, u32> {
        self.state.iter().flat_map(|s| s.lines.iter().map(|l| (l.product_id, l.quantity))).collect()
    }
}

impl Aggregate for Order {
    type Event = OrderEvent;
    type Command = OrderCommand;

    /// Every command but `PlaceOrder` needs a placed order (`not_found`).
    ///
    /// - `PlaceOrder`: `already_exists`; `validation_failed` for no lines, a quantity outside
    ///   1..=1000, a non-positive unit price, a product in two lines; `mixed_merchants`;
    ///   `currency_mismatch` across lines; `overflow` of a line total or the total.
    /// - `ConfirmOrder`: pending only; a no-op when confirmed; otherwise `invalid_state`.
    /// - `RejectOrder`: pending only, with at least one failed line; a no-op when rejected.
    /// - `PayOrder`: confirmed only; `amount_mismatch` unless the amount equals the total.
    /// - `ShipOrder`: paid only. `DeliverOrder`: shipped only.
    /// - `CancelOrder`: pending, confirmed or paid only.
    fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        match (&self.state, command) {
            (None, OrderCommand::PlaceOrder(c)) => place(c),
            (None, _) => Err(DomainError::NotFound("order does not exist".into())),
            (Some(s), command) => decide_existing(s, command),
        }
    }

    fn evolve(&mut self, event: &OrderEvent) {
        if let OrderEvent::OrderPlaced { order_id, customer_id, merchant_id, lines, total, shipping_address } = event {
            self.state = Some(OrderState {
                order_id: *order_id,
                customer_id: *customer_id,
                merchant_id: *merchant_id,
                lines: lines.clone(),
                total: *total,
                shipping_address: shipping_address.clone(),
                status: OrderStatus::Pending,
                failed_lines: Vec::new(),
                payment: None,
                shipment: None,
                cancellation: None,
            });
            return;
        }
        // events of an order that was never placed cannot come from decide; ignore them
        let Some(s) = self.state.as_mut() else { return };
        match event {
            OrderEvent::OrderPlaced { .. } => {}
            OrderEvent::OrderConfirmed {} => s.status = OrderStatus::Confirmed,
            OrderEvent::OrderRejected { failed_lines } => {
                s.status = OrderStatus::Rejected;
                s.failed_lines = failed_lines.clone();
            }
            OrderEvent::OrderPaid { amount, payment_reference } => {
                s.status = OrderStatus::Paid;
                s.payment = Some(Payment { amount: *amount, payment_reference: payment_reference.clone() });
            }
            OrderEvent::OrderShipped { carrier, tracking_number } => {
                s.status = OrderStatus::Shipped;
                s.shipment = Some(Shipment { carrier: carrier.clone(), tracking_number: tracking_number.clone() });
            }
            OrderEvent::OrderDelivered {} => s.status = OrderStatus::Delivered,
            OrderEvent::OrderCancelled { reason, cancelled_by } => {
                s.status = OrderStatus::Cancelled;
                s.cancellation = Some(Cancellation { reason: reason.clone(), cancelled_by: *cancelled_by });
            }
        }
    }
}

#[cfg(test)]
mod tests;
