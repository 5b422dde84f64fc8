use std::collections::BTreeSet;

use ordo_bench::generate::{generate, Shape};
use ordo_event_store::testing::TestDb;
use ordo_projectors::Projection;

#[tokio::test]
async fn a_generated_log_is_folded_by_every_projection_without_a_dead_letter() {
    let db = TestDb::new().await;
    ordo_projectors::migrate(&db.pool).await.unwrap();
    let shape = Shape { merchants: 2, products_per_merchant: 5, customers: 10, orders_per_batch: 10 };

    let appended = generate(&db.store(), 3_000, 2, shape).await.unwrap();

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(stored as u64, appended);
    assert!(appended >= 3_000);
    for projection in Projection::ALL {
        let report = ordo_projectors::rebuild(&db.pool, projection).await.unwrap();
        assert!(report.events > 0, "{projection} applied nothing");
    }
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&db.pool).await.unwrap();
    assert_eq!(dead, 0, "the projections refused generated events");
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM streams WHERE category = 'order'").fetch_one(&db.pool).await.unwrap();
    let projected: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_orders").fetch_one(&db.pool).await.unwrap();
    assert_eq!(projected, orders);
    let statuses: BTreeSet<String> = sqlx::query_scalar("SELECT DISTINCT status FROM rm_orders")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    for status in ["pending", "rejected", "confirmed", "cancelled", "paid", "shipped", "delivered"] {
        assert!(statuses.contains(status), "no {status} order in {statuses:?}");
    }
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_products").fetch_one(&db.pool).await.unwrap();
    assert_eq!(products, 2 * 2 * 5);
}
