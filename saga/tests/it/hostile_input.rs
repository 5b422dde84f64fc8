//! Hostile messages on every `ordo.*` topic of a real broker while the saga runs: it logs,
//! counts (`ordo_saga_outcomes_total{outcome="malformed"|"failed"}`) and skips each one, and
//! keeps deciding orders, including the one whose partition the garbage was keyed into.

use std::time::Duration;

use ordo_domain::OrderStatus;
use ordo_event_store::kafka::{producer_config, topics};
use ordo_schemas::{StreamCategory, StreamRef};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::{wait_until, World};

/// What a hostile message is, its key, its value (`None`: none at all) and the outcome it counts as.
type Garbage<'a> = (&'a str, Option<&'a str>, Option<Vec<u8>>, &'a str);

/// The value of a counter with exactly this label set in the process' Prometheus text.
fn counter(name_and_labels: &str) -> f64 {
    let text = ordo_service::ops::metrics_handle().render();
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_messages_on_every_topic_are_counted_and_skipped_and_orders_keep_being_decided() {
    let malformed = r#"ordo_saga_outcomes_total{outcome="malformed"}"#;
    let failed = r#"ordo_saga_outcomes_total{outcome="failed"}"#;
    let (malformed_before, failed_before) = (counter(malformed), counter(failed));
    let world = World::start().await;
    let product = world.product(10).await;
    let (saga, status) = world.saga("hostile");
    let victim = world.place(&[(product, 1)]).await;
    assert_eq!(world.decided(victim, Duration::from_secs(60)).await.status, OrderStatus::Confirmed);

    // a real envelope of the victim order, then bent every way
    let events = world.db.store().read_stream(StreamRef::new(StreamCategory::Order, victim), 1).await.unwrap();
    let envelope = serde_json::to_value(events[0].to_envelope().unwrap()).unwrap();
    let whole = serde_json::to_vec(&envelope).unwrap();
    let bent = |field: &str, value: serde_json::Value| {
        let mut e = envelope.clone();
        e[field] = value;
        e["version"] = json!(events.len() as i64 + 1);
        serde_json::to_vec(&e).unwrap()
    };
    let key = victim.to_string();
    let garbage: Vec<Garbage<'_>> = vec![
        ("malformed json", Some(&key), Some(b"{\"this is\": not json".to_vec()), "malformed"),
        ("truncated envelope", Some(&key), Some(whole[..whole.len() / 2].to_vec()), "malformed"),
        ("empty payload", Some(&key), Some(Vec::new()), "malformed"),
        ("no payload", Some(&key), None, "malformed"),
        ("wrong key", Some("' OR 1=1 --"), Some(whole.clone()), "malformed"),
        ("no key", None, Some(whole.clone()), "malformed"),
        ("unknown event type", Some(&key), Some(bent("type", json!("OrderTeleported"))), "failed"),
        ("future schema version", Some(&key), Some(bent("schema_version", json!(99))), "failed"),
        ("data of the wrong shape", Some(&key), Some(bent("data", json!({"lines": "all of them"}))), "failed"),
    ];
    let producer: FutureProducer =
        producer_config(&world.broker.bootstrap(), Duration::from_secs(10)).create().unwrap();
    let mut on_orders = (0.0, 0.0);
    for topic in topics() {
        for (_, key, payload, outcome) in &garbage {
            let mut record = FutureRecord::<str, [u8]>::to(topic);
            if let Some(k) = key {
                record = record.key(*k);
            }
            if let Some(p) = payload {
                record = record.payload(p.as_slice());
            }
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
            if topic == StreamCategory::Order.topic() {
                match *outcome {
                    "malformed" => on_orders.0 += 1.0,
                    _ => on_orders.1 += 1.0,
                }
            }
        }
    }

    // orders placed after the garbage are still decided, and the victim can still be cancelled
    let later = [world.place(&[(product, 2)]).await, world.place(&[(product, 20)]).await];
    assert_eq!(world.decided(later[0], Duration::from_secs(60)).await.status, OrderStatus::Confirmed);
    assert_eq!(world.decided(later[1], Duration::from_secs(60)).await.status, OrderStatus::Rejected);
    world.service.cancel_order(&world.as_customer(), victim, "changed mind".into()).await.unwrap();
    world.wait_for_stock(product, "the victim's reservation is released", |p| p.reservation(victim).is_none()).await;

    wait_until("every hostile message on ordo.orders was counted", Duration::from_secs(30), || {
        counter(malformed) - malformed_before >= on_orders.0 && counter(failed) - failed_before >= on_orders.1
    })
    .await;
    let p = world.stock(product).await;
    assert_eq!((p.on_hand, p.reserved), (10, 2), "only the confirmed later order holds stock");
    assert!(status.handled() >= 5, "the saga kept handling good events: {}", status.handled());
    let log = world.db.store().read_stream(StreamRef::new(StreamCategory::Order, victim), 1).await.unwrap();
    assert_eq!(log.len(), 3, "placed, confirmed, cancelled: nothing forged reached the log");
    saga.stop().await;
    world.shutdown().await;
}
