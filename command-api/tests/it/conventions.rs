//! HTTP conventions: `Location` on the query API.

use std::sync::Arc;

use ordo_command_api::{router, AppState};
use ordo_schemas::Role;
use ordo_service::http::Limits;
use serde_json::json;

use crate::helpers::{customer_body, id_of, product_body, spawn_app};

#[tokio::test]
async fn creations_answer_a_location_on_the_query_api_at_its_configured_url() {
    let mut app = spawn_app().await;
    let state =
        AppState::new(app.commands.clone(), Arc::new(app.keys.clone())).with_query_url("https://read.example.com/api/");
    app.router = router(state, Limits::default());
    let base = "https://read.example.com/api";

    let merchant = app.party(Role::Merchant);
    let r = app.post("/v1/merchants", &merchant.token, json!({"name": "Acme"})).await;
    assert_eq!(r.header("location"), Some(format!("{base}/v1/merchants/{}/orders", merchant.id).as_str()));
    let customer = app.party(Role::Customer);
    let r = app.post("/v1/customers", &customer.token, customer_body("Ada")).await;
    assert_eq!(r.header("location"), Some(format!("{base}/v1/customers/{}/orders", customer.id).as_str()));
    let r = app.post("/v1/products", &merchant.token, product_body("SKU-1", 500, 3)).await;
    let product = id_of(&r);
    assert_eq!(r.header("location"), Some(format!("{base}/v1/products/{product}").as_str()));
    let r = app.post("/v1/orders", &customer.token, json!({"lines": [{"product_id": product, "quantity": 1}]})).await;
    assert_eq!((r.status, r.header("location")), (202, Some(format!("{base}/v1/orders/{}", id_of(&r)).as_str())));
}
