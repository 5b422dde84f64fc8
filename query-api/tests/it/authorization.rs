//! Who may read what, ETags, the catalog filters and the operational endpoints.

use std::time::Duration;

use ordo_projectors::testing::{wait_caught_up, Workload};
use ordo_schemas::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::{admin, App};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_see_only_their_own_orders_merchants_only_theirs_and_the_catalog_is_public() {
    let app = App::spawn().await;
    let store = app.db.store();
    let w = Workload::run(&store, 14).await;
    wait_caught_up(&app.db.pool, Duration::from_secs(30)).await;

    let order: Value =
        sqlx::query_scalar("SELECT to_jsonb(o) FROM rm_orders o LIMIT 1").fetch_one(&app.db.pool).await.unwrap();
    let id = order["order_id"].as_str().unwrap();
    let owner = Uuid::parse_str(order["customer_id"].as_str().unwrap()).unwrap();
    let seller = Uuid::parse_str(order["merchant_id"].as_str().unwrap()).unwrap();
    let stranger = *w.customers.iter().find(|c| **c != owner).unwrap();
    let other_seller = *w.merchants.iter().chain(w.products.keys()).find(|m| **m != seller).unwrap();
    let path = format!("/v1/orders/{id}");
    for (who, expected) in [
        (Some((Role::Customer, owner)), 200),
        (Some((Role::Merchant, seller)), 200),
        (Some((Role::Auditor, Uuid::new_v4())), 200),
        (admin(), 200),
        (Some((Role::Customer, stranger)), 403),
        (Some((Role::Merchant, other_seller)), 403),
        (None, 401),
    ] {
        let resp = app.get(&path, who).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), expected, "{who:?}");
    }
    let resp = app.get(&format!("/v1/orders/{}", Uuid::new_v4()), admin()).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app.get("/v1/orders/not-a-uuid", admin()).send().await.unwrap();
    assert_eq!(resp.status(), 400, "a malformed path id is invalid_path");
    let resp = app.http.get(format!("{}{path}", app.base)).bearer_auth("garbage").send().await.unwrap();
    assert_eq!(resp.status(), 401);

    for (list, who, expected) in [
        (format!("/v1/customers/{owner}/orders"), Some((Role::Customer, owner)), 200),
        (format!("/v1/customers/{owner}/orders"), admin(), 200),
        (format!("/v1/customers/{owner}/orders"), Some((Role::Customer, stranger)), 403),
        (format!("/v1/customers/{owner}/orders"), Some((Role::Auditor, owner)), 403),
        (format!("/v1/merchants/{seller}/orders"), Some((Role::Merchant, seller)), 200),
        (format!("/v1/merchants/{seller}/orders"), Some((Role::Merchant, other_seller)), 403),
        (format!("/v1/merchants/{seller}/orders"), Some((Role::Customer, owner)), 403),
        (format!("/v1/merchants/{seller}/sales"), Some((Role::Merchant, seller)), 200),
        (format!("/v1/merchants/{seller}/sales"), Some((Role::Customer, owner)), 403),
        (format!("/v1/merchants/{seller}/sales?from=2026-13-01"), admin(), 422),
        ("/v1/projections".to_owned(), admin(), 200),
        ("/v1/projections".to_owned(), Some((Role::Auditor, owner)), 200),
        ("/v1/projections".to_owned(), Some((Role::Customer, owner)), 403),
        ("/v1/projections".to_owned(), None, 401),
    ] {
        let resp = app.get(&list, who).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), expected, "{list} as {who:?}");
    }
    let mine: Value = app
        .get(&format!("/v1/customers/{owner}/orders?limit=500"), Some((Role::Customer, owner)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = mine["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|o| o["customer_id"] == owner.to_string()), "only the customer's own orders");

    // sales: every paid order of the merchant, by day
    let sales: Value = app
        .get(&format!("/v1/merchants/{seller}/sales"), Some((Role::Merchant, seller)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_orders WHERE merchant_id = $1 AND payment IS NOT NULL")
        .bind(seller)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let counted: i64 = sales["days"].as_array().unwrap().iter().map(|d| d["orders"].as_i64().unwrap()).sum();
    assert_eq!(counted, paid);

    // the catalog is public, filterable, and single products carry ETags
    let all: Value = app.get("/v1/products?limit=500", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), w.all_products().len());
    let found: Value = app.get("/v1/products?q=WIDGET%203", None).send().await.unwrap().json().await.unwrap();
    let found = found["items"].as_array().unwrap();
    assert_eq!(found.len(), w.merchants.len());
    assert!(found.iter().all(|p| p["name"].as_str().unwrap().contains("widget 3")));
    let by_sku: Value = app.get("/v1/products?q=sku-0-1", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(by_sku["items"].as_array().unwrap().len(), 1);
    let in_stock: Value = app.get("/v1/products?in_stock=true", None).send().await.unwrap().json().await.unwrap();
    assert!(in_stock["items"].as_array().unwrap().iter().all(|p| p["available"].as_i64().unwrap() > 0));
    let merchant = w.merchants[0];
    let theirs: Value =
        app.get(&format!("/v1/products?merchant_id={merchant}"), None).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["items"].as_array().unwrap().len(), 4);
    let resp = app.get("/v1/products?in_stock=maybe&merchant_id=x", None).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "every offending field is listed");

    let product = w.all_products()[0];
    let resp = app.get(&format!("/v1/products/{product}"), None).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", body["version"]));
    let resp = app.get(&format!("/v1/products/{product}"), None).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(resp.status(), 304);
    let resp = app.get(&format!("/v1/products/{product}"), None).header("If-None-Match", "\"0\"").send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let projections: Value = app.get("/v1/projections", admin()).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> =
        projections["projections"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "catalog", "sales"]);
    assert!(projections["projections"].as_array().unwrap().iter().all(|p| p["lag_events"] == 0));
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = app.get(path, None).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let doc: Value = app.get("/openapi.json", None).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/customers/{id}/orders"].is_object());
    app.stop().await;
}
