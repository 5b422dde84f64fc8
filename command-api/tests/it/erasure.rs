//! `POST /v1/customers/{id}/erasure`: who may erase, what is left readable, and that an erased
//! customer orders no more.

use ordo_schemas::{Role, StreamCategory};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{address, spawn_app, TestApp};

/// Rows of every table whose text form holds `needle`, as `table: count`.
async fn tables_containing(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for table in tables {
        // the table name comes from the catalog, quoted by the database; the needle is bound
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"))
            .bind(needle)
            .fetch_one(pool)
            .await
            .unwrap();
        if n > 0 {
            found.push(format!("{table}: {n}"));
        }
    }
    found
}

/// A customer with a unique email and one order; returns (token, customer id, order id, email).
async fn customer_with_order(app: &TestApp) -> (String, Uuid, Uuid, String) {
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 1999, 10).await;
    let me = app.party(Role::Customer);
    let email = format!("erase-{}@example.com", Uuid::new_v4().simple());
    let body = json!({"name": "Grace Hopper", "email": email, "shipping_address": address()});
    let r = app.post("/v1/customers", &me.token, body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = app.post("/v1/orders", &me.token, json!({"lines": [{"product_id": product, "quantity": 2}]})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let order = crate::helpers::id_of(&r);
    (me.token, me.id, order, email)
}

#[tokio::test]
async fn an_erased_customer_and_its_orders_keep_no_readable_personal_data_and_every_chain_verifies() {
    let app = spawn_app().await;
    let (token, customer, order, email) = customer_with_order(&app).await;
    let before = app.revealed_events(StreamCategory::Customer, customer).await;
    assert_eq!(before[0].data["email"], json!(email), "readable while the key exists");

    let r = app.post(&format!("/v1/customers/{customer}/erasure"), &token, json!({"reason": "ticket 7"})).await;

    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    let events = app.revealed_events(StreamCategory::Customer, customer).await;
    for field in ["name", "email", "shipping_address"] {
        assert_eq!(events[0].data[field], Value::Null, "{field}");
    }
    assert_eq!(events[1].event_type, "PersonalDataErased");
    assert_eq!(events[1].data["reason"], "ticket 7");
    assert_eq!(events[1].data["erased_by"], json!({"id": customer, "role": "customer"}));
    let orders = app.revealed_events(StreamCategory::Order, order).await;
    assert_eq!(orders[0].data["shipping_address"], Value::Null);
    assert_eq!(orders[0].data["total"]["amount_minor"], 2 * 1999, "figures stay");
    assert!(tables_containing(&app.db.pool, &email).await.is_empty());
    assert!(tables_containing(&app.db.pool, "Grace Hopper").await.is_empty());
    let report = ordo_event_store::verify::verify(&app.db.pool, None, None).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn an_erased_customer_cannot_order_nor_be_erased_twice() {
    let app = spawn_app().await;
    let (token, customer, _, _) = customer_with_order(&app).await;
    let path = format!("/v1/customers/{customer}/erasure");
    assert_eq!(app.post(&path, &token, json!({"reason": "asked"})).await.status, 200);

    let again = app.post(&path, &token, json!({"reason": "asked"})).await;
    assert_eq!((again.status, again.code()), (409, "invalid_state"), "{:?}", again.body);
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 100, 5).await;
    let body = json!({"lines": [{"product_id": product, "quantity": 1}], "shipping_address": address()});
    let r = app.post("/v1/orders", &token, body).await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"), "{:?}", r.body);
}

#[tokio::test]
async fn only_the_customer_itself_or_an_admin_may_erase_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let (_, customer, _, _) = customer_with_order(&app).await;
    let path = format!("/v1/customers/{customer}/erasure");
    let stranger = app.party(Role::Customer);
    let merchant = app.party(Role::Merchant);
    let admin = app.party(Role::Admin);

    assert_eq!(app.post(&path, &stranger.token, json!({"reason": "x"})).await.status, 403);
    assert_eq!(app.post(&path, &merchant.token, json!({"reason": "x"})).await.status, 403);
    let blank = app.post(&path, &admin.token, json!({"reason": " "})).await;
    assert_eq!((blank.status, blank.code()), (422, "validation_failed"), "{:?}", blank.body);
    let unknown = format!("/v1/customers/{}/erasure", Uuid::new_v4());
    assert_eq!(app.post(&unknown, &admin.token, json!({"reason": "x"})).await.status, 404);
    assert_eq!(app.post(&path, &admin.token, json!({"reason": "x"})).await.status, 200);
}

#[tokio::test]
async fn a_payment_reference_and_a_cancellation_reason_are_sealed_readable_until_the_erasure_and_null_after() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 1999, 10).await;
    let (token, customer, cancelled, _) = customer_with_order(&app).await;
    let me = crate::helpers::Party { id: customer, token: token.clone() };
    let paid = app.order(&me, product, 1).await;
    app.confirm(paid, product, 1).await;
    let reference = format!("iban-DE89-{}", Uuid::new_v4().simple());
    let reason = format!("moving to 7 Elm Road-{}", Uuid::new_v4().simple());
    let r = app
        .post(
            &format!("/v1/orders/{paid}/payment"),
            &token,
            json!({"amount": {"amount_minor": 1999, "currency": "EUR"}, "payment_reference": reference}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app.post(&format!("/v1/orders/{cancelled}/cancellation"), &token, json!({"reason": reason})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // stored sealed: nothing in the database holds the clear text
    for text in [&reference, &reason] {
        assert!(tables_containing(&app.db.pool, text).await.is_empty(), "{text} stored in clear");
    }
    let stored = app.events(StreamCategory::Order, paid).await;
    assert!(ordo_schemas::SealedField::is_current(&stored.last().unwrap().data["payment_reference"]));
    let payment = app.revealed_events(StreamCategory::Order, paid).await;
    assert_eq!(payment.last().unwrap().data["payment_reference"], json!(reference), "readable while the key exists");
    let cancellation = app.revealed_events(StreamCategory::Order, cancelled).await;
    assert_eq!(cancellation.last().unwrap().data["reason"], json!(reason));

    let r = app.post(&format!("/v1/customers/{customer}/erasure"), &token, json!({"reason": "ticket 8"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let payment = app.revealed_events(StreamCategory::Order, paid).await;
    assert_eq!(payment.last().unwrap().data["payment_reference"], Value::Null);
    assert_eq!(payment.last().unwrap().data["amount"]["amount_minor"], 1999, "figures stay");
    let cancellation = app.revealed_events(StreamCategory::Order, cancelled).await;
    assert_eq!(cancellation.last().unwrap().data["reason"], Value::Null);
    assert_eq!(cancellation.last().unwrap().data["cancelled_by"]["role"], "customer");

    // the order's lifecycle goes on after the erasure; free text given now is not kept
    let late = format!("late note-{}", Uuid::new_v4().simple());
    let r = app.post(&format!("/v1/orders/{paid}/cancellation"), &merchant.token, json!({"reason": late})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let stored = app.events(StreamCategory::Order, paid).await;
    assert_eq!(stored.last().unwrap().event_type, "OrderCancelled");
    assert_eq!(stored.last().unwrap().data["reason"], Value::Null);
    assert!(tables_containing(&app.db.pool, &late).await.is_empty());
    let report = ordo_event_store::verify::verify(&app.db.pool, None, None).await.unwrap();
    assert!(report.ok, "{report:?}");
}
