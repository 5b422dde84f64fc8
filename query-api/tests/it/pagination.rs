//! Keyset pagination of the order lists and validation of list parameters.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_event_store::{EventStore, ExpectedVersion, NewEvent};
use ordo_projectors::testing::{address, eur, wait_caught_up};
use ordo_schemas::{Actor, EventMetadata, OrderEvent, OrderLine, Role, Sku, StreamCategory, StreamRef};
use serde_json::Value;
use uuid::Uuid;

use crate::App;

async fn place(store: &EventStore, customer: Uuid, merchant: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    let line = OrderLine {
        product_id: Uuid::new_v4(),
        sku: Sku::parse("SKU-1").unwrap(),
        name: "thing".into(),
        quantity: 1,
        unit_price: eur(500),
        line_total: eur(500),
    };
    let event = OrderEvent::OrderPlaced {
        order_id: id,
        customer_id: customer,
        merchant_id: merchant,
        lines: vec![line],
        total: eur(500),
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
    store
        .append(
            StreamRef::new(StreamCategory::Order, id),
            ExpectedVersion::NoStream,
            vec![NewEvent::from_domain(&event, meta)],
        )
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_a_thousand_orders_without_duplicates_or_gaps_while_new_orders_arrive() {
    let app = App::spawn().await;
    let store = app.db.store();
    let (customer, merchant) = (Uuid::new_v4(), Uuid::new_v4());
    let mut original = HashSet::new();
    for _ in 0..1000 {
        original.insert(place(&store, customer, merchant).await);
    }
    wait_caught_up(&app.db.pool, Duration::from_secs(60)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                place(&store, customer, merchant).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };

    let me = Some((Role::Customer, customer));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/v1/customers/{customer}/orders?limit=37");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let resp = app.get(&path, me).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 37);
        seen.extend(items.iter().map(|o| Uuid::parse_str(o["id"].as_str().unwrap()).unwrap()));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    stop.store(true, Ordering::SeqCst);
    let arrived = writer.await.unwrap();
    assert!(arrived > 0, "new orders arrived during the walk");
    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no order is listed twice");
    assert!(original.is_subset(&unique), "every order that existed before the walk is listed");
    assert!(pages >= 1000 / 37);

    // newest first
    let body: Value = app
        .get(&format!("/v1/merchants/{merchant}/orders"), Some((Role::Merchant, merchant)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 50, "default limit");
    let times: Vec<&str> = items.iter().map(|o| o["placed_at"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "newest first");

    for (query, field) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("status=lost", "status"),
        ("cursor=zz", "cursor"),
        ("status=paid&limit=x", "limit"),
    ] {
        let resp = app.get(&format!("/v1/customers/{customer}/orders?{query}"), me).send().await.unwrap();
        assert_eq!(resp.status(), 422, "{query}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "validation_failed");
        assert!(body["errors"].as_array().unwrap().iter().any(|e| e["field"] == field), "{query}: {body}");
    }
    let resp = app.get(&format!("/v1/customers/{customer}/orders?status=pending&limit=500"), me).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 500);
    app.stop().await;
}
