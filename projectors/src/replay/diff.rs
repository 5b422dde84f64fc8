//! The row-by-row comparison of a replay's tables with the live ones.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{ident, ColumnDrift, DifferentRow, DriftCounts, RowDrift, TableDrift, FETCH, LIST_LIMIT};
use crate::model::{Projection, Target};
use crate::ProjectorError;

/// The streams (and, for sales, merchants) whose rows are still moving: see the module docs.
pub(super) struct InFlight {
    streams: HashSet<Uuid>,
    merchants: HashSet<Uuid>,
}

impl InFlight {
    pub(super) async fn load(
        conn: &mut PgConnection,
        projection: Projection,
        target: &Target,
    ) -> Result<Self, ProjectorError> {
        let streams: Vec<Uuid> = sqlx::query_scalar(
            "SELECT stream_id FROM (SELECT category, stream_id, version FROM projection_progress \
             WHERE projection = $1) l FULL JOIN (SELECT category, stream_id, version FROM projection_progress \
             WHERE projection = $2) r USING (category, stream_id) WHERE l.version IS DISTINCT FROM r.version",
        )
        .bind(projection.name())
        .bind(&target.key)
        .fetch_all(&mut *conn)
        .await?;
        let mut merchants = HashSet::new();
        if projection == Projection::Sales && !streams.is_empty() {
            let sql = format!(
                "SELECT merchant_id FROM rm_sales_orders WHERE order_id = ANY($1) \
                 UNION SELECT merchant_id FROM {} WHERE order_id = ANY($1)",
                target.table("rm_sales_orders")
            );
            let found: Vec<Uuid> = sqlx::query_scalar(&sql).bind(&streams).fetch_all(&mut *conn).await?;
            merchants.extend(found);
        }
        Ok(Self { streams: streams.into_iter().collect(), merchants })
    }

    /// Whether the row (of live table `base`) belongs to a stream in flight.
    fn holds(&self, base: &str, row: &Value) -> bool {
        let id = |column: &str| row.get(column).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
        match base {
            "rm_orders" | "rm_sales_orders" => id("order_id").is_some_and(|i| self.streams.contains(&i)),
            "rm_products" => id("product_id").is_some_and(|i| self.streams.contains(&i)),
            "rm_merchant_daily_sales" => id("merchant_id").is_some_and(|i| self.merchants.contains(&i)),
            _ => false,
        }
    }
}

/// Compares live table `base` with `replay` row by row as jsonb, through a cursor.
pub(super) async fn diff_table(
    conn: &mut PgConnection,
    base: &str,
    replay: &str,
    key_columns: Vec<String>,
    in_flight: &InFlight,
) -> Result<TableDrift, ProjectorError> {
    let on: Vec<String> = key_columns.iter().map(|c| format!("l.{0} = r.{0}", ident(c))).collect();
    let order: Vec<String> = key_columns.iter().map(|c| format!("COALESCE(l.{0}, r.{0})", ident(c))).collect();
    // no bind parameters: the table names are fixed and the columns come from the catalog
    sqlx::query(&format!(
        "DECLARE ordo_drift NO SCROLL CURSOR FOR SELECT to_jsonb(l) AS live, to_jsonb(r) AS replay \
         FROM {base} l FULL JOIN {replay} r ON {} WHERE to_jsonb(l) IS DISTINCT FROM to_jsonb(r) ORDER BY {}",
        on.join(" AND "),
        order.join(", ")
    ))
    .execute(&mut *conn)
    .await?;
    let mut out = TableDrift {
        table: base.to_owned(),
        key_columns,
        missing: Vec::new(),
        extra: Vec::new(),
        different: Vec::new(),
        counts: DriftCounts::default(),
    };
    loop {
        let rows = sqlx::query(&format!("FETCH FORWARD {FETCH} FROM ordo_drift")).fetch_all(&mut *conn).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let live: Option<Value> = row.try_get("live")?;
            let replayed: Option<Value> = row.try_get("replay")?;
            out.classify(base, live, replayed, in_flight);
        }
    }
    sqlx::query("CLOSE ordo_drift").execute(&mut *conn).await?;
    Ok(out)
}

impl TableDrift {
    fn key_of(&self, row: &Value) -> Map<String, Value> {
        self.key_columns.iter().map(|c| (c.clone(), row.get(c).cloned().unwrap_or(Value::Null))).collect()
    }

    fn classify(&mut self, base: &str, live: Option<Value>, replay: Option<Value>, in_flight: &InFlight) {
        let Some(either) = live.as_ref().or(replay.as_ref()) else { return };
        if in_flight.holds(base, either) {
            self.counts.in_flight += 1;
            return;
        }
        let key = self.key_of(either);
        match (live, replay) {
            (None, Some(row)) => {
                self.counts.missing += 1;
                if self.missing.len() < LIST_LIMIT {
                    self.missing.push(RowDrift { key, row });
                }
            }
            (Some(row), None) => {
                self.counts.extra += 1;
                if self.extra.len() < LIST_LIMIT {
                    self.extra.push(RowDrift { key, row });
                }
            }
            (Some(live), Some(replay)) => {
                self.counts.different += 1;
                if self.different.len() < LIST_LIMIT {
                    self.different.push(DifferentRow { key, columns: columns_that_differ(&live, &replay) });
                }
            }
            (None, None) => {}
        }
    }
}

fn columns_that_differ(live: &Value, replay: &Value) -> BTreeMap<String, ColumnDrift> {
    let empty = Map::new();
    let (l, r) = (live.as_object().unwrap_or(&empty), replay.as_object().unwrap_or(&empty));
    l.keys()
        .chain(r.keys())
        .filter(|c| l.get(*c) != r.get(*c))
        .map(|c| {
            let drift = ColumnDrift {
                live: l.get(c).cloned().unwrap_or(Value::Null),
                replay: r.get(c).cloned().unwrap_or(Value::Null),
            };
            (c.clone(), drift)
        })
        .collect()
}
