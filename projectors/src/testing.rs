//! Test support (feature `testing`): a scripted marketplace workload appended through the pure
//! aggregates and [`EventStore`], and an independent oracle that folds the log with the same
//! aggregates and compares the read models with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;

use ordo_domain::{Aggregate, Customer, DomainError, Merchant, Order, Product};
use ordo_event_store::{EventStore, ExpectedVersion, NewEvent};
use ordo_schemas::*;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Runs `command` against the stream's folded state and appends the resulting events; returns
/// the stream's version afterwards.
pub async fn exec<A>(store: &EventStore, stream: StreamRef, command: A::Command) -> Result<i64, DomainError>
where
    A: Aggregate,
{
    let recorded = store.read_stream(stream, 1).await.expect("read stream");
    let events: Vec<A::Event> = recorded.iter().map(|e| e.decode::<A::Event>().expect("decode")).collect();
    let state = A::from_events(&events);
    let new = state.decide(&command)?;
    let version = recorded.len() as i64;
    if new.is_empty() {
        return Ok(version);
    }
    let correlation = Uuid::new_v4();
    let stored: Vec<NewEvent> = new
        .iter()
        .map(|e| {
            NewEvent::from_domain(
                e,
                EventMetadata {
                    event_id: Uuid::new_v4(),
                    correlation_id: correlation,
                    causation_id: None,
                    actor: Actor::system(),
                    traceparent: None,
                    tracestate: None,
                },
            )
        })
        .collect();
    let appended = store.append(stream, ExpectedVersion::Exact(version), stored).await.expect("append");
    Ok(appended.version)
}

/// The state of one stream, folded from the log.
pub async fn fold<A: Aggregate>(store: &EventStore, stream: StreamRef) -> (A, i64) {
    let recorded = store.read_stream(stream, 1).await.expect("read stream");
    let events: Vec<A::Event> = recorded.iter().map(|e| e.decode::<A::Event>().expect("decode")).collect();
    (A::from_events(&events), recorded.len() as i64)
}

pub fn address() -> Address {
    Address::new("1 Main Street", None, "Berlin", "10115", CountryCode::parse("DE").unwrap()).unwrap()
}

pub fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}

/// The ids a workload created.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub customers: Vec<Uuid>,
    pub merchants: Vec<Uuid>,
    /// Products by merchant.
    pub products: BTreeMap<Uuid, Vec<Uuid>>,
    pub orders: Vec<Uuid>,
}

impl Workload {
    /// Registers `customers` customers and `merchants` merchants with four products each (one
    /// with little stock, so some orders are rejected).
    pub async fn setup(store: &EventStore, customers: usize, merchants: usize) -> Self {
        let mut w = Workload::default();
        for i in 0..customers {
            let id = Uuid::new_v4();
            let cmd = RegisterCustomer {
                customer_id: id,
                name: format!("customer {i}"),
                email: Email::parse(&format!("c{i}@example.com")).unwrap(),
                shipping_address: address(),
            };
            exec::<Customer>(store, StreamRef::new(StreamCategory::Customer, id), cmd.into()).await.unwrap();
            w.customers.push(id);
        }
        for i in 0..merchants {
            let id = Uuid::new_v4();
            let cmd = RegisterMerchant { merchant_id: id, name: format!("merchant {i}") };
            exec::<Merchant>(store, StreamRef::new(StreamCategory::Merchant, id), cmd.into()).await.unwrap();
            let mut products = Vec::new();
            for p in 0..4u32 {
                let pid = Uuid::new_v4();
                let cmd = ListProduct {
                    product_id: pid,
                    merchant_id: id,
                    sku: Sku::parse(&format!("SKU-{i}-{p}")).unwrap(),
                    name: format!("widget {p} of merchant {i}"),
                    description: (p % 2 == 0).then(|| format!("a fine widget number {p}")),
                    price: eur(1000 + i64::from(p) * 250),
                    initial_stock: if p == 3 { 2 } else { 10_000 },
                };
                exec::<Product>(store, StreamRef::new(StreamCategory::Product, pid), cmd.into()).await.unwrap();
                products.push(pid);
            }
            w.products.insert(id, products);
            w.merchants.push(id);
        }
        w
    }

