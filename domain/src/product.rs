//! The product aggregate: price, on-hand stock and per-order reservations of one merchant's
//! product.
//!
//! Invariants: `0 <= reserved <= on_hand`, `reserved` is the sum of the per-order
//! reservations, the price is positive and keeps the currency it was listed in.

mod settled;

use std::collections::BTreeMap;

use ordo_schemas::values::check_text;
use ordo_schemas::{
    AdjustStock, ChangePrice, FieldError, ListProduct, Money, ProductCommand, ProductEvent, ProductStatus,
    ReserveStock, Sku, StockAdjustmentReason,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::limits::{MAX_DESCRIPTION, MAX_NAME, MAX_QUANTITY, MIN_QUANTITY};

pub use settled::SettledOrders;

/// A listed product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    pub product_id: Uuid,
    pub merchant_id: Uuid,
    pub sku: Sku,
    pub name: String,
    pub description: Option<String>,
    pub price: Money,
    /// Physically present stock, never negative.
    pub on_hand: i64,
    /// Stock held for orders, never above `on_hand`.
    pub reserved: i64,
    /// Open reservations by order id.
    pub reservations: BTreeMap<Uuid, u32>,
    /// The most recent orders whose reservation was released or committed (bounded, see
    /// [`SettledOrders`]); they never reserve again.
    pub settled_orders: SettledOrders,
    pub status: ProductStatus,
}

impl ProductState {
    /// What new reservations may take: on hand minus reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// The quantity reserved for `order_id`, if any.
    pub fn reservation(&self, order_id: Uuid) -> Option<u32> {
        self.reservations.get(&order_id).copied()
    }
}

/// The product aggregate; serialises as `null` before listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Product {
    state: Option<ProductState>,
}

impl Product {
    /// The listed product, `None` before listing.
    pub fn state(&self) -> Option<&ProductState> {
        self.state.as_ref()
    }

    pub fn exists(&self) -> bool {
        self.state.is_some()
    }

    fn list(&self, c: &ListProduct) -> Result<Vec<ProductEvent>, DomainError> {
        if self.exists() {
            return Err(DomainError::AlreadyExists("product is already listed".into()));
        }
        let mut errors: Vec<FieldError> = check_text("name", &c.name, MAX_NAME).into_iter().collect();
        if c.description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
            errors.push(FieldError::new("description", format!("must be at most {MAX_DESCRIPTION} characters")));
        }
        if !c.price.is_positive() {
            errors.push(FieldError::new("price.amount_minor", "must be positive"));
        }
        DomainError::check(errors)?;
        Ok(vec![ProductEvent::ProductListed {
            product_id: c.product_id,
            merchant_id: c.merchant_id,
            sku: c.sku.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            price: c.price,
            initial_stock: c.initial_stock,
        }])
    }
}

fn change_price(s: &ProductState, c: &ChangePrice) -> Result<Vec<ProductEvent>, DomainError> {
    if s.status == ProductStatus::Discontinued {
        return Err(DomainError::InvalidState("cannot change the price of a discontinued product".into()));
    }
    if c.price.currency != s.price.currency {
        return Err(DomainError::CurrencyMismatch { expected: s.price.currency, actual: c.price.currency });
    }
    if !c.price.is_positive() {
        return Err(DomainError::field("price.amount_minor", "must be positive"));
    }
    if c.price == s.price {
        return Ok(vec![]);
    }
    Ok(vec![ProductEvent::ProductPriceChanged { old_price: s.price, new_price: c.price }])
}

fn adjust_stock(s: &ProductState, c: &AdjustStock) -> Result<Vec<ProductEvent>, DomainError> {
    let sign_error = match c.reason {
        _ if c.delta == 0 => Some("must not be zero"),
        StockAdjustmentReason::Restock if c.delta < 0 => Some("must be positive for a restock"),
        StockAdjustmentReason::WriteOff if c.delta > 0 => Some("must be negative for a write-off"),
        _ => None,
    };
    if let Some(message) = sign_error {
        return Err(DomainError::field("delta", message));
    }
    let on_hand_after =
        s.on_hand.checked_add(c.delta).ok_or_else(|| DomainError::Overflow("stock on hand does not fit".into()))?;
    if on_hand_after < 0 || on_hand_after < s.reserved {
        return Err(DomainError::InsufficientStock { on_hand: s.on_hand, reserved: s.reserved, delta: c.delta });
    }
    Ok(vec![ProductEvent::StockAdjusted { delta: c.delta, reason: c.reason, on_hand_after }])
}

