//! Projection `catalog`: one row per product with price and stock figures.

use ordo_schemas::{ProductEvent, ProductStatus};
use sqlx::PgConnection;

use super::{expect_one, ApplyError, Applying};
use crate::model::Target;

pub(super) async fn apply(
    conn: &mut PgConnection,
    target: &Target,
    ev: &Applying<'_>,
    event: &ProductEvent,
) -> Result<(), ApplyError> {
    let table = target.table("rm_products");
    let at = ev.recorded_at;
    if let ProductEvent::ProductListed { product_id, merchant_id, sku, name, description, price, initial_stock } = event
    {
        if *product_id != ev.stream.id || ev.version != 1 {
            return Err(ApplyError::Poison(format!(
                "ProductListed for {product_id} in {} at v{}",
                ev.stream, ev.version
            )));
        }
        let sql = format!(
            "INSERT INTO {table} (product_id, merchant_id, sku, name, description, price_minor, currency, on_hand, \
             reserved, status, listed_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 'active', $9, $9, $10) ON CONFLICT (product_id) DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(product_id)
            .bind(merchant_id)
            .bind(sku.as_str())
            .bind(name)
            .bind(description)
            .bind(price.amount_minor)
            .bind(price.currency.as_str())
            .bind(i64::from(*initial_stock))
            .bind(at)
            .bind(ev.version)
            .execute(&mut *conn)
            .await?;
        return expect_one(done.rows_affected(), ev, "absent product");
    }
    // the SET clause uses $4 (a number) and, for prices, $5 (the currency)
    let (set, number, text): (&str, Option<i64>, Option<&str>) = match event {
        ProductEvent::ProductListed { .. } => return Ok(()),
        ProductEvent::ProductPriceChanged { new_price, .. } => {
            ("price_minor = $4, currency = $5", Some(new_price.amount_minor), Some(new_price.currency.as_str()))
        }
        ProductEvent::StockAdjusted { on_hand_after, .. } => ("on_hand = $4", Some(*on_hand_after), None),
        ProductEvent::StockReserved { quantity, .. } => ("reserved = reserved + $4", Some(i64::from(*quantity)), None),
        ProductEvent::StockReservationReleased { quantity, .. } => {
            ("reserved = reserved - $4", Some(i64::from(*quantity)), None)
        }
        ProductEvent::ReservedStockCommitted { quantity, .. } => {
            ("reserved = reserved - $4, on_hand = on_hand - $4", Some(i64::from(*quantity)), None)
        }
        ProductEvent::ProductDiscontinued {} => ("status = $4", None, Some(ProductStatus::Discontinued.as_str())),
    };
    let sql =
        format!("UPDATE {table} SET {set}, version = $1, updated_at = $2 WHERE product_id = $3 AND version = $1 - 1");
    let mut query = sqlx::query(&sql).bind(ev.version).bind(at).bind(ev.stream.id);
    if let Some(n) = number {
        query = query.bind(n);
    }
    if let Some(t) = text {
        query = query.bind(t);
    }
    let done = query.execute(&mut *conn).await?;
    expect_one(done.rows_affected(), ev, "product")
}
