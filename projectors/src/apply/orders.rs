//! Projection `orders`: one row per order with everything `GET /v1/orders/{id}` answers.

use ordo_schemas::OrderEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::{expect_one, json, ApplyError, Applying};
use crate::model::Target;

pub(super) async fn apply(
    conn: &mut PgConnection,
    target: &Target,
    ev: &Applying<'_>,
    event: &OrderEvent,
) -> Result<(), ApplyError> {
    let table = target.table("rm_orders");
    let at = ev.recorded_at;
    if let OrderEvent::OrderPlaced { order_id, customer_id, merchant_id, lines, total, shipping_address } = event {
        if *order_id != ev.stream.id || ev.version != 1 {
            return Err(ApplyError::Poison(format!("OrderPlaced for {order_id} in {} at v{}", ev.stream, ev.version)));
        }
        let sql = format!(
            "INSERT INTO {table} (order_id, customer_id, merchant_id, status, lines, total_minor, currency, \
             shipping_address, placed_at, updated_at, version) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $8, $9) ON CONFLICT (order_id) DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(order_id)
            .bind(customer_id)
            .bind(merchant_id)
            .bind(json(lines))
            .bind(total.amount_minor)
            .bind(total.currency.as_str())
            .bind(json(shipping_address))
            .bind(at)
            .bind(ev.version)
            .execute(&mut *conn)
            .await?;
        return expect_one(done.rows_affected(), ev, "absent order");
    }
    // (status, column to set, its value)
    let (status, column, value) = match event {
        OrderEvent::OrderPlaced { .. } => return Ok(()),
        OrderEvent::OrderConfirmed {} => ("confirmed", None, None),
        OrderEvent::OrderRejected { failed_lines } => {
            ("rejected", Some("rejection"), Some(json!({ "failed_lines": failed_lines, "rejected_at": at })))
        }
        OrderEvent::OrderPaid { amount, payment_reference } => (
            "paid",
            Some("payment"),
            Some(json!({ "amount": amount, "payment_reference": payment_reference, "paid_at": at })),
        ),
        OrderEvent::OrderShipped { carrier, tracking_number } => (
            "shipped",
            Some("shipment"),
            Some(json!({ "carrier": carrier, "tracking_number": tracking_number, "shipped_at": at })),
        ),
        OrderEvent::OrderDelivered {} => ("delivered", None, None),
        OrderEvent::OrderCancelled { reason, cancelled_by } => (
            "cancelled",
            Some("cancellation"),
            Some(json!({ "reason": reason, "cancelled_by": cancelled_by, "cancelled_at": at })),
        ),
    };
    let delivered = matches!(event, OrderEvent::OrderDelivered {});
    let set_extra = column.map(|c| format!(", {c} = $5")).unwrap_or_default();
    let sql = format!(
        "UPDATE {table} SET status = $1, version = $2, updated_at = $3, \
         delivered_at = CASE WHEN $6 THEN $3 ELSE delivered_at END{set_extra} \
         WHERE order_id = $4 AND version = $2 - 1"
    );
    let done = sqlx::query(&sql)
        .bind(status)
        .bind(ev.version)
        .bind(at)
        .bind(ev.stream.id)
        .bind(value.unwrap_or(serde_json::Value::Null))
        .bind(delivered)
        .execute(&mut *conn)
        .await?;
    expect_one(done.rows_affected(), ev, "order")
}
