//! The in-memory fold of one stream for the one-pass rebuild: the pass reads the log in stream
//! order, so a stream's rows are final when its last event is folded and only one stream is held
//! at a time. The fold reproduces what [`crate::apply`] writes for the same events; anything it
//! does not expect (a first event that is not the creation, a version gap, a poison payload, a
//! figure out of range) ends the fold with [`Unfit`] and the stream is left to the live
//! projector's batch path, which parks and dead-letters it exactly as it would live.

use chrono::{DateTime, NaiveDate, Utc};
use ordo_schemas::{AnyEvent, OrderEvent, ProductEvent, ProductStatus, StreamRef};
use serde_json::json;
use uuid::Uuid;

/// The stream cannot be folded here; the batch path takes it over.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unfit;

/// Which of a stream's projections the pass rebuilds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Wanted {
    pub orders: bool,
    pub sales: bool,
    pub catalog: bool,
}

/// An `rm_orders` row.
#[derive(Debug)]
pub(super) struct OrderRow {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub merchant_id: Uuid,
    pub status: &'static str,
    pub lines: String,
    pub total_minor: i64,
    pub currency: String,
    pub shipping_address: String,
    pub rejection: Option<String>,
    pub payment: Option<String>,
    pub shipment: Option<String>,
    pub cancellation: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// An `rm_products` row.
#[derive(Debug)]
pub(super) struct ProductRow {
    pub product_id: Uuid,
    pub merchant_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub status: &'static str,
    pub listed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// One payment the sales projection books on its merchant's day.
#[derive(Debug, Clone)]
pub(super) struct Payment {
    pub day: NaiveDate,
    pub currency: String,
    pub amount_minor: i64,
    pub version: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
}

/// An `rm_sales_orders` row and the payments of its order.
#[derive(Debug)]
pub(super) struct SalesRow {
    pub order_id: Uuid,
    pub merchant_id: Uuid,
    pub paid: bool,
    pub version: i64,
    pub payments: Vec<Payment>,
}

/// The state of the stream being folded.
#[derive(Debug)]
pub(super) struct StreamFold {
    pub stream: StreamRef,
    pub version: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub events: u64,
    pub order: Option<OrderRow>,
    pub sales: Option<SalesRow>,
    pub product: Option<ProductRow>,
    /// On-hand and reserved figures of a product, checked for overflow as they move.
    stock: (i64, i64),
}

impl StreamFold {
    /// Starts the fold of `stream` with its first event.
    pub fn start(
        stream: StreamRef,
        wanted: Wanted,
        version: i64,
        position: i64,
        at: DateTime<Utc>,
        event: &AnyEvent,
    ) -> Result<Self, Unfit> {
        if version != 1 {
            return Err(Unfit);
        }
        let mut fold = StreamFold {
            stream,
            version,
            position,
            recorded_at: at,
            events: 1,
            order: None,
            sales: None,
            product: None,
            stock: (0, 0),
        };
        match event {
            AnyEvent::Order(OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                merchant_id,
                lines,
                total,
                shipping_address,
            }) if *order_id == stream.id => {
                if wanted.orders {
                    fold.order = Some(OrderRow {
                        order_id: *order_id,
                        customer_id: *customer_id,
                        merchant_id: *merchant_id,
                        status: "pending",
                        lines: serde_json::to_string(lines).map_err(|_| Unfit)?,
                        total_minor: total.amount_minor,
                        currency: total.currency.as_str().to_owned(),
                        shipping_address: serde_json::to_string(shipping_address).map_err(|_| Unfit)?,
                        rejection: None,
                        payment: None,
                        shipment: None,
                        cancellation: None,
                        delivered_at: None,
                        placed_at: at,
                        updated_at: at,
                        version,
                    });
                }
                if wanted.sales {
                    fold.sales = Some(SalesRow {
                        order_id: *order_id,
                        merchant_id: *merchant_id,
                        paid: false,
                        version,
                        payments: Vec::new(),
                    });
                }
            }
            AnyEvent::Product(ProductEvent::ProductListed {
                product_id,
                merchant_id,
                sku,
                name,
                description,
                price,
                initial_stock,
            }) if *product_id == stream.id => {
                fold.stock = (i64::from(*initial_stock), 0);
                if wanted.catalog {
                    fold.product = Some(ProductRow {
                        product_id: *product_id,
                        merchant_id: *merchant_id,
                        sku: sku.as_str().to_owned(),
                        name: name.clone(),
                        description: description.clone(),
                        price_minor: price.amount_minor,
                        currency: price.currency.as_str().to_owned(),
                        on_hand: i64::from(*initial_stock),
                        reserved: 0,
                        status: ProductStatus::Active.as_str(),
                        listed_at: at,
                        updated_at: at,
                        version,
                    });
                }
            }
            _ => return Err(Unfit),
        }
        Ok(fold)
    }

