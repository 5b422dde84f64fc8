//! Projection `sales`: paid orders per merchant per UTC day of payment, revenue per currency.
//!
//! Revenue is booked on the day the payment was recorded; a later cancellation of a paid order
//! does not change the figures (refunds are not modelled).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use ordo_schemas::{OrderEvent, StreamRef};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{column, missing, Applying, WriteError};
use crate::model::Target;

/// The order rows (and the payments to book) a batch writes, by order id.
#[derive(Debug, Default)]
pub struct Rows {
    rows: BTreeMap<Uuid, Row>,
}

#[derive(Debug)]
struct Row {
    stream: StreamRef,
    /// Set when the batch placed the order (a new row).
    merchant_id: Option<Uuid>,
    /// The version the row must be at before (0 for a new row).
    base_version: i64,
    version: i64,
    paid: bool,
    payments: Vec<Payment>,
}

#[derive(Debug)]
struct Payment {
    day: NaiveDate,
    currency: String,
    amount_minor: i64,
    version: i64,
    position: i64,
    recorded_at: DateTime<Utc>,
}

/// One `rm_merchant_daily_sales` row's increment (or, in a rebuild, its whole sum).
#[derive(Debug)]
pub(crate) struct Daily {
    pub(crate) orders: i64,
    pub(crate) revenue_minor: i64,
    /// The payment latest in the log: its order, version and position.
    pub(crate) last: (Uuid, i64, i64),
    pub(crate) updated_at: DateTime<Utc>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn fold(&mut self, ev: &Applying<'_>, event: &OrderEvent) -> Result<(), String> {
        if let OrderEvent::OrderPlaced { order_id, merchant_id, .. } = event {
            if *order_id != ev.stream.id || ev.version != 1 || self.rows.contains_key(order_id) {
                return Err(format!("OrderPlaced for {order_id} in {}", ev.stream));
            }
            let row = Row {
                stream: ev.stream,
                merchant_id: Some(*merchant_id),
                base_version: 0,
                version: 1,
                paid: false,
                payments: Vec::new(),
            };
            self.rows.insert(*order_id, row);
            return Ok(());
        }
        let row = self.rows.entry(ev.stream.id).or_insert_with(|| Row {
            stream: ev.stream,
            merchant_id: None,
            base_version: ev.version - 1,
            version: ev.version,
            paid: false,
            payments: Vec::new(),
        });
        row.version = ev.version;
        if let OrderEvent::OrderPaid { amount, .. } = event {
            row.paid = true;
            row.payments.push(Payment {
                day: ev.recorded_at.date_naive(),
                currency: amount.currency.as_str().to_owned(),
                amount_minor: amount.amount_minor,
                version: ev.version,
                position: ev.position,
                recorded_at: ev.recorded_at,
            });
        }
        Ok(())
    }

