//! `Idempotency-Key`: replays, reuse with another body, scoping and concurrent duplicates.

use ordo_schemas::{Role, StreamCategory};
use serde_json::json;

use crate::helpers::{customer_body, eur, id_of, spawn_app};

#[tokio::test]
async fn a_repeat_with_the_same_key_and_body_replays_the_first_answer_and_appends_nothing() {
    let app = spawn_app().await;
    let (merchant, customer) = (app.merchant().await, app.customer().await);
    let product = app.product(&merchant, 250, 10).await;
    let body = json!({"lines": [{"product_id": product, "quantity": 1}]});
    let key = [("idempotency-key", "order-1")];

    let first = app.post_with("/v1/orders", &customer.token, &body, &key).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let events = app.event_count().await;

    let again = app.post_with("/v1/orders", &customer.token, &body, &key).await;

    assert_eq!(again.status, 202);
    assert_eq!(again.body, first.body, "same id, version and token although no id was sent");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_idempotency_key_reused() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 250, 10).await;
    let path = format!("/v1/products/{product}/stock");
    let key = [("idempotency-key", "restock-42")];

    let first = app.post_with(&path, &merchant.token, &json!({"delta": 5, "reason": "restock"}), &key).await;
    assert_eq!(first.status, 200);
    let events = app.event_count().await;

    let other = app.post_with(&path, &merchant.token, &json!({"delta": 6, "reason": "restock"}), &key).await;
    assert_eq!((other.status, other.code()), (422, "idempotency_key_reused"));
    let elsewhere = format!("/v1/products/{product}/price");
    let other = app.post_with(&elsewhere, &merchant.token, &json!({"price": eur(300)}), &key).await;
    assert_eq!((other.status, other.code()), (422, "idempotency_key_reused"), "the path is part of the request");
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn keys_are_scoped_to_the_principal() {
    let app = spawn_app().await;
    let (a, b) = (app.party(Role::Customer), app.party(Role::Customer));
    let key = [("idempotency-key", "register")];

    let ra = app.post_with("/v1/customers", &a.token, &customer_body("A"), &key).await;
    let rb = app.post_with("/v1/customers", &b.token, &customer_body("A"), &key).await;

    assert_eq!((ra.status, rb.status), (201, 201));
    assert_eq!((id_of(&ra), id_of(&rb)), (a.id, b.id));
    assert_eq!(rb.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn concurrent_duplicates_with_one_key_append_once_and_all_get_the_first_answer() {
    let app = std::sync::Arc::new(spawn_app().await);
    let customer = app.party(Role::Customer);

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (app, token) = (app.clone(), customer.token.clone());
            tokio::spawn(async move {
                app.post_with("/v1/customers", &token, &customer_body("Ada"), &[("idempotency-key", "dup")]).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }

    assert!(answers.iter().all(|r| r.status == 201), "{:?}", answers.iter().map(|r| &r.body).collect::<Vec<_>>());
    assert!(answers.iter().all(|r| r.body == answers[0].body));
    assert_eq!(answers.iter().filter(|r| r.header("idempotent-replayed").is_none()).count(), 1);
    assert_eq!(app.events(StreamCategory::Customer, customer.id).await.len(), 1);
}