fn reserve(s: &ProductState, c: &ReserveStock) -> Result<Vec<ProductEvent>, DomainError> {
    if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&c.quantity) {
        return Err(DomainError::field("quantity", format!("must be between {MIN_QUANTITY} and {MAX_QUANTITY}")));
    }
    // idempotent: the order already holds its reservation of this product
    if s.reservations.contains_key(&c.order_id) {
        return Ok(vec![]);
    }
    // A released or committed reservation is not held any more: saying "reserved" would let the
    // saga confirm an order that holds no stock here.
    if s.settled_orders.contains(&c.order_id) {
        return Err(DomainError::InvalidState(
            "the order's reservation of this product was already released or committed".into(),
        ));
    }
    if s.status == ProductStatus::Discontinued {
        return Err(DomainError::ProductDiscontinued { product_id: s.product_id });
    }
    if s.available() < i64::from(c.quantity) {
        return Err(DomainError::OutOfStock { requested: c.quantity, available: s.available().max(0) });
    }
    Ok(vec![ProductEvent::StockReserved { order_id: c.order_id, quantity: c.quantity }])
}

impl Aggregate for Product {
    type Event = ProductEvent;
    type Command = ProductCommand;

    /// Every command but `ListProduct` needs a listed product (`not_found`).
    ///
    /// - `ListProduct`: `already_exists`; `validation_failed` for name, description, a
    ///   non-positive price.
    /// - `ChangePrice`: `invalid_state` when discontinued, `currency_mismatch`,
    ///   `validation_failed` for a non-positive price; the same price is a no-op.
    /// - `AdjustStock`: `validation_failed` for a zero delta or one whose sign contradicts the
    ///   reason; `insufficient_stock` below zero or below reserved; `overflow`.
    /// - `ReserveStock`: no-op when the order already holds a reservation; `invalid_state` when
    ///   its reservation was released or committed;
    ///   `validation_failed` outside 1..=1000; `product_discontinued`; `out_of_stock`.
    /// - `ReleaseReservation`, `CommitReservation`: no-op without a reservation for the order;
    ///   allowed on discontinued products.
    /// - `DiscontinueProduct`: `invalid_state` when already discontinued.
    fn decide(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, DomainError> {
        if let ProductCommand::ListProduct(c) = command {
            return self.list(c);
        }
        let s = self.state.as_ref().ok_or_else(|| DomainError::NotFound("product is not listed".into()))?;
        match command {
            ProductCommand::ListProduct(c) => self.list(c),
            ProductCommand::ChangePrice(c) => change_price(s, c),
            ProductCommand::AdjustStock(c) => adjust_stock(s, c),
            ProductCommand::ReserveStock(c) => reserve(s, c),
            ProductCommand::ReleaseReservation(c) => Ok(s
                .reservation(c.order_id)
                .map(|quantity| ProductEvent::StockReservationReleased { order_id: c.order_id, quantity })
                .into_iter()
                .collect()),
            ProductCommand::CommitReservation(c) => Ok(s
                .reservation(c.order_id)
                .map(|quantity| ProductEvent::ReservedStockCommitted { order_id: c.order_id, quantity })
                .into_iter()
                .collect()),
            ProductCommand::DiscontinueProduct(_) => {
                if s.status == ProductStatus::Discontinued {
                    return Err(DomainError::InvalidState("product is already discontinued".into()));
                }
                Ok(vec![ProductEvent::ProductDiscontinued {}])
            }
        }
    }

    fn evolve(&mut self, event: &ProductEvent) {
        if let ProductEvent::ProductListed { product_id, merchant_id, sku, name, description, price, initial_stock } =
            event
        {
            self.state = Some(ProductState {
                product_id: *product_id,
                merchant_id: *merchant_id,
                sku: sku.clone(),
                name: name.clone(),
                description: description.clone(),
                price: *price,
                on_hand: i64::from(*initial_stock),
                reserved: 0,
                reservations: BTreeMap::new(),
                settled_orders: SettledOrders::default(),
                status: ProductStatus::Active,
            });
            return;
        }
        // events of a product that was never listed cannot come from decide; ignore them
        let Some(s) = self.state.as_mut() else { return };
        match event {
            ProductEvent::ProductListed { .. } => {}
            ProductEvent::ProductPriceChanged { new_price, .. } => s.price = *new_price,
            ProductEvent::StockAdjusted { on_hand_after, .. } => s.on_hand = *on_hand_after,
            ProductEvent::StockReserved { order_id, quantity } => {
                if s.reservations.insert(*order_id, *quantity).is_none() {
                    s.reserved = s.reserved.saturating_add(i64::from(*quantity));
                }
            }
            ProductEvent::StockReservationReleased { order_id, .. } => {
                if let Some(q) = s.reservations.remove(order_id) {
                    s.reserved = s.reserved.saturating_sub(i64::from(q));
                }
                s.settled_orders.insert(*order_id);
            }
            ProductEvent::ReservedStockCommitted { order_id, .. } => {
                if let Some(q) = s.reservations.remove(order_id) {
                    s.reserved = s.reserved.saturating_sub(i64::from(q));
                    s.on_hand = s.on_hand.saturating_sub(i64::from(q));
                }
                s.settled_orders.insert(*order_id);
            }
            ProductEvent::ProductDiscontinued {} => s.status = ProductStatus::Discontinued,
        }
    }
}

#[cfg(test)]
mod tests;
