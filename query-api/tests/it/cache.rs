//! The read cache: fresh after each projector commit, never older than a token, 304s without the
//! database, bounded, and cleared when its listener reconnects.

use std::time::{Duration, Instant};

use ordo_domain::{Order, Product};
use ordo_projectors::testing::{exec, Workload};
use ordo_query_api::cache::QueryCache;
use ordo_schemas::{AdjustStock, ConfirmOrder, Role, StockAdjustmentReason, StreamCategory, StreamRef};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::App;

/// Polls `GET path` until `done` holds for its body, or fails after 3 s with the last body.
async fn eventually(app: &App, path: &str, who: Option<(Role, Uuid)>, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let body: Value = app.get(path, who).send().await.unwrap().json().await.unwrap();
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} still answers {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the cache listens (it serves nothing before).
async fn live(cache: &QueryCache) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cache.stats().unwrap().live {
        assert!(Instant::now() < deadline, "the cache listener never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GETs `path` until an answer comes from the cache (a fill can lose to a notification of a
/// batch committed just before), after the projections caught up.
async fn cached(app: &App, path: &str, who: Option<(Role, Uuid)>) -> Value {
    ordo_projectors::testing::wait_caught_up(&app.db.pool, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let before = hits(app);
        let body: Value = app.get(path, who).send().await.unwrap().json().await.unwrap();
        if hits(app) > before {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} is never served from the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running query API with a listening cache and one product; the product's path.
async fn one_product() -> (App, Uuid, String) {
    let app = App::spawn().await;
    live(&app.cache).await;
    let w = Workload::setup(&app.db.store(), 1, 1).await;
    let product = w.all_products()[0];
    (app, product, format!("/v1/products/{product}"))
}

/// Renames a product in the read model directly, so no projector notification tells the cache.
async fn rename_behind_the_cache(pool: &PgPool, product: Uuid, name: &str) {
    sqlx::query("UPDATE rm_products SET name = $2 WHERE product_id = $1")
        .bind(product)
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
}

fn hits(app: &App) -> u64 {
    app.cache.stats().unwrap().hits
}

async fn projected_version(pool: &PgPool, projection: &str, stream: StreamRef) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM projection_progress \
         WHERE projection = $1 AND category = $2 AND stream_id = $3",
    )
    .bind(projection)
    .bind(stream.category.as_str())
    .bind(stream.id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_becomes_visible_through_the_cache_once_the_projector_commits() {
    let app = App::spawn().await;
    live(&app.cache).await;
    let store = app.db.store();
    let mut w = Workload::setup(&store, 1, 1).await;
    let product = w.all_products()[0];
    let order = w.order(&store, 0).await; // pending
    let customer = Some((Role::Customer, w.customers[0]));
    let product_path = format!("/v1/products/{product}");
    let order_path = format!("/v1/orders/{order}");
    let first = cached(&app, &product_path, None).await;
    let placed = cached(&app, &order_path, customer).await;
    assert_eq!(placed["status"], "pending");

    let stream = StreamRef::new(StreamCategory::Product, product);
    let adjust = AdjustStock { delta: 3, reason: StockAdjustmentReason::Restock };
    let v = exec::<Product>(&store, stream, adjust.into()).await.unwrap();
    let order_stream = StreamRef::new(StreamCategory::Order, order);
    let ov = exec::<Order>(&store, order_stream, ConfirmOrder {}.into()).await.unwrap();
    // once the read model holds the change, the cache must not keep the older row
    let deadline = Instant::now() + Duration::from_secs(3);
    while projected_version(&app.db.pool, "catalog", stream).await < v
        || projected_version(&app.db.pool, "orders", order_stream).await < ov
    {
        assert!(Instant::now() < deadline, "the projector did not apply the commands");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = eventually(&app, &product_path, None, |b| b["version"] == v).await;
    assert_eq!(body["on_hand"], first["on_hand"].as_i64().unwrap() + 3);
    let body = eventually(&app, &order_path, customer, |b| b["version"] == ov).await;
    assert_eq!(body["status"], "confirmed");
    // and the new rows are cached in turn
    let before = hits(&app);
    let again: Value = app.get(&product_path, None).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["version"], v);
    assert_eq!(hits(&app), before + 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_newer_than_the_cached_entry_is_never_answered_from_the_cache() {
    let app = App::spawn().await;
    live(&app.cache).await;
    let store = app.db.store();
    let mut w = Workload::setup(&store, 1, 1).await;
    let customer = Some((Role::Customer, w.customers[0]));
    let product = w.all_products()[0];
    let product_path = format!("/v1/products/{product}");
    let stream = StreamRef::new(StreamCategory::Product, product);
    for round in 0..5 {
        let id = w.order(&store, 7 * round).await; // pending
        let path = format!("/v1/orders/{id}");
        let cached_order = cached(&app, &path, customer).await;
        assert_eq!(cached_order["status"], "pending");
        let cached_product = cached(&app, &product_path, None).await;

        let v = exec::<Order>(&store, StreamRef::new(StreamCategory::Order, id), ConfirmOrder {}.into()).await.unwrap();
        assert!(v > cached_order["version"].as_i64().unwrap());
        let resp = app.get(&format!("{path}?consistency_token=order:{id}:{v}"), customer).send().await.unwrap();
        assert_eq!(resp.headers()["ordo-consistency"], "honoured", "round {round}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["version"], v, "round {round}: the cached version answered a newer token");
        assert_eq!(body["status"], "confirmed");

        let adjust = AdjustStock { delta: 1, reason: StockAdjustmentReason::Restock };
        let pv = exec::<Product>(&store, stream, adjust.into()).await.unwrap();
        assert!(pv > cached_product["version"].as_i64().unwrap());
        let resp =
            app.get(&format!("{product_path}?consistency_token=product:{product}:{pv}"), None).send().await.unwrap();
        assert_eq!(resp.headers()["ordo-consistency"], "honoured");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["version"], pv, "round {round}: the cached product answered a newer token");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_comes_from_the_cache_while_the_read_model_tables_are_gone() {
    let app = App::spawn().await;
    live(&app.cache).await;
    let store = app.db.store();
    let mut w = Workload::setup(&store, 1, 1).await;
    let customer = Some((Role::Customer, w.customers[0]));
    let products = w.all_products();
    let order = w.order(&store, 0).await;
    let product_path = format!("/v1/products/{}", products[0]);
    let order_path = format!("/v1/orders/{order}");
    let product = cached(&app, &product_path, None).await;
    let placed = cached(&app, &order_path, customer).await;

    // without its tables the database cannot answer these reads at all
    sqlx::query("ALTER TABLE rm_products RENAME TO rm_products_away").execute(&app.db.pool).await.unwrap();
    sqlx::query("ALTER TABLE rm_orders RENAME TO rm_orders_away").execute(&app.db.pool).await.unwrap();
    let uncached = app.get(&format!("/v1/products/{}", products[1]), None).send().await.unwrap();
    assert_eq!(uncached.status(), 500, "a read that reaches the database fails");

    let before = hits(&app);
    let resp = app
        .get(&product_path, None)
        .header("If-None-Match", format!("\"{}\"", product["version"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    let version = placed["version"].as_i64().unwrap();
    let resp = app
        .get(&format!("{order_path}?consistency_token=order:{order}:{version}"), customer)
        .header("If-None-Match", format!("\"{version}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["ordo-consistency"], "honoured");
    // authorisation is still checked on a cached row
    let stranger = app.get(&order_path, Some((Role::Customer, Uuid::new_v4()))).send().await.unwrap();
    assert_eq!(stranger.status(), 403);
    assert_eq!(hits(&app), before + 3);

    sqlx::query("ALTER TABLE rm_products_away RENAME TO rm_products").execute(&app.db.pool).await.unwrap();
    sqlx::query("ALTER TABLE rm_orders_away RENAME TO rm_orders").execute(&app.db.pool).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_cache_within_its_byte_bound() {
    let bound = 6 * 1024;
    let app = App::spawn_with_cache(|_| {}, Some(QueryCache::new(bound))).await;
    live(&app.cache).await;
    let store = app.db.store();
    let w = Workload::setup(&store, 1, 10).await;
    ordo_projectors::testing::wait_caught_up(&app.db.pool, Duration::from_secs(10)).await;
    let products = w.all_products();
    for _ in 0..3 {
        for p in &products {
            let resp = app.get(&format!("/v1/products/{p}"), None).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    }
    let stats = app.cache.stats().unwrap();
    assert!(stats.bytes <= bound, "{stats:?}");
    assert!(stats.entries > 0 && stats.entries < products.len() as u64, "{stats:?} for {} products", products.len());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_cache_listener_clears_what_it_may_have_missed() {
    let (app, product, path) = one_product().await;
    let first = cached(&app, &path, None).await;
    // a change the listener is never told about: the cache keeps answering the old row
    rename_behind_the_cache(&app.db.pool, product, "renamed behind the cache").await;
    let body: Value = app.get(&path, None).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["name"], first["name"], "the row is cached");

    let resets = app.cache.stats().unwrap().resets;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "one listener connection");
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.cache.stats().unwrap().resets == resets || !app.cache.stats().unwrap().live {
        assert!(Instant::now() < deadline, "the listener did not come back: {:?}", app.cache.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body: Value = app.get(&path, None).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["name"], "renamed behind the cache");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swap_empties_the_cache_of_its_projection() {
    let (app, product, path) = one_product().await;
    ordo_projectors::testing::wait_caught_up(&app.db.pool, Duration::from_secs(10)).await;
    let listed: String = sqlx::query_scalar("SELECT name FROM rm_products WHERE product_id = $1")
        .bind(product)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // a read model that drifted from the log (edited by hand), read and cached as it is
    rename_behind_the_cache(&app.db.pool, product, "drifted").await;
    let drifted = cached(&app, &path, None).await;
    assert_eq!(drifted["name"], "drifted");

    // the rebuild replaces the tables from the log; the cache must not keep the drifted row
    ordo_projectors::rebuild::rebuild(&app.db.pool, ordo_projectors::Projection::Catalog).await.unwrap();
    let rebuilt = eventually(&app, &path, None, |b| b["name"] != "drifted").await;
    assert_eq!(rebuilt["name"], listed.as_str());
}
