//! Projection `catalog`: one row per product with price and stock figures.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ordo_schemas::{DomainEvent, ProductEvent, ProductStatus, StreamRef};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{column, missing, Applying};
use crate::model::Target;

/// The product rows a batch writes, by product id.
#[derive(Debug, Default)]
pub struct Rows {
    rows: BTreeMap<Uuid, Row>,
}

/// One product row after the batch's events. Stock moves are relative to the stored figures:
/// `on_hand` becomes `on_hand_set` (or the stored value) plus `on_hand_delta`, `reserved` the
/// stored value plus `reserved_delta`. A new row starts from zero.
#[derive(Debug)]
struct Row {
    stream: StreamRef,
    listed: Option<Listed>,
    /// The version the row must be at before (0 for a new row).
    base_version: i64,
    version: i64,
    price: Option<(i64, String)>,
    on_hand_set: Option<i64>,
    on_hand_delta: i64,
    reserved_delta: i64,
    status: Option<&'static str>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug)]
struct Listed {
    merchant_id: Uuid,
    sku: String,
    name: String,
    description: Option<String>,
    listed_at: DateTime<Utc>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn fold(&mut self, ev: &Applying<'_>, event: &ProductEvent) -> Result<(), String> {
        if let ProductEvent::ProductListed { product_id, merchant_id, sku, name, description, price, initial_stock } =
            event
        {
            if *product_id != ev.stream.id || ev.version != 1 || self.rows.contains_key(product_id) {
                return Err(format!("ProductListed for {product_id} in {} at v{}", ev.stream, ev.version));
            }
            let mut row = Row::at(ev, 0);
            row.listed = Some(Listed {
                merchant_id: *merchant_id,
                sku: sku.as_str().to_owned(),
                name: name.clone(),
                description: description.clone(),
                listed_at: ev.recorded_at,
            });
            row.price = Some((price.amount_minor, price.currency.as_str().to_owned()));
            row.on_hand_set = Some(i64::from(*initial_stock));
            row.status = Some(ProductStatus::Active.as_str());
            self.rows.insert(*product_id, row);
            return Ok(());
        }
        let fresh = !self.rows.contains_key(&ev.stream.id);
        let result = self.fold_into_row(ev, event);
        if result.is_err() && fresh {
            self.rows.remove(&ev.stream.id);
        }
        result
    }

    fn fold_into_row(&mut self, ev: &Applying<'_>, event: &ProductEvent) -> Result<(), String> {
        let row = self.rows.entry(ev.stream.id).or_insert_with(|| Row::at(ev, ev.version - 1));
        let overflow =
            || format!("{} {} at version {}: stock figures out of range", event.event_type(), ev.stream, ev.version);
        // checked on copies first, so a failing event folds nothing
        let (mut on_hand_delta, mut reserved_delta) = (row.on_hand_delta, row.reserved_delta);
        match event {
            ProductEvent::ProductListed { .. } => {}
            ProductEvent::ProductPriceChanged { new_price, .. } => {
                row.price = Some((new_price.amount_minor, new_price.currency.as_str().to_owned()));
            }
            ProductEvent::StockAdjusted { on_hand_after, .. } => {
                row.on_hand_set = Some(*on_hand_after);
                on_hand_delta = 0;
            }
            ProductEvent::StockReserved { quantity, .. } => {
                reserved_delta = reserved_delta.checked_add(i64::from(*quantity)).ok_or_else(overflow)?;
            }
            ProductEvent::StockReservationReleased { quantity, .. } => {
                reserved_delta = reserved_delta.checked_sub(i64::from(*quantity)).ok_or_else(overflow)?;
            }
            ProductEvent::ReservedStockCommitted { quantity, .. } => {
                reserved_delta = reserved_delta.checked_sub(i64::from(*quantity)).ok_or_else(overflow)?;
                on_hand_delta = on_hand_delta.checked_sub(i64::from(*quantity)).ok_or_else(overflow)?;
            }
            ProductEvent::ProductDiscontinued {} => row.status = Some(ProductStatus::Discontinued.as_str()),
        }
        row.on_hand_delta = on_hand_delta;
        row.reserved_delta = reserved_delta;
        row.version = ev.version;
        row.updated_at = ev.recorded_at;
        Ok(())
    }

    /// One statement: new rows inserted, the others updated where they are at their base
    /// version. Returns the streams whose row did not match.
    pub(super) async fn write(&self, conn: &mut PgConnection, target: &Target) -> Result<Vec<StreamRef>, sqlx::Error> {
        if self.rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<&Row> = self.rows.values().collect();
        let listed = |f: fn(&Listed) -> Option<String>| column(&rows, |r| r.listed.as_ref().and_then(f));
        let table = target.table("rm_products");
        let sql = format!(
            "WITH d AS (SELECT * FROM UNNEST($1::uuid[], $2::bool[], $3::bigint[], $4::uuid[], $5::text[], \
             $6::text[], $7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], \
             $13::text[], $14::timestamptz[], $15::timestamptz[], $16::bigint[]) \
             AS d(product_id, is_new, base_version, merchant_id, sku, name, description, price_minor, currency, \
             on_hand_set, on_hand_delta, reserved_delta, status, listed_at, updated_at, version)), \
             ins AS (INSERT INTO {table} (product_id, merchant_id, sku, name, description, price_minor, currency, \
             on_hand, reserved, status, listed_at, updated_at, version) \
             SELECT product_id, merchant_id, sku, name, description, price_minor, currency, \
             on_hand_set + on_hand_delta, reserved_delta, status, listed_at, updated_at, version \
             FROM d WHERE is_new ORDER BY product_id ON CONFLICT (product_id) DO NOTHING RETURNING product_id), \
             upd AS (UPDATE {table} AS t SET price_minor = COALESCE(d.price_minor, t.price_minor), \
             currency = COALESCE(d.currency, t.currency), \
             on_hand = COALESCE(d.on_hand_set, t.on_hand) + d.on_hand_delta, \
             reserved = t.reserved + d.reserved_delta, status = COALESCE(d.status, t.status), \
             updated_at = d.updated_at, version = d.version \
             FROM d WHERE NOT d.is_new AND t.product_id = d.product_id AND t.version = d.base_version \
             RETURNING t.product_id) \
             SELECT product_id FROM ins UNION ALL SELECT product_id FROM upd"
        );
        let written: Vec<Uuid> = sqlx::query_scalar(&sql)
            .bind(column(&rows, |r| r.stream.id))
            .bind(column(&rows, |r| r.listed.is_some()))
            .bind(column(&rows, |r| r.base_version))
            .bind(column(&rows, |r| r.listed.as_ref().map(|l| l.merchant_id)))
            .bind(listed(|l| Some(l.sku.clone())))
            .bind(listed(|l| Some(l.name.clone())))
            .bind(listed(|l| l.description.clone()))
            .bind(column(&rows, |r| r.price.as_ref().map(|p| p.0)))
            .bind(column(&rows, |r| r.price.as_ref().map(|p| p.1.clone())))
            .bind(column(&rows, |r| r.on_hand_set))
            .bind(column(&rows, |r| r.on_hand_delta))
            .bind(column(&rows, |r| r.reserved_delta))
            .bind(column(&rows, |r| r.status))
            .bind(column(&rows, |r| r.listed.as_ref().map(|l| l.listed_at)))
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
            listed: None,
            base_version,
            version: ev.version,
            price: None,
            on_hand_set: None,
            on_hand_delta: 0,
            reserved_delta: 0,
            status: None,
            updated_at: ev.recorded_at,
        }
    }
}
