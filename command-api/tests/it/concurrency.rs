//! Concurrent writers on one stream through the real server.

use std::time::{Duration, Instant};

use ordo_command_api::{config::Secret, Config, RetryPolicy};
use ordo_domain::{Aggregate, Product};
use ordo_schemas::{ProductEvent, StreamCategory};
use ordo_service::http::Limits;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::{spawn_app, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_stock_adjustments_keep_on_hand_exact_and_never_negative() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let initial = 10i64;
    let product = app.product(&merchant, 100, initial).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        database_url: Secret::new(app.db.url.clone()),
        migrate: true,
        addr,
        jwt_secret: Some(Secret::new(String::from_utf8(SECRET.to_vec()).unwrap())),
        auth: ordo_service::AuthSettings::default(),
        max_connections: 10,
        limits: Limits::default(),
        retry: RetryPolicy::default(),
        writer: ordo_event_store::WriterOptions::default(),
        query_public_url: ordo_command_api::http::DEFAULT_QUERY_URL.to_owned(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(ordo_command_api::serve(listener, config, async move {
        let _ = stopped.await;
    }));

    // 25 restocks of +3 and 25 write-offs of -5, interleaved: at most 10 + 75 = 85 can be written
    // off, so at least 8 write-offs must be refused whatever the order.
    let deltas: Vec<i64> = (0..50).map(|i| if i % 2 == 0 { 3 } else { -5 }).collect();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let tasks: Vec<_> = deltas
        .iter()
        .map(|&delta| {
            let (client, token) = (client.clone(), merchant.token.clone());
            let url = format!("http://{addr}/v1/products/{product}/stock");
            let reason = if delta > 0 { "restock" } else { "write_off" };
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"delta": delta, "reason": reason}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (delta, status, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();

    let accepted: Vec<i64> = results.iter().filter(|(_, s, _)| *s == 200).map(|(d, _, _)| *d).collect();
    for (delta, status, body) in &results {
        assert!(
            *status == 200 || (*status == 422 && body["code"] == "insufficient_stock" && *delta < 0),
            "delta {delta}: {status} {body}"
        );
    }
    let rejected = results.len() - accepted.len();
    assert!(rejected >= 8, "only {rejected} write-offs refused");

    let loaded = app.commands.load::<Product>(ordo_schemas::StreamRef::new(StreamCategory::Product, product)).await;
    let loaded = loaded.unwrap();
    assert_eq!(loaded.state.state().unwrap().on_hand, initial + accepted.iter().sum::<i64>());
    assert_eq!(loaded.version, 1 + accepted.len() as i64);

    // fold the stream event by event: on-hand is never negative at any version
    let events = app.events(StreamCategory::Product, product).await;
    let mut state = Product::default();
    for (i, recorded) in events.iter().enumerate() {
        assert_eq!(recorded.version, i as i64 + 1, "versions have no gaps");
        let event: ProductEvent = recorded.decode().unwrap();
        state.evolve(&event);
        let s = state.state().unwrap();
        assert!(s.on_hand >= 0 && s.on_hand >= s.reserved, "version {}: on hand {}", recorded.version, s.on_hand);
    }

    let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let retries = metrics.lines().find(|l| l.starts_with("ordo_command_retries_total{command=\"AdjustStock\"}"));
    eprintln!(
        "50 concurrent adjustments: {} accepted, {rejected} refused in {elapsed:?}; {}",
        accepted.len(),
        retries.unwrap_or("no retries recorded")
    );

    drop(client);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").unwrap().unwrap();
}

/// A session appended to a product's stream in its own transaction and then stalled. A command
/// on that product is answered 503 `unavailable` with `Retry-After` in bounded time (it waited for
/// the writer lock), and the log recovers by itself: the server ends the idle transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_behind_a_stuck_writer_gets_503_in_bounded_time_and_the_log_recovers_by_itself() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 100, 10).await;
    let stream = ordo_schemas::StreamRef::new(StreamCategory::Product, product);

    let mut stuck = app.db.pool.begin().await.unwrap();
    let event = ordo_event_store::NewEvent {
        event_type: "StockAdjusted".into(),
        schema_version: 1,
        data: json!({"delta": 1, "reason": "restock", "on_hand_after": 11}),
        metadata: ordo_schemas::EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: ordo_schemas::Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    };
    let append = ordo_event_store::StreamAppend {
        stream,
        expected: ordo_event_store::ExpectedVersion::Any,
        events: vec![event],
    };
    ordo_event_store::EventStore::append_in(&mut stuck, vec![append], None).await.unwrap();

    let path = format!("/v1/products/{product}/stock");
    let body = json!({"delta": 2, "reason": "restock"});
    let waited = app.post(&path, &merchant.token, body.clone()).await;
    assert_eq!(waited.status, 503, "{:?}", waited.body);
    assert_eq!(waited.code(), "unavailable");
    assert!(waited.header("retry-after").is_some());

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = app.post(&path, &merchant.token, body.clone()).await;
        if resp.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the stuck transaction was never ended: {} {:?}", resp.status, resp.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stuck);
    let events = app.events(StreamCategory::Product, product).await;
    assert_eq!(events.len(), 2, "the stuck append was rolled back with its session, the retried one landed");
}
