//! Personal fields in answers: an order's shipping address reads in clear while the customer's
//! key exists and as `null` once it is destroyed, cached or not; the read model holds only the
//! sealed value. The audit API's events and the log subscription show them the same way, and as
//! stored (sealed, hashes verifiable) on request.

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
    assert!(ordo_schemas::SealedField::is_current(&stored), "the read model keeps the sealed value: {stored}");

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
    assert_eq!(events["events"][0]["data"]["shipping_address"], Value::Null, "{events}");
    let stored: Value = app
        .get(&format!("/v1/audit/streams/order/{order}/events?personal=stored"), admin())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let address = &stored["events"][0]["data"]["shipping_address"];
    assert!(ordo_schemas::SealedField::is_current(address), "as stored: what is hashed: {address}");
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

/// A customer registered with a unique email and address line, and an order of that customer
/// shipped there, both under one correlation id.
struct Registered {
    customer: Uuid,
    order: Uuid,
    correlation: Uuid,
    email: String,
    line1: String,
}

async fn registered_with_an_order(app: &App) -> Registered {
    let store = app.db.store();
    let (customer, order, correlation) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let tag = Uuid::new_v4().simple().to_string();
    let (email, line1) = (format!("audit-{tag}@example.com"), format!("{tag} Audit Lane"));
    let address = json!({"line1": line1, "city": "Berlin", "postal_code": "10115", "country": "DE"});
    let meta = || EventMetadata {
        event_id: Uuid::new_v4(),
        correlation_id: correlation,
        causation_id: None,
        actor: Actor { id: customer, role: Role::Customer },
        traceparent: None,
        tracestate: None,
    };
    let registered = NewEvent {
        event_type: "CustomerRegistered".into(),
        schema_version: 1,
        data: json!({"customer_id": customer, "name": "Ada Lovelace", "email": email, "shipping_address": address}),
        metadata: meta(),
    };
    let placed = NewEvent {
        event_type: "OrderPlaced".into(),
        schema_version: 1,
        data: json!({"order_id": order, "customer_id": customer, "merchant_id": Uuid::new_v4(),
            "lines": [{"product_id": Uuid::new_v4(), "sku": "SKU-1", "name": "thing", "quantity": 1,
                "unit_price": {"amount_minor": 500, "currency": "EUR"},
                "line_total": {"amount_minor": 500, "currency": "EUR"}}],
            "total": {"amount_minor": 500, "currency": "EUR"}, "shipping_address": address}),
        metadata: meta(),
    };
    let customer_stream = StreamRef::new(StreamCategory::Customer, customer);
    store.append(customer_stream, ExpectedVersion::NoStream, vec![registered]).await.unwrap();
    let order_stream = StreamRef::new(StreamCategory::Order, order);
    store.append(order_stream, ExpectedVersion::NoStream, vec![placed]).await.unwrap();
    Registered { customer, order, correlation, email, line1 }
}

/// The audit answers that hold the customer's and the order's events.
fn audit_event_routes(r: &Registered) -> [String; 3] {
    [
        format!("/v1/audit/streams/customer/{}/events", r.customer),
        format!("/v1/audit/streams/order/{}/events", r.order),
        format!("/v1/audit/events?correlation_id={}", r.correlation),
    ]
}

async fn audit_get(app: &App, path: &str) -> Value {
    let auditor = Some((Role::Auditor, Uuid::new_v4()));
    let resp = app.get(path, auditor).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    // personal data in clear is never kept by a cache on the way
    assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
    resp.json().await.unwrap()
}

/// The events of an audit answer: `events` of a stream, `items` of a search.
fn events_of(answer: &Value) -> Vec<Value> {
    answer.get("events").or_else(|| answer.get("items")).and_then(Value::as_array).cloned().unwrap_or_default()
}

