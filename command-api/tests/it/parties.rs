//! `POST /v1/customers` and `POST /v1/merchants`.

use ordo_schemas::{ConsistencyToken, CustomerEvent, MerchantEvent, Role, StreamCategory};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{customer_body, id_of, spawn_app};

#[tokio::test]
async fn a_customer_registers_itself_and_gets_201_with_location_etag_and_a_consistency_token() {
    let app = spawn_app().await;
    let me = app.party(Role::Customer);

    let r = app.post("/v1/customers", &me.token, customer_body("Ada")).await;

    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(id_of(&r), me.id);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.header("location"), Some(format!("http://127.0.0.1:8081/v1/customers/{}/orders", me.id).as_str()));
    let token: ConsistencyToken = r.body["consistency_token"].as_str().unwrap().parse().unwrap();
    assert_eq!((token.stream.category, token.stream.id, token.version), (StreamCategory::Customer, me.id, 1));
    let stored = app.events(StreamCategory::Customer, me.id).await;
    assert!(!stored[0].data.to_string().contains("ada@example.com"), "stored sealed: {}", stored[0].data);
    let events = app.revealed_events(StreamCategory::Customer, me.id).await;
    let CustomerEvent::CustomerRegistered { name, email, .. } = events[0].decode::<CustomerEvent>().unwrap() else {
        panic!("not a registration")
    };
    assert_eq!((name.known().unwrap().as_str(), email.known().unwrap().as_str()), ("Ada", "ada@example.com"));
}

#[tokio::test]
async fn an_admin_registers_a_customer_under_the_id_in_the_body() {
    let app = spawn_app().await;
    let admin = app.party(Role::Admin);
    let id = Uuid::new_v4();
    let mut body = customer_body("Grace");
    body["id"] = json!(id);

    let r = app.post("/v1/customers", &admin.token, body).await;

    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(id_of(&r), id);
    let meta = app.last_metadata(StreamCategory::Customer, id).await;
    assert_eq!((meta.actor.id, meta.actor.role), (admin.id, Role::Admin));
}

#[tokio::test]
async fn registering_the_same_customer_twice_is_409_already_exists() {
    let app = spawn_app().await;
    let me = app.customer().await;

    let r = app.post("/v1/customers", &me.token, customer_body("Ada again")).await;

    assert_eq!((r.status, r.code()), (409, "already_exists"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(app.events(StreamCategory::Customer, me.id).await.len(), 1);
}

#[tokio::test]
async fn a_customer_cannot_register_under_another_id_and_a_merchant_cannot_register_customers() {
    let app = spawn_app().await;
    let me = app.party(Role::Customer);
    let mut body = customer_body("Mallory");
    body["id"] = json!(Uuid::new_v4());
    let r = app.post("/v1/customers", &me.token, body).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    let merchant = app.party(Role::Merchant);
    let r = app.post("/v1/customers", &merchant.token, customer_body("Mallory")).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn an_invalid_registration_lists_every_offending_field() {
    let app = spawn_app().await;
    let me = app.party(Role::Customer);
    let body = json!({
        "name": " ",
        "email": "not-an-email",
        "shipping_address": {"line1": "", "city": "Berlin", "postal_code": "10115", "country": "Germany"}
    });

    let r = app.post("/v1/customers", &me.token, body).await;

    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(r.fields(), ["name", "email", "shipping_address.line1", "shipping_address.country"]);
}

#[tokio::test]
async fn a_merchant_registers_itself_once() {
    let app = spawn_app().await;
    let me = app.party(Role::Merchant);

    let r = app.post("/v1/merchants", &me.token, json!({"name": "Acme"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("location"), Some(format!("http://127.0.0.1:8081/v1/merchants/{}/orders", me.id).as_str()));
    let events = app.events(StreamCategory::Merchant, me.id).await;
    assert!(matches!(events[0].decode::<MerchantEvent>().unwrap(), MerchantEvent::MerchantRegistered { .. }));

    let r = app.post("/v1/merchants", &me.token, json!({"name": "Acme"})).await;
    assert_eq!((r.status, r.code()), (409, "already_exists"));
    let r = app.post("/v1/merchants", &me.token, json!({})).await;
    assert_eq!((r.status, r.fields()), (422, vec!["name".to_owned()]));
}
