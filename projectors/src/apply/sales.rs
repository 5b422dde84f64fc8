//! Projection `sales`: paid orders per merchant per UTC day of payment, revenue per currency.
//!
//! Revenue is booked on the day the payment was recorded; a later cancellation of a paid order
//! does not change the figures (refunds are not modelled).

use ordo_schemas::OrderEvent;
use sqlx::{PgConnection, Row};

use super::{expect_one, ApplyError, Applying};
use crate::model::Target;

pub(super) async fn apply(
    conn: &mut PgConnection,
    target: &Target,
    ev: &Applying<'_>,
    event: &OrderEvent,
) -> Result<(), ApplyError> {
    let orders = target.table("rm_sales_orders");
    match event {
        OrderEvent::OrderPlaced { order_id, merchant_id, .. } => {
            if *order_id != ev.stream.id || ev.version != 1 {
                return Err(ApplyError::Poison(format!("OrderPlaced for {order_id} in {}", ev.stream)));
            }
            let sql = format!(
                "INSERT INTO {orders} (order_id, merchant_id, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (order_id) DO NOTHING"
            );
            let done = sqlx::query(&sql).bind(order_id).bind(merchant_id).bind(ev.version).execute(&mut *conn).await?;
            expect_one(done.rows_affected(), ev, "absent order")
        }
        OrderEvent::OrderPaid { amount, .. } => {
            let sql = format!(
                "UPDATE {orders} SET version = $1, paid = true WHERE order_id = $2 AND version = $1 - 1 \
                 RETURNING merchant_id"
            );
            let row = sqlx::query(&sql).bind(ev.version).bind(ev.stream.id).fetch_optional(&mut *conn).await?;
            let Some(row) = row else { return expect_one(0, ev, "order") };
            let merchant_id: uuid::Uuid = row.try_get("merchant_id")?;
            let daily = target.table("rm_merchant_daily_sales");
            // The `last_*` columns follow the paid order latest in the log, not the one applied
            // last: partitions interleave differently live and in a replay, the log order does not.
            let sql = format!(
                "INSERT INTO {daily} AS d (merchant_id, day, currency, orders, revenue_minor, last_order_id, \
                 last_order_version, last_position, updated_at) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8) \
                 ON CONFLICT (merchant_id, day, currency) DO UPDATE SET orders = d.orders + 1, \
                 revenue_minor = d.revenue_minor + EXCLUDED.revenue_minor, \
                 last_order_id = CASE WHEN EXCLUDED.last_position > d.last_position \
                     THEN EXCLUDED.last_order_id ELSE d.last_order_id END, \
                 last_order_version = CASE WHEN EXCLUDED.last_position > d.last_position \
                     THEN EXCLUDED.last_order_version ELSE d.last_order_version END, \
                 last_position = GREATEST(d.last_position, EXCLUDED.last_position), \
                 updated_at = GREATEST(d.updated_at, EXCLUDED.updated_at)"
            );
            sqlx::query(&sql)
                .bind(merchant_id)
                .bind(ev.recorded_at.date_naive())
                .bind(amount.currency.as_str())
                .bind(amount.amount_minor)
                .bind(ev.stream.id)
                .bind(ev.version)
                .bind(ev.position)
                .bind(ev.recorded_at)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        _ => {
            let sql = format!("UPDATE {orders} SET version = $1 WHERE order_id = $2 AND version = $1 - 1");
            let done = sqlx::query(&sql).bind(ev.version).bind(ev.stream.id).execute(&mut *conn).await?;
            expect_one(done.rows_affected(), ev, "order")
        }
    }
}