    /// Folds the stream's next event.
    pub fn next(&mut self, version: i64, position: i64, at: DateTime<Utc>, event: &AnyEvent) -> Result<(), Unfit> {
        if version != self.version + 1 {
            return Err(Unfit);
        }
        match event {
            AnyEvent::Order(e) => self.order_event(version, position, at, e)?,
            AnyEvent::Product(e) => self.product_event(version, at, e)?,
            _ => return Err(Unfit),
        }
        self.version = version;
        self.position = position;
        self.recorded_at = self.recorded_at.max(at);
        self.events += 1;
        Ok(())
    }

    fn order_event(&mut self, version: i64, position: i64, at: DateTime<Utc>, e: &OrderEvent) -> Result<(), Unfit> {
        if matches!(e, OrderEvent::OrderPlaced { .. }) {
            return Err(Unfit);
        }
        if let Some(row) = self.order.as_mut() {
            row.version = version;
            row.updated_at = at;
            match e {
                OrderEvent::OrderPlaced { .. } => {}
                OrderEvent::OrderConfirmed {} => row.status = "confirmed",
                OrderEvent::OrderRejected { failed_lines } => {
                    row.status = "rejected";
                    row.rejection = Some(json!({ "failed_lines": failed_lines, "rejected_at": at }).to_string());
                }
                OrderEvent::OrderPaid { amount, payment_reference } => {
                    row.status = "paid";
                    row.payment = Some(
                        json!({ "amount": amount, "payment_reference": payment_reference, "paid_at": at }).to_string(),
                    );
                }
                OrderEvent::OrderShipped { carrier, tracking_number } => {
                    row.status = "shipped";
                    row.shipment = Some(
                        json!({ "carrier": carrier, "tracking_number": tracking_number, "shipped_at": at }).to_string(),
                    );
                }
                OrderEvent::OrderDelivered {} => {
                    row.status = "delivered";
                    row.delivered_at = Some(at);
                }
                OrderEvent::OrderCancelled { reason, cancelled_by } => {
                    row.status = "cancelled";
                    row.cancellation =
                        Some(json!({ "reason": reason, "cancelled_by": cancelled_by, "cancelled_at": at }).to_string());
                }
            }
        }
        if let Some(row) = self.sales.as_mut() {
            row.version = version;
            if let OrderEvent::OrderPaid { amount, .. } = e {
                row.paid = true;
                row.payments.push(Payment {
                    day: at.date_naive(),
                    currency: amount.currency.as_str().to_owned(),
                    amount_minor: amount.amount_minor,
                    version,
                    position,
                    recorded_at: at,
                });
            }
        }
        Ok(())
    }

    fn product_event(&mut self, version: i64, at: DateTime<Utc>, e: &ProductEvent) -> Result<(), Unfit> {
        let (mut on_hand, mut reserved) = self.stock;
        let mut price = None;
        let mut status = None;
        match e {
            ProductEvent::ProductListed { .. } => return Err(Unfit),
            ProductEvent::ProductPriceChanged { new_price, .. } => price = Some(new_price),
            ProductEvent::StockAdjusted { on_hand_after, .. } => on_hand = *on_hand_after,
            ProductEvent::StockReserved { quantity, .. } => {
                reserved = reserved.checked_add(i64::from(*quantity)).ok_or(Unfit)?;
            }
            ProductEvent::StockReservationReleased { quantity, .. } => {
                reserved = reserved.checked_sub(i64::from(*quantity)).ok_or(Unfit)?;
            }
            ProductEvent::ReservedStockCommitted { quantity, .. } => {
                reserved = reserved.checked_sub(i64::from(*quantity)).ok_or(Unfit)?;
                on_hand = on_hand.checked_sub(i64::from(*quantity)).ok_or(Unfit)?;
            }
            ProductEvent::ProductDiscontinued {} => status = Some(ProductStatus::Discontinued.as_str()),
        }
        self.stock = (on_hand, reserved);
        if let Some(row) = self.product.as_mut() {
            if let Some(p) = price {
                row.price_minor = p.amount_minor;
                row.currency = p.currency.as_str().to_owned();
            }
            if let Some(s) = status {
                row.status = s;
            }
            row.on_hand = on_hand;
            row.reserved = reserved;
            row.version = version;
            row.updated_at = at;
        }
        Ok(())
    }
}
