//! Projection `orders`: one row per order with everything `GET /v1/orders/{id}` answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ordo_schemas::{OrderEvent, StreamRef};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{column, json, missing, Applying};
use crate::model::Target;

/// The order rows a batch writes, by order id.
#[derive(Debug, Default)]
pub struct Rows {
    rows: BTreeMap<Uuid, Row>,
}

/// One order row after the batch's events: a whole new row when the batch placed the order,
/// otherwise the columns its events set.
#[derive(Debug)]
struct Row {
    stream: StreamRef,
    placed: Option<Placed>,
    /// The version the row must be at before (0 for a new row).
    base_version: i64,
    version: i64,
    status: &'static str,
    updated_at: DateTime<Utc>,
    rejection: Option<Value>,
    payment: Option<Value>,
    shipment: Option<Value>,
    cancellation: Option<Value>,
    delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Placed {
    customer_id: Uuid,
    merchant_id: Uuid,
    lines: Value,
    total_minor: i64,
    currency: String,
    shipping_address: Value,
    placed_at: DateTime<Utc>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn fold(&mut self, ev: &Applying<'_>, event: &OrderEvent) -> Result<(), String> {
        let at = ev.recorded_at;
        if let OrderEvent::OrderPlaced { order_id, customer_id, merchant_id, lines, total, shipping_address } = event {
            if *order_id != ev.stream.id || ev.version != 1 || self.rows.contains_key(order_id) {
                return Err(format!("OrderPlaced for {order_id} in {} at v{}", ev.stream, ev.version));
            }
            let placed = Placed {
                customer_id: *customer_id,
                merchant_id: *merchant_id,
                lines: json(lines),
                total_minor: total.amount_minor,
                currency: total.currency.as_str().to_owned(),
                shipping_address: json(shipping_address),
                placed_at: at,
            };
            let mut row = Row::at(ev, 0);
            row.placed = Some(placed);
            self.rows.insert(*order_id, row);
            return Ok(());
        }
        let row = self.rows.entry(ev.stream.id).or_insert_with(|| Row::at(ev, ev.version - 1));
        row.version = ev.version;
        row.updated_at = at;
        match event {
            OrderEvent::OrderPlaced { .. } => {}
            OrderEvent::OrderConfirmed {} => row.status = "confirmed",
            OrderEvent::OrderRejected { failed_lines } => {
                row.status = "rejected";
                row.rejection = Some(json!({ "failed_lines": failed_lines, "rejected_at": at }));
            }
            OrderEvent::OrderPaid { amount, payment_reference } => {
                row.status = "paid";
                row.payment = Some(json!({ "amount": amount, "payment_reference": payment_reference, "paid_at": at }));
            }
            OrderEvent::OrderShipped { carrier, tracking_number } => {
                row.status = "shipped";
                row.shipment =
                    Some(json!({ "carrier": carrier, "tracking_number": tracking_number, "shipped_at": at }));
            }
            OrderEvent::OrderDelivered {} => {
                row.status = "delivered";
                row.delivered_at = Some(at);
            }
            OrderEvent::OrderCancelled { reason, cancelled_by } => {
                row.status = "cancelled";
                row.cancellation = Some(json!({ "reason": reason, "cancelled_by": cancelled_by, "cancelled_at": at }));
            }
        }
        Ok(())
    }

    /// One statement: new rows inserted, the others updated where they are at their base
    /// version. Returns the streams whose row did not match.
    pub(super) async fn write(&self, conn: &mut PgConnection, target: &Target) -> Result<Vec<StreamRef>, sqlx::Error> {
        if self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<&Row> = self.rows.values().collect();
        let placed = |f: fn(&Placed) -> Value| column(&rows, |r| r.placed.as_ref().map(f));
        let table = target.table("rm_orders");
        let sql = format!(
            "WITH d AS (SELECT * FROM UNNEST($1::uuid[], $2::bool[], $3::bigint[], $4::uuid[], $5::uuid[], \
             $6::text[], $7::jsonb[], $8::bigint[], $9::text[], $10::jsonb[], $11::jsonb[], $12::jsonb[], \
             $13::jsonb[], $14::jsonb[], $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::bigint[]) \
             AS d(order_id, is_new, base_version, customer_id, merchant_id, status, lines, total_minor, currency, \
             shipping_address, rejection, payment, shipment, cancellation, delivered_at, placed_at, updated_at, \
             version)), \
             ins AS (INSERT INTO {table} (order_id, customer_id, merchant_id, status, lines, total_minor, currency, \
             shipping_address, rejection, payment, shipment, cancellation, delivered_at, placed_at, updated_at, \
             version) SELECT order_id, customer_id, merchant_id, status, lines, total_minor, currency, \
             shipping_address, rejection, payment, shipment, cancellation, delivered_at, placed_at, updated_at, \
             version FROM d WHERE is_new ORDER BY order_id ON CONFLICT (order_id) DO NOTHING RETURNING order_id), \
             upd AS (UPDATE {table} AS t SET status = d.status, version = d.version, updated_at = d.updated_at, \
             rejection = COALESCE(d.rejection, t.rejection), payment = COALESCE(d.payment, t.payment), \
             shipment = COALESCE(d.shipment, t.shipment), cancellation = COALESCE(d.cancellation, t.cancellation), \
             delivered_at = COALESCE(d.delivered_at, t.delivered_at) \
             FROM d WHERE NOT d.is_new AND t.order_id = d.order_id AND t.version = d.base_version \
             RETURNING t.order_id) \
             SELECT order_id FROM ins UNION ALL SELECT order_id FROM upd"
        );
        let written: Vec<Uuid> = sqlx::query_scalar(&sql)
            .bind(column(&rows, |r| r.stream.id))
            .bind(column(&rows, |r| r.placed.is_some()))
            .bind(column(&rows, |r| r.base_version))
            .bind(column(&rows, |r| r.placed.as_ref().map(|p| p.customer_id)))
            .bind(column(&rows, |r| r.placed.as_ref().map(|p| p.merchant_id)))
            .bind(column(&rows, |r| r.status))
            .bind(placed(|p| p.lines.clone()))
            .bind(column(&rows, |r| r.placed.as_ref().map(|p| p.total_minor)))
            .bind(column(&rows, |r| r.placed.as_ref().map(|p| p.currency.clone())))
            .bind(placed(|p| p.shipping_address.clone()))
            .bind(column(&rows, |r| r.rejection.clone()))
            .bind(column(&rows, |r| r.payment.clone()))
            .bind(column(&rows, |r| r.shipment.clone()))
            .bind(column(&rows, |r| r.cancellation.clone()))
            .bind(column(&rows, |r| r.delivered_at))
            .bind(column(&rows, |r| r.placed.as_ref().map(|p| p.placed_at)))
            .bind(column(&rows, |r| r.updated_at))
            .bind(column(&rows, |r| r.version))
            .fetch_all(&mut *conn)
            .await?;
        Ok(missing(self.rows.values().map(|r| r.stream), &written))
    }
}

impl Row {
    fn at(ev: &Applying<'_>, base_version: i64) -> Self {
        Row {
            stream: ev.stream,
            placed: None,
            base_version,
            version: ev.version,
            status: "pending",
            updated_at: ev.recorded_at,
            rejection: None,
            payment: None,
            shipment: None,
            cancellation: None,
            delivered_at: None,
        }
    }
}
