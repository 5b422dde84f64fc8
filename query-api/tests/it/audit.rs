//! The audit endpoints over a real database, driven through the router in process.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordo_domain::{Aggregate, Customer, Merchant, Order, Product};
use ordo_event_store::testing::TestDb;
use ordo_event_store::{EventStore, ExpectedVersion, NewEvent};
use ordo_schemas::{Actor, EventMetadata, Role, StreamCategory, StreamRef};
use ordo_service::JwtKeys;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

struct Audit {
    db: TestDb,
    keys: Arc<JwtKeys>,
}

impl Audit {
    async fn new() -> Self {
        Self { db: TestDb::new().await, keys: Arc::new(JwtKeys::from_secret(b"audit-secret")) }
    }

    fn store(&self) -> EventStore {
        self.db.store()
    }

    fn token(&self, role: Role) -> String {
        self.keys.mint(Uuid::new_v4(), role, chrono::Duration::minutes(5)).unwrap()
    }

    async fn get_as(&self, role: Option<Role>, uri: &str) -> (StatusCode, Value) {
        let app = ordo_query_api::audit::router(self.db.pool.clone(), self.keys.clone());
        let mut req = Request::get(uri);
        if let Some(role) = role {
            req = req.header("authorization", format!("Bearer {}", self.token(role)));
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 10 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn get(&self, uri: &str) -> Value {
        let (status, body) = self.get_as(Some(Role::Auditor), uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        body
    }

    /// Loads the aggregate, decides `command` and appends the result as its own transaction.
    async fn exec<A: Aggregate>(&self, stream: StreamRef, command: Value, correlation: Uuid) -> i64
    where
        A::Command: serde::de::DeserializeOwned,
    {
        let store = self.store();
        let history = store.read_stream(stream, 1).await.unwrap();
        let typed: Vec<A::Event> = history.iter().map(|e| e.decode().unwrap()).collect();
        let command: A::Command = serde_json::from_value(command).unwrap();
        let events = A::from_events(&typed).decide(&command).unwrap();
        let new = events
            .iter()
            .map(|e| {
                NewEvent::from_domain(
                    e,
                    EventMetadata {
                        event_id: Uuid::new_v4(),
                        correlation_id: correlation,
                        causation_id: None,
                        actor: Actor { id: Uuid::new_v4(), role: Role::Admin },
                        traceparent: None,
                        tracestate: None,
                    },
                )
            })
            .collect();
        store.append(stream, ExpectedVersion::Exact(history.len() as i64), new).await.unwrap().version
    }
}

fn address() -> Value {
    json!({"line1": "1 Main St", "city": "Lyon", "postal_code": "69001", "country": "FR"})
}

fn eur(amount: i64) -> Value {
    json!({"amount_minor": amount, "currency": "EUR"})
}

/// A customer, a merchant, a product with price and stock changes and a paid order, all in one
/// correlation; returns the streams.
async fn history(a: &Audit, correlation: Uuid) -> (StreamRef, StreamRef, StreamRef, StreamRef) {
    let customer = StreamRef::new(StreamCategory::Customer, Uuid::new_v4());
    let merchant = StreamRef::new(StreamCategory::Merchant, Uuid::new_v4());
    let product = StreamRef::new(StreamCategory::Product, Uuid::new_v4());
    let order = StreamRef::new(StreamCategory::Order, Uuid::new_v4());
    a.exec::<Customer>(
        customer,
        json!({"type": "RegisterCustomer", "data": {"customer_id": customer.id,
        "name": "Ada", "email": "ada@example.com", "shipping_address": address()}}),
        correlation,
    )
    .await;
    a.exec::<Merchant>(
        merchant,
        json!({"type": "RegisterMerchant", "data": {"merchant_id": merchant.id,
        "name": "Shop"}}),
        correlation,
    )
    .await;
    a.exec::<Product>(
        product,
        json!({"type": "ListProduct", "data": {"product_id": product.id,
        "merchant_id": merchant.id, "sku": "SKU-1", "name": "Lamp", "price": eur(1000), "initial_stock": 10}}),
        correlation,
    )
    .await;
    a.exec::<Product>(product, json!({"type": "ChangePrice", "data": {"price": eur(1200)}}), correlation).await;
    a.exec::<Product>(product, json!({"type": "AdjustStock", "data": {"delta": 5, "reason": "restock"}}), correlation)
        .await;
    a.exec::<Order>(
        order,
        json!({"type": "PlaceOrder", "data": {"order_id": order.id, "customer_id": customer.id,
        "merchant_id": merchant.id, "shipping_address": address(), "lines": [{"product_id": product.id,
        "merchant_id": merchant.id, "sku": "SKU-1", "name": "Lamp", "quantity": 2, "unit_price": eur(1200)}]}}),
        correlation,
    )
    .await;
    a.exec::<Product>(
        product,
        json!({"type": "ReserveStock", "data": {"order_id": order.id, "quantity": 2}}),
        correlation,
    )
    .await;
    a.exec::<Order>(order, json!({"type": "ConfirmOrder", "data": {}}), correlation).await;
    a.exec::<Order>(
        order,
        json!({"type": "PayOrder", "data": {"amount": eur(2400), "payment_reference": "p-1"}}),
        correlation,
    )
    .await;
    (customer, merchant, product, order)
}

fn path(s: StreamRef) -> String {
    format!("/v1/audit/streams/{}/{}", s.category, s.id)
}

#[tokio::test]
async fn stream_history_carries_metadata_and_chained_hashes_for_auditors_only() {
    let a = Audit::new().await;
    let (_, _, product, _) = history(&a, Uuid::new_v4()).await;
    let body = a.get(&format!("{}/events", path(product))).await;
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["type"], "ProductListed");
    assert_eq!(events[0]["version"], 1);
    assert!(events[0]["metadata"]["recorded_at"].is_string());
    assert!(events[0]["metadata"]["event_id"].is_string());
    assert_eq!(events[1]["prev_hash"], events[0]["hash"]);
    let ranged = a.get(&format!("{}/events?from_version=2&to_version=3", path(product))).await;
    assert_eq!(ranged["events"].as_array().unwrap().len(), 2);

    assert_eq!(a.get_as(Some(Role::Admin), &format!("{}/events", path(product))).await.0, StatusCode::OK);
    assert_eq!(a.get_as(Some(Role::Customer), &format!("{}/events", path(product))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(a.get_as(Some(Role::Merchant), &format!("{}/events", path(product))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(a.get_as(None, &format!("{}/events", path(product))).await.0, StatusCode::UNAUTHORIZED);
    let missing = format!("/v1/audit/streams/product/{}/events", Uuid::new_v4());
    assert_eq!(a.get_as(Some(Role::Auditor), &missing).await.0, StatusCode::NOT_FOUND);
    assert_eq!(a.get_as(Some(Role::Auditor), "/v1/audit/streams/cart/x/events").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn state_as_of_a_version_or_a_time_between_two_events_is_the_state_after_the_earlier_one() {
    let a = Audit::new().await;
    let (customer, merchant, product, order) = history(&a, Uuid::new_v4()).await;
    for stream in [customer, merchant, product, order] {
        let events = a.get(&format!("{}/events", path(stream))).await["events"].as_array().unwrap().clone();
        for (i, event) in events.iter().enumerate() {
            let version = i as i64 + 1;
            let by_version = a.get(&format!("{}/state?version={version}", path(stream))).await;
            assert_eq!(by_version["version"], version);
            let at = event["metadata"]["recorded_at"].as_str().unwrap();
            // The instant an event was recorded, and any instant before the next one, give its state.
            let by_time = a.get(&format!("{}/state?at={}", path(stream), urlencode(at))).await;
            assert_eq!(by_time["state"], by_version["state"], "{stream} at v{version}");
            if let Some(next) = events.get(i + 1) {
                let t0: chrono::DateTime<chrono::Utc> = at.parse().unwrap();
                let t1: chrono::DateTime<chrono::Utc> =
                    next["metadata"]["recorded_at"].as_str().unwrap().parse().unwrap();
                let between = t0 + (t1 - t0) / 2;
                let mid = a.get(&format!("{}/state?at={}", path(stream), urlencode(&between.to_rfc3339()))).await;
                assert_eq!(mid["state"], by_version["state"], "{stream} between v{version} and the next");
            }
        }
    }
    let product_now = a.get(&format!("{}/state", path(product))).await;
    assert_eq!(product_now["state"]["on_hand"], 15, "{product_now}");
    assert_eq!(product_now["state"]["reserved"], 2);
    let product_v2 = a.get(&format!("{}/state?version=2", path(product))).await;
    assert_eq!(product_v2["state"]["price"], eur(1200));
    assert_eq!(product_v2["state"]["on_hand"], 10);
    let before = a.get(&format!("{}/state?at=2000-01-01T00:00:00Z", path(order))).await;
    assert_eq!(before["version"], 0);
    assert_eq!(before["state"], Value::Null);
    let (status, problem) =
        a.get_as(Some(Role::Auditor), &format!("{}/state?version=1&at=2000-01-01T00:00:00Z", path(order))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_digest_proves_while_history_is_extended_and_fails_once_it_is_rewritten() {
    let a = Audit::new().await;
    let (_, _, product, _) = history(&a, Uuid::new_v4()).await;
    let digest = a.get(&format!("{}/digest", path(product))).await;
    assert_eq!(digest["version"], 4);
    let hash = digest["head_hash"].as_str().unwrap().to_owned();
    a.exec::<Product>(
        product,
        json!({"type": "AdjustStock", "data": {"delta": 1, "reason": "restock"}}),
        Uuid::new_v4(),
    )
    .await;
    let proof = a.get(&format!("{}/digest/proof?version=4&hash={hash}", path(product))).await;
    assert_eq!(proof["extends"], true, "{proof}");
    assert_eq!(proof["current_version"], 5);

    let mut tx = a.db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    sqlx::query(
        "UPDATE events SET data = jsonb_set(data, '{name}', '\"Forged\"') WHERE stream_id = $1 AND version = 1",
    )
    .bind(product.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    let proof = a.get(&format!("{}/digest/proof?version=4&hash={hash}", path(product))).await;
    assert_eq!(proof["extends"], false);
    assert_eq!(proof["broken"][0]["version"], 1);
    let verify = a.get("/v1/audit/verify").await;
    assert_eq!(verify["ok"], false);
    assert_eq!(verify["broken"].as_array().unwrap().len(), 1);
    assert_eq!(verify["broken"][0]["stream_id"], product.id.to_string());
    assert_eq!(verify["broken"][0]["problem"], "hash_mismatch");
    let (status, _) = a.get_as(Some(Role::Auditor), &format!("{}/digest/proof?version=0&hash=zz", path(product))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn search_by_correlation_returns_the_whole_flow_in_log_order_across_pages() {
    let a = Audit::new().await;
    let correlation = Uuid::new_v4();
    let (_, _, _, order) = history(&a, correlation).await;
    history(&a, Uuid::new_v4()).await;

    let mut seen = Vec::new();
    let mut uri = format!("/v1/audit/events?correlation_id={correlation}&limit=3");
    loop {
        let page = a.get(&uri).await;
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/audit/events?correlation_id={correlation}&limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9);
    let positions: Vec<i64> = seen.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let order_types: Vec<&str> =
        seen.iter().filter(|e| e["stream_id"] == order.id.to_string()).map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(order_types, vec!["OrderPlaced", "OrderConfirmed", "OrderPaid"]);
    assert!(seen.iter().any(|e| e["type"] == "StockReserved"));

    let placed = a.get("/v1/audit/events?type=OrderPlaced").await;
    assert_eq!(placed["items"].as_array().unwrap().len(), 2);
    for bad in [
        "/v1/audit/events?limit=0",
        "/v1/audit/events?limit=501",
        "/v1/audit/events?cursor=nothex",
        "/v1/audit/events?category=cart",
    ] {
        assert_eq!(a.get_as(Some(Role::Auditor), bad).await.0, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(a.get_as(Some(Role::Auditor), "/v1/audit/events?actor=not-a-uuid").await.0, StatusCode::BAD_REQUEST);
}
