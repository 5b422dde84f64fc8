//! Product commands: listing with SKU uniqueness, price, stock, discontinuation, ownership.

use ordo_schemas::{ProductEvent, Role, StreamCategory};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{eur, id_of, product_body, spawn_app};

#[tokio::test]
async fn a_merchant_lists_a_product_and_the_event_carries_what_was_sent() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;

    let r = app.post("/v1/products", &merchant.token, product_body("TSHIRT-RED", 1999, 7)).await;

    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = id_of(&r);
    assert_eq!(r.header("location"), Some(format!("http://127.0.0.1:8081/v1/products/{id}").as_str()));
    let events = app.events(StreamCategory::Product, id).await;
    let ProductEvent::ProductListed { merchant_id, sku, price, initial_stock, .. } = events[0].decode().unwrap() else {
        panic!("not a listing")
    };
    assert_eq!((merchant_id, sku.as_str(), price.amount_minor, initial_stock), (merchant.id, "TSHIRT-RED", 1999, 7));
}

#[tokio::test]
async fn a_sku_is_unique_per_merchant_but_not_across_merchants() {
    let app = spawn_app().await;
    let (acme, other) = (app.merchant().await, app.merchant().await);
    assert_eq!(app.post("/v1/products", &acme.token, product_body("MUG", 500, 1)).await.status, 201);

    let r = app.post("/v1/products", &acme.token, product_body("MUG", 600, 2)).await;
    assert_eq!((r.status, r.code()), (409, "already_exists"));

    let r = app.post("/v1/products", &other.token, product_body("MUG", 600, 2)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(app.event_count().await, 2 + 2);
}

#[tokio::test]
async fn listing_for_an_unregistered_merchant_is_422_and_customers_may_not_list() {
    let app = spawn_app().await;
    let ghost = app.party(Role::Merchant);
    let r = app.post("/v1/products", &ghost.token, product_body("X", 100, 1)).await;
    assert_eq!((r.status, r.fields()), (422, vec!["merchant_id".to_owned()]));

    let customer = app.party(Role::Customer);
    let r = app.post("/v1/products", &customer.token, product_body("X", 100, 1)).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
}

#[tokio::test]
async fn an_invalid_listing_lists_every_offending_field_at_once() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let body = json!({
        "sku": "has space",
        "name": "",
        "price": {"amount_minor": -5, "currency": "euro"},
        "initial_stock": -1
    });

    let r = app.post("/v1/products", &merchant.token, body).await;

    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(r.fields(), ["sku", "name", "price.amount_minor", "price.currency", "initial_stock"]);
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn the_owning_merchant_changes_the_price_but_not_its_currency() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 1000, 5).await;
    let path = format!("/v1/products/{product}/price");

    let r = app.post(&path, &merchant.token, json!({"price": eur(1200)})).await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"2\"")), "{:?}", r.body);
    assert_eq!(r.body["version"], 2);

    let r = app.post(&path, &merchant.token, json!({"price": {"amount_minor": 1200, "currency": "USD"}})).await;
    assert_eq!((r.status, r.code()), (422, "currency_mismatch"));
}

#[tokio::test]
async fn another_merchant_may_not_touch_my_product_but_an_admin_may() {
    let app = spawn_app().await;
    let (mine, theirs) = (app.merchant().await, app.merchant().await);
    let product = app.product(&mine, 1000, 5).await;

    for (path, body) in [
        (format!("/v1/products/{product}/price"), json!({"price": eur(1)})),
        (format!("/v1/products/{product}/stock"), json!({"delta": 1, "reason": "restock"})),
        (format!("/v1/products/{product}/discontinue"), json!({})),
    ] {
        let r = app.post(&path, &theirs.token, body).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{path}");
    }
    let admin = app.party(Role::Admin);
    let r = app
        .post(&format!("/v1/products/{product}/stock"), &admin.token, json!({"delta": 1, "reason": "restock"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn stock_adjustments_refuse_to_go_below_zero_and_unknown_reasons() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 1000, 5).await;
    let path = format!("/v1/products/{product}/stock");

    let r = app.post(&path, &merchant.token, json!({"delta": -3, "reason": "write_off"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app.post(&path, &merchant.token, json!({"delta": -3, "reason": "write_off"})).await;
    assert_eq!((r.status, r.code()), (422, "insufficient_stock"));
    assert_eq!(r.body["extra"]["on_hand"], 2);

    let r = app.post(&path, &merchant.token, json!({"delta": 0, "reason": "stolen"})).await;
    assert_eq!((r.status, r.fields()), (422, vec!["delta".to_owned(), "reason".to_owned()]));
}

#[tokio::test]
async fn discontinuing_twice_is_409_invalid_state_and_unknown_products_are_404() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 1000, 5).await;
    let path = format!("/v1/products/{product}/discontinue");

    let r = app.post(&path, &merchant.token, json!({})).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(2)));
    let r = app.post(&path, &merchant.token, json!({})).await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"));

    let r = app.post(&format!("/v1/products/{}/discontinue", Uuid::new_v4()), &merchant.token, json!({})).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
}