    /// Places order `n` and drives it through the saga steps towards one of the seven statuses
    /// (chosen by `n`); also touches prices and stock now and then.
    pub async fn order(&mut self, store: &EventStore, n: usize) -> Uuid {
        let customer = self.customers[n % self.customers.len()];
        let merchant = *self.products.keys().nth(n % self.products.len()).unwrap();
        let products = self.products[&merchant].clone();
        let target = OrderStatus::ALL[n % OrderStatus::ALL.len()];
        // rejected orders ask the low-stock product for more than it has
        let picks: Vec<(Uuid, u32)> = if target == OrderStatus::Rejected {
            vec![(products[0], 1), (products[3], 50)]
        } else {
            vec![(products[n % 3], 1 + (n % 3) as u32), (products[(n + 1) % 3], 1)]
        };
        let mut lines = Vec::new();
        for (pid, quantity) in &picks {
            let (p, _) = fold::<Product>(store, StreamRef::new(StreamCategory::Product, *pid)).await;
            let s = p.state().unwrap();
            lines.push(PricedLine {
                product_id: *pid,
                merchant_id: merchant,
                sku: s.sku.clone(),
                name: s.name.clone(),
                quantity: *quantity,
                unit_price: s.price,
            });
        }
        let order_id = Uuid::new_v4();
        let order = StreamRef::new(StreamCategory::Order, order_id);
        let place = PlaceOrder {
            order_id,
            customer_id: customer,
            merchant_id: Some(merchant),
            lines,
            shipping_address: address(),
        };
        exec::<Order>(store, order, place.into()).await.unwrap();
        self.orders.push(order_id);
        if n % 5 == 0 {
            let pid = products[n % 3];
            let cmd = ChangePrice { price: eur(1000 + (n as i64 % 7) * 10) };
            let _ = exec::<Product>(store, StreamRef::new(StreamCategory::Product, pid), cmd.into()).await;
            let cmd = AdjustStock { delta: 5, reason: StockAdjustmentReason::Restock };
            exec::<Product>(store, StreamRef::new(StreamCategory::Product, pid), cmd.into()).await.unwrap();
        }
        if target == OrderStatus::Pending {
            return order_id;
        }
        let mut reserved = Vec::new();
        let mut failed = Vec::new();
        for (pid, quantity) in &picks {
            let stream = StreamRef::new(StreamCategory::Product, *pid);
            match exec::<Product>(store, stream, ReserveStock { order_id, quantity: *quantity }.into()).await {
                Ok(_) => reserved.push(*pid),
                Err(e) => failed.push(RejectedLine {
                    product_id: *pid,
                    requested: *quantity,
                    available: 0,
                    reason: e.code().to_owned(),
                }),
            }
        }
        let release = |reserved: Vec<Uuid>| async move {
            for pid in reserved {
                let stream = StreamRef::new(StreamCategory::Product, pid);
                exec::<Product>(store, stream, ReleaseReservation { order_id }.into()).await.unwrap();
            }
        };
        if !failed.is_empty() {
            exec::<Order>(store, order, RejectOrder { failed_lines: failed }.into()).await.unwrap();
            release(reserved).await;
            return order_id;
        }
        exec::<Order>(store, order, ConfirmOrder {}.into()).await.unwrap();
        if target == OrderStatus::Confirmed {
            return order_id;
        }
        if target == OrderStatus::Cancelled {
            let by = Actor { id: customer, role: Role::Customer };
            exec::<Order>(store, order, CancelOrder { reason: "changed my mind".into(), by }.into()).await.unwrap();
            release(reserved).await;
            return order_id;
        }
        let (o, _) = fold::<Order>(store, order).await;
        let total = o.state().unwrap().total;
        let pay = PayOrder { amount: total, payment_reference: format!("pay-{n}") };
        exec::<Order>(store, order, pay.into()).await.unwrap();
        if target == OrderStatus::Paid {
            return order_id;
        }
        let ship = ShipOrder { carrier: "DHL".into(), tracking_number: format!("track-{n}") };
        exec::<Order>(store, order, ship.into()).await.unwrap();
        for pid in reserved {
            let stream = StreamRef::new(StreamCategory::Product, pid);
            exec::<Product>(store, stream, CommitReservation { order_id }.into()).await.unwrap();
        }
        if target == OrderStatus::Shipped {
            return order_id;
        }
        exec::<Order>(store, order, DeliverOrder {}.into()).await.unwrap();
        order_id
    }

    /// Setup plus `orders` orders covering every status, and one discontinued product.
    pub async fn run(store: &EventStore, orders: usize) -> Self {
        let mut w = Self::setup(store, 3, 2).await;
        for n in 0..orders {
            w.order(store, n).await;
        }
        let pid = w.products.values().next().unwrap()[2];
        exec::<Product>(store, StreamRef::new(StreamCategory::Product, pid), DiscontinueProduct {}.into())
            .await
            .unwrap();
        w
    }

    pub fn all_products(&self) -> Vec<Uuid> {
        self.products.values().flatten().copied().collect()
    }
}

