//! Personal fields in answers: an order's shipping address reads in clear while the customer's
//! key exists and as `null` once it is destroyed, cached or not; the read model holds only the
//! sealed value.

use std::time::Duration;

use ordo_event_store::{ExpectedVersion, NewEvent};
use ordo_projectors::testing::{address, eur, wait_caught_up};
use ordo_schemas::{Actor, EventMetadata, OrderEvent, OrderLine, Role, Sku, StreamCategory, StreamRef};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{admin, App};

/// Appends an order of a new customer, with its address sealed, and waits for the projection.
async fn placed_order(app: &App) -> (Uuid, Uuid) {
    let store = app.db.store();
    let (customer, order) = (Uuid::new_v4(), Uuid::new_v4());
    let line = OrderLine {
        product_id: Uuid::new_v4(),
        sku: Sku::parse("SKU-1").unwrap(),
        name: "thing".into(),
        quantity: 2,
        unit_price: eur(500),
        line_total: eur(1000),
    };
    let placed = OrderEvent::OrderPlaced {
        order_id: order,
        customer_id: customer,
        merchant_id: Uuid::new_v4(),
        lines: vec![line],
        total: eur(1000),
        shipping_address: address().into(),
    };
    let meta = EventMetadata {
        event_id: Uuid::new_v4(),
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor { id: customer, role: Role::Customer },
        traceparent: None,
        tracestate: None,
    };
    let stream = StreamRef::new(StreamCategory::Order, order);
    store.append(stream, ExpectedVersion::NoStream, vec![NewEvent::from_domain(&placed, meta)]).await.unwrap();
    wait_caught_up(&app.db.pool, Duration::from_secs(30)).await;
    (customer, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orders_address_reads_in_clear_until_the_customer_is_erased_and_as_null_after() {
    let app = App::spawn().await;
    let store = app.db.store();
    let (customer, order) = placed_order(&app).await;
    let me = Some((Role::Customer, customer));
    let one = format!("/v1/orders/{order}");
    let list = format!("/v1/customers/{customer}/orders");

    let body: Value = app.get(&one, me).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["shipping_address"]["city"], "Berlin", "{body}");
    let page: Value = app.get(&list, me).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"][0]["shipping_address"]["city"], "Berlin", "{page}");
    let stored: Value = sqlx::query_scalar("SELECT shipping_address FROM rm_orders WHERE order_id = $1")
        .bind(order)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored["enc"], "v1", "the read model keeps the sealed value: {stored}");

    store.personal().erase(customer).await.unwrap();

    for _ in 0..2 {
        // the second round answers from the cache
        let body: Value = app.get(&one, me).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["shipping_address"], Value::Null, "{body}");
        assert_eq!(body["total"], json!({"amount_minor": 1000, "currency": "EUR"}));
        let page: Value = app.get(&list, me).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["items"][0]["shipping_address"], Value::Null, "{page}");
    }
    let state: Value =
        app.get(&format!("/v1/audit/streams/order/{order}/state"), admin()).send().await.unwrap().json().await.unwrap();
    let text = state.to_string();
    assert!(!text.contains("Berlin"), "{text}");
    let events: Value = app
        .get(&format!("/v1/audit/streams/order/{order}/events"), admin())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"][0]["data"]["shipping_address"]["enc"], "v1", "the audit log serves what is hashed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_taken_before_the_erasure_no_longer_matches_after_it() {
    let app = App::spawn().await;
    let (customer, order) = placed_order(&app).await;
    let me = Some((Role::Customer, customer));
    let one = format!("/v1/orders/{order}");

    let first = app.get(&one, me).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"1\"");
    // an unchanged order still answers 304, from the database path and then from the cache
    for _ in 0..2 {
        let resp = app.get(&one, me).header("If-None-Match", &etag).send().await.unwrap();
        assert_eq!(resp.status(), 304);
    }

    app.db.store().personal().erase(customer).await.unwrap();

    for _ in 0..2 {
        // the second round answers from the cache
        let resp = app.get(&one, me).header("If-None-Match", &etag).send().await.unwrap();
        assert_eq!(resp.status(), 200, "the answer changed: the address is gone");
        let erased = resp.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(erased, "\"1-erased\"");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["shipping_address"], Value::Null, "{body}");
        assert_eq!(body["version"], 1);
        let again = app.get(&one, me).header("If-None-Match", &erased).send().await.unwrap();
        assert_eq!(again.status(), 304, "the erased answer is cacheable in its turn");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orders_payment_reference_and_cancellation_reason_read_in_clear_until_the_erasure_and_as_null_after() {
    let app = App::spawn().await;
    let store = app.db.store();
    let (customer, order) = placed_order(&app).await;
    let meta = || EventMetadata {
        event_id: Uuid::new_v4(),
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor { id: customer, role: Role::Customer },
        traceparent: None,
        tracestate: None,
    };
    let stream = StreamRef::new(StreamCategory::Order, order);
    let reference = format!("ref-{}", Uuid::new_v4().simple());
    let reason = format!("reason-{}", Uuid::new_v4().simple());
    let events = [
        OrderEvent::OrderConfirmed {},
        OrderEvent::OrderPaid { amount: eur(1000), payment_reference: reference.clone().into() },
        OrderEvent::OrderCancelled {
            reason: reason.clone().into(),
            cancelled_by: Actor { id: customer, role: Role::Customer },
        },
    ];
    // appended apart from the OrderPlaced: the store finds the order's customer in the log
    let events = events.iter().map(|e| NewEvent::from_domain(e, meta())).collect();
    store.append(stream, ExpectedVersion::Exact(1), events).await.unwrap();
    wait_caught_up(&app.db.pool, Duration::from_secs(30)).await;
    let me = Some((Role::Customer, customer));
    let one = format!("/v1/orders/{order}");

    let body: Value = app.get(&one, me).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["payment"]["payment_reference"], json!(reference), "{body}");
    assert_eq!(body["cancellation"]["reason"], json!(reason), "{body}");
    for text in [&reference, &reason] {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%') \
             + (SELECT count(*) FROM rm_orders WHERE payment::text LIKE '%' || $1 || '%' \
                OR cancellation::text LIKE '%' || $1 || '%')",
        )
        .bind(text)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "{text} is stored in clear");
    }

    store.personal().erase(customer).await.unwrap();

    for _ in 0..2 {
        let body: Value = app.get(&one, me).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["payment"]["payment_reference"], Value::Null, "{body}");
        assert_eq!(body["payment"]["amount"]["amount_minor"], 1000, "{body}");
        assert_eq!(body["cancellation"]["reason"], Value::Null, "{body}");
        assert_eq!(body["cancellation"]["cancelled_by"]["role"], "customer", "{body}");
        assert_eq!(body["status"], "cancelled");
    }
    let state: Value =
        app.get(&format!("/v1/audit/streams/order/{order}/state"), admin()).send().await.unwrap().json().await.unwrap();
    let text = state.to_string();
    assert!(!text.contains(&reference) && !text.contains(&reason), "{text}");
    app.stop().await;
}