fn hash_recomputes(event: &Value) -> bool {
    let envelope: ordo_schemas::EventEnvelope = serde_json::from_value(event.clone()).unwrap();
    hex::encode(ordo_event_store::verify::envelope_hash(&envelope).unwrap()) == envelope.hash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_show_personal_fields_in_clear_until_the_erasure_and_as_null_after() {
    let app = App::spawn().await;
    // subscribed before the appends: the shared reader's broadcast reveals them
    let mut live = crate::log_stream::Sse::open(&app, "?category=customer", None).await;
    let r = registered_with_an_order(&app).await;

    let customer_events = audit_get(&app, &audit_event_routes(&r)[0]).await;
    let registered = &events_of(&customer_events)[0]["data"];
    assert_eq!(registered["email"], json!(r.email), "{customer_events}");
    assert_eq!(registered["name"], "Ada Lovelace");
    assert_eq!(registered["shipping_address"]["line1"], json!(r.line1));
    let order_events = audit_get(&app, &audit_event_routes(&r)[1]).await;
    assert_eq!(events_of(&order_events)[0]["data"]["shipping_address"]["line1"], json!(r.line1), "{order_events}");
    let search = audit_get(&app, &audit_event_routes(&r)[2]).await;
    let found = events_of(&search);
    assert_eq!(found.len(), 2, "{search}");
    assert!(found.iter().all(|e| e["data"]["shipping_address"]["line1"] == json!(r.line1)), "{search}");
    let (_, streamed) = live.events(1, Duration::from_secs(20)).await.remove(0);
    assert_eq!(streamed["data"]["email"], json!(r.email), "{streamed}");

    // as stored: sealed, and every hash recomputes from the answer
    for route in audit_event_routes(&r) {
        let sep = if route.contains('?') { '&' } else { '?' };
        let stored = audit_get(&app, &format!("{route}{sep}personal=stored")).await;
        let text = stored.to_string();
        assert!(!text.contains(&r.email) && !text.contains(&r.line1), "{text}");
        assert!(events_of(&stored).iter().all(hash_recomputes), "{text}");
        assert!(
            events_of(&stored).iter().all(|e| ordo_schemas::SealedField::is_current(&e["data"]["shipping_address"])),
            "{text}"
        );
    }
    let mut stored =
        crate::log_stream::Sse::open(&app, &format!("?from=start&stream_id={}&personal=stored", r.customer), None)
            .await;
    let (_, sealed) = stored.events(1, Duration::from_secs(20)).await.remove(0);
    assert!(ordo_schemas::SealedField::is_current(&sealed["data"]["email"]), "{sealed}");
    assert!(hash_recomputes(&sealed));

    app.db.store().personal().erase(r.customer).await.unwrap();

    for route in audit_event_routes(&r) {
        let answer = audit_get(&app, &route).await;
        let text = answer.to_string();
        assert!(!text.contains(&r.email) && !text.contains(&r.line1), "{route}: {text}");
        assert!(!text.contains("\"sealed\""), "erased, not shown sealed: {text}");
        for event in events_of(&answer) {
            assert_eq!(event["data"]["shipping_address"], Value::Null, "{route}: {text}");
        }
    }
    let customer_events = audit_get(&app, &audit_event_routes(&r)[0]).await;
    let registered = &events_of(&customer_events)[0]["data"];
    assert_eq!((&registered["email"], &registered["name"]), (&Value::Null, &Value::Null), "{customer_events}");
    assert_eq!(registered["customer_id"], json!(r.customer), "what is not personal stays");
    let mut after = crate::log_stream::Sse::open(&app, &format!("?from=start&stream_id={}", r.customer), None).await;
    let (_, streamed) = after.events(1, Duration::from_secs(20)).await.remove(0);
    assert_eq!(streamed["data"]["email"], Value::Null, "{streamed}");
    assert!(!streamed.to_string().contains(&r.email));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_personal_view_is_refused_with_a_problem() {
    let app = App::spawn().await;
    let r = registered_with_an_order(&app).await;
    let auditor = Some((Role::Auditor, Uuid::new_v4()));
    for route in audit_event_routes(&r) {
        let sep = if route.contains('?') { '&' } else { '?' };
        let resp = app.get(&format!("{route}{sep}personal=clear"), auditor).send().await.unwrap();
        assert!(resp.status().is_client_error(), "{route}: {}", resp.status());
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{route}");
    }
    let resp =
        app.get("/v1/log/events?personal=clear", auditor).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "personal", "{problem}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_ciphertext_stays_sealed_in_the_audit_events_and_its_event_fails_verification() {
    let app = App::spawn().await;
    let r = registered_with_an_order(&app).await;
    // the email's ciphertext replaced by the name's: same key, wrong field
    let mut tx = app.db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    sqlx::query(
        "UPDATE events SET data = jsonb_set(data, '{email}', data -> 'name') \
         WHERE category = 'customer' AND stream_id = $1 AND version = 1",
    )
    .bind(r.customer)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    let answer = audit_get(&app, &audit_event_routes(&r)[0]).await;
    let data = &events_of(&answer)[0]["data"];
    assert!(
        ordo_schemas::SealedField::is_current(&data["email"]),
        "shown as stored, neither clear nor erased: {answer}"
    );
    assert_eq!(data["name"], "Ada Lovelace", "the other fields still reveal");
    let verify = audit_get(&app, &format!("/v1/audit/verify?category=customer&id={}", r.customer)).await;
    assert_eq!(verify["ok"], false, "{verify}");
    assert_eq!(verify["broken"][0]["version"], 1, "{verify}");
    assert_eq!(verify["broken"][0]["problem"], "hash_mismatch", "{verify}");
    // the state cannot be rebuilt honestly: the answer says which field of which version
    let resp = app.get(&format!("/v1/audit/streams/customer/{}/state", r.customer), admin()).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("personal field email of customer {} version 1 does not decrypt", r.customer)),
        "{problem}"
    );
    app.stop().await;
}