/// Differences between the read models and the fold of the log, one line each (empty when
/// they agree).
pub async fn diff_against_fold(pool: &PgPool, w: &Workload) -> Vec<String> {
    let store = EventStore::new(pool.clone());
    let mut out = Vec::new();
    let mut sales: BTreeMap<(Uuid, chrono::NaiveDate, String), (i64, i64)> = BTreeMap::new();
    for id in &w.orders {
        let stream = StreamRef::new(StreamCategory::Order, *id);
        let (o, version) = fold::<Order>(&store, stream).await;
        let s = o.state().unwrap();
        let row = sqlx::query(
            "SELECT customer_id, merchant_id, status, total_minor, version, payment, shipment, lines \
             FROM rm_orders WHERE order_id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap();
        let Some(row) = row else {
            out.push(format!("order {id}: missing"));
            continue;
        };
        let got = (
            row.get::<Uuid, _>("customer_id"),
            row.get::<Uuid, _>("merchant_id"),
            row.get::<String, _>("status"),
            row.get::<i64, _>("total_minor"),
            row.get::<i64, _>("version"),
            row.get::<Option<Value>, _>("payment").map(|p| p["payment_reference"].clone()),
            row.get::<Option<Value>, _>("shipment").map(|p| p["tracking_number"].clone()),
            row.get::<Value, _>("lines"),
        );
        let want = (
            s.customer_id,
            s.merchant_id,
            s.status.as_str().to_owned(),
            s.total.amount_minor,
            version,
            s.payment.as_ref().map(|p| serde_json::to_value(&p.payment_reference).unwrap_or_default()),
            s.shipment.as_ref().map(|p| Value::from(p.tracking_number.clone())),
            serde_json::to_value(&s.lines).unwrap(),
        );
        if got != want {
            out.push(format!("order {id}: read model {got:?} != fold {want:?}"));
        }
        for e in store.read_stream(stream, 1).await.unwrap() {
            if let OrderEvent::OrderPaid { amount, .. } = e.decode::<OrderEvent>().unwrap() {
                let slot = sales
                    .entry((s.merchant_id, e.recorded_at.date_naive(), amount.currency.as_str().to_owned()))
                    .or_default();
                slot.0 += 1;
                slot.1 += amount.amount_minor;
            }
        }
    }
    for id in w.all_products() {
        let (p, version) = fold::<Product>(&store, StreamRef::new(StreamCategory::Product, id)).await;
        let s = p.state().unwrap();
        let row = sqlx::query(
            "SELECT on_hand, reserved, price_minor, status, version, sku, merchant_id FROM rm_products \
             WHERE product_id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap();
        let Some(row) = row else {
            out.push(format!("product {id}: missing"));
            continue;
        };
        let got = (
            row.get::<i64, _>("on_hand"),
            row.get::<i64, _>("reserved"),
            row.get::<i64, _>("price_minor"),
            row.get::<String, _>("status"),
            row.get::<i64, _>("version"),
            row.get::<String, _>("sku"),
            row.get::<Uuid, _>("merchant_id"),
        );
        let want = (
            s.on_hand,
            s.reserved,
            s.price.amount_minor,
            s.status.as_str().to_owned(),
            version,
            s.sku.as_str().to_owned(),
            s.merchant_id,
        );
        if got != want {
            out.push(format!("product {id}: read model {got:?} != fold {want:?}"));
        }
    }
    let rows = sqlx::query("SELECT merchant_id, day, currency, orders, revenue_minor FROM rm_merchant_daily_sales")
        .fetch_all(pool)
        .await
        .unwrap();
    let got: BTreeMap<(Uuid, chrono::NaiveDate, String), (i64, i64)> = rows
        .iter()
        .map(|r| ((r.get("merchant_id"), r.get("day"), r.get("currency")), (r.get("orders"), r.get("revenue_minor"))))
        .collect();
    if got != sales {
        out.push(format!("daily sales: read model {got:?} != fold {sales:?}"));
    }
    out
}

/// Every row of every read-model table, as JSON, in key order (for before/after comparisons).
pub async fn snapshot(pool: &PgPool) -> BTreeMap<&'static str, Vec<Value>> {
    let mut out = BTreeMap::new();
    for (table, key) in [
        ("rm_orders", "order_id"),
        ("rm_products", "product_id"),
        ("rm_sales_orders", "order_id"),
        ("rm_merchant_daily_sales", "merchant_id, day, currency"),
    ] {
        let rows: Vec<Value> = sqlx::query_scalar(&format!("SELECT to_jsonb(t) FROM {table} t ORDER BY {key}"))
            .fetch_all(pool)
            .await
            .unwrap();
        out.insert(table, rows);
    }
    out
}

/// Waits (polling, with a deadline) until every projection has applied every event of the log.
pub async fn wait_caught_up(pool: &PgPool, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let status = crate::projection_status(pool).await.unwrap();
        if status.iter().all(|s| s.lag_events == 0) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "projections did not catch up: {status:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