    /// Two statements: the orders' rows (new ones inserted, the others updated where they are at
    /// their base version), then the daily figures of the payments of the rows that matched.
    /// Returns the streams whose row did not match.
    pub(super) async fn write(&self, conn: &mut PgConnection, target: &Target) -> Result<Vec<StreamRef>, WriteError> {
        if self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<&Row> = self.rows.values().collect();
        let orders = target.table("rm_sales_orders");
        let sql = format!(
            "WITH d AS (SELECT * FROM UNNEST($1::uuid[], $2::bool[], $3::bigint[], $4::uuid[], $5::bool[], \
             $6::bigint[]) AS d(order_id, is_new, base_version, merchant_id, paid, version)), \
             ins AS (INSERT INTO {orders} (order_id, merchant_id, paid, version) \
             SELECT order_id, merchant_id, paid, version FROM d WHERE is_new ORDER BY order_id \
             ON CONFLICT (order_id) DO NOTHING RETURNING order_id, merchant_id), \
             upd AS (UPDATE {orders} AS t SET version = d.version, paid = t.paid OR d.paid \
             FROM d WHERE NOT d.is_new AND t.order_id = d.order_id AND t.version = d.base_version \
             RETURNING t.order_id, t.merchant_id) \
             SELECT order_id, merchant_id FROM ins UNION ALL SELECT order_id, merchant_id FROM upd"
        );
        let written: Vec<(Uuid, Uuid)> = sqlx::query_as(&sql)
            .bind(column(&rows, |r| r.stream.id))
            .bind(column(&rows, |r| r.merchant_id.is_some()))
            .bind(column(&rows, |r| r.base_version))
            .bind(column(&rows, |r| r.merchant_id))
            .bind(column(&rows, |r| r.paid))
            .bind(column(&rows, |r| r.version))
            .fetch_all(&mut *conn)
            .await?;
        let merchants: HashMap<Uuid, Uuid> = written.iter().copied().collect();

        let mut daily: BTreeMap<(Uuid, NaiveDate, String), Daily> = BTreeMap::new();
        for row in &rows {
            let Some(merchant) = merchants.get(&row.stream.id) else { continue };
            for p in &row.payments {
                let key = (*merchant, p.day, p.currency.clone());
                let d = daily.entry(key).or_insert(Daily {
                    orders: 0,
                    revenue_minor: 0,
                    last: (row.stream.id, p.version, p.position),
                    updated_at: p.recorded_at,
                });
                d.orders += 1;
                d.revenue_minor = d.revenue_minor.checked_add(p.amount_minor).ok_or_else(|| {
                    WriteError::Data(format!("revenue of merchant {merchant} on {} out of range", p.day))
                })?;
                if p.position >= d.last.2 {
                    d.last = (row.stream.id, p.version, p.position);
                }
                d.updated_at = d.updated_at.max(p.recorded_at);
            }
        }
        if !daily.is_empty() {
            write_daily(conn, target, &daily).await?;
        }
        let ids: Vec<Uuid> = written.iter().map(|(id, _)| *id).collect();
        Ok(missing(self.rows.values().map(|r| r.stream), &ids))
    }
}

async fn write_daily(
    conn: &mut PgConnection,
    target: &Target,
    daily: &BTreeMap<(Uuid, NaiveDate, String), Daily>,
) -> Result<(), sqlx::Error> {
    let table = target.table("rm_merchant_daily_sales");
    let keys: Vec<&(Uuid, NaiveDate, String)> = daily.keys().collect();
    let values: Vec<&Daily> = daily.values().collect();
    // The `last_*` columns follow the paid order latest in the log, not the one applied last:
    // partitions interleave differently live and in a replay, the log order does not.
    let sql = format!(
        "INSERT INTO {table} AS d (merchant_id, day, currency, orders, revenue_minor, last_order_id, \
         last_order_version, last_position, updated_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::date[], $3::text[], $4::bigint[], $5::bigint[], $6::uuid[], \
         $7::bigint[], $8::bigint[], $9::timestamptz[]) \
         ON CONFLICT (merchant_id, day, currency) DO UPDATE SET orders = d.orders + EXCLUDED.orders, \
         revenue_minor = d.revenue_minor + EXCLUDED.revenue_minor, \
         last_order_id = CASE WHEN EXCLUDED.last_position > d.last_position \
             THEN EXCLUDED.last_order_id ELSE d.last_order_id END, \
         last_order_version = CASE WHEN EXCLUDED.last_position > d.last_position \
             THEN EXCLUDED.last_order_version ELSE d.last_order_version END, \
         last_position = GREATEST(d.last_position, EXCLUDED.last_position), \
         updated_at = GREATEST(d.updated_at, EXCLUDED.updated_at)"
    );
    sqlx::query(&sql)
        .bind(column(&keys, |k| k.0))
        .bind(column(&keys, |k| k.1))
        .bind(column(&keys, |k| k.2.clone()))
        .bind(column(&values, |v| v.orders))
        .bind(column(&values, |v| v.revenue_minor))
        .bind(column(&values, |v| v.last.0))
        .bind(column(&values, |v| v.last.1))
        .bind(column(&values, |v| v.last.2))
        .bind(column(&values, |v| v.updated_at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
