//! Read-your-writes through consistency tokens.

use std::time::{Duration, Instant};

use ordo_domain::Order;
use ordo_projectors::testing::{exec, Workload};
use ordo_schemas::{ConfirmOrder, ConsistencyToken, Role, StreamCategory, StreamRef};
use serde_json::Value;

use crate::App;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_read_with_its_token_shows_the_new_state_and_an_unwritten_version_answers_timeout() {
    let app = App::spawn().await;
    let store = app.db.store();
    let mut w = Workload::setup(&store, 1, 1).await;
    let customer = w.customers[0];
    for round in 0..5 {
        let id = w.order(&store, 0).await; // pending
        let token = ConsistencyToken::new(StreamRef::new(StreamCategory::Order, id), 1);
        let resp = app
            .get(&format!("/v1/orders/{id}?consistency_token={token}"), Some((Role::Customer, customer)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(resp.headers()["ordo-consistency"], "honoured");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "pending");

        let v = exec::<Order>(&store, StreamRef::new(StreamCategory::Order, id), ConfirmOrder {}.into()).await.unwrap();
        let token = ConsistencyToken::new(StreamRef::new(StreamCategory::Order, id), v);
        let resp = app
            .get(&format!("/v1/orders/{id}"), Some((Role::Customer, customer)))
            .header("Ordo-Consistency-Token", token.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["ordo-consistency"], "honoured");
        assert_eq!(resp.headers()["etag"], format!("\"{v}\"").as_str());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "confirmed");
        assert_eq!(body["version"], v);
    }

    // a version that is never written: the bounded wait gives up and says so
    let id = w.orders[0];
    let started = Instant::now();
    let resp = app
        .get(&format!("/v1/orders/{id}?consistency_token=order:{id}:99"), Some((Role::Customer, customer)))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["ordo-consistency"], "timeout");
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(5), "waited {waited:?}");

    // catalog reads honour product tokens the same way
    let product = w.all_products()[0];
    let resp =
        app.get(&format!("/v1/products/{product}?consistency_token=product:{product}:1"), None).send().await.unwrap();
    assert_eq!(resp.headers()["ordo-consistency"], "honoured");

    let resp = app
        .get(&format!("/v1/orders/{id}?consistency_token=order:nope:1"), Some((Role::Customer, customer)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_a_token_for_a_version_that_never_comes_is_refused_without_waiting() {
    let app = App::spawn().await;
    let store = app.db.store();
    let mut w = Workload::setup(&store, 2, 1).await;
    let (owner, stranger) = (w.customers[0], w.customers[1]);
    let id = w.order(&store, 0).await; // placed by the first customer
    let token = ConsistencyToken::new(StreamRef::new(StreamCategory::Order, id), 1);
    let resp = app
        .get(&format!("/v1/orders/{id}?consistency_token={token}"), Some((Role::Customer, owner)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the order is in the read model");

    let configured = ordo_query_api::Config::new("postgres://unused", "unused").consistency_wait();
    let started = Instant::now();
    let resp = app
        .get(&format!("/v1/orders/{id}?consistency_token=order:{id}:99"), Some((Role::Customer, stranger)))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_ne!(resp.headers().get("ordo-consistency").map(|v| v.to_str().unwrap()), Some("timeout"));
    assert!(waited < configured, "answered after {waited:?}, the consistency wait is {configured:?}");
    app.stop().await;
}
