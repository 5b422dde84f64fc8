//! Hostile messages on every `ordo.*` topic of a real broker: malformed JSON, truncated
//! envelopes, unknown event types, future schema versions, wrong keys, empty and missing
//! payloads. The live projector dead-letters each one (parking the stream its key names), keeps
//! applying every other stream, and never stops.

use std::time::{Duration, Instant};

use ordo_domain::Product;
use ordo_event_store::kafka::{producer_config, topics};
use ordo_event_store::relay::{Relay, RelayConfig};
use ordo_event_store::testing::Broker;
use ordo_event_store::EventStore;
use ordo_projectors::consumer::{run_consumer, ConsumerOptions};
use ordo_projectors::testing::{diff_against_fold, eur, exec, Workload};
use ordo_projectors::{Projector, Target};
use ordo_schemas::{ListProduct, Sku, StreamCategory, StreamRef};
use ordo_service::shutdown::Shutdown;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use crate::db;

/// One hostile message: what it is, its key and its value (`None`: no value at all).
struct Hostile {
    what: &'static str,
    key: Option<String>,
    payload: Option<Vec<u8>>,
}

/// Every kind of bad message for a topic whose stream `victim` exists in the log.
async fn hostile_messages(store: &EventStore, victim: StreamRef) -> Vec<Hostile> {
    let last = store.read_stream(victim, 1).await.unwrap().pop().unwrap();
    let envelope = serde_json::to_value(last.to_envelope().unwrap()).unwrap();
    let mut next = envelope.clone();
    next["version"] = serde_json::json!(last.version + 1);
    let mut unknown = next.clone();
    unknown["type"] = serde_json::json!("Teleported");
    let mut future = next.clone();
    future["schema_version"] = serde_json::json!(99);
    let bytes = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
    let whole = bytes(&envelope);
    let key = Some(victim.id.to_string());
    vec![
        Hostile { what: "malformed json", key: key.clone(), payload: Some(b"{\"this is\": not json".to_vec()) },
        Hostile { what: "truncated envelope", key: key.clone(), payload: Some(whole[..whole.len() / 2].to_vec()) },
        Hostile { what: "unknown event type", key: key.clone(), payload: Some(bytes(&unknown)) },
        Hostile { what: "future schema version", key: key.clone(), payload: Some(bytes(&future)) },
        Hostile { what: "empty payload", key: key.clone(), payload: Some(Vec::new()) },
        Hostile { what: "no payload", key: key.clone(), payload: None },
        Hostile { what: "wrong key (not a uuid)", key: Some("' OR 1=1 --".into()), payload: Some(whole.clone()) },
        Hostile { what: "no key", key: None, payload: Some(b"\xff\xfe\x00garbage".to_vec()) },
        Hostile { what: "json but not an object", key: key.clone(), payload: Some(b"[1, 2, 3]".to_vec()) },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_on_every_topic_are_dead_lettered_and_every_other_stream_keeps_being_applied() {
    let db = db().await;
    let store = db.store();
    let mut broker = Broker::start().await;
    broker.create_topics(&topics(), 3).await;
    let relay_config =
        RelayConfig { brokers: broker.bootstrap(), poll_interval: Duration::from_millis(20), ..Default::default() };
    let relay = Relay::new(db.store(), relay_config);
    let relay_stop = Shutdown::new();
    let s = relay_stop.clone();
    let relay = tokio::spawn(async move { relay.run(s).await });

    let stop = Shutdown::new();
    let options = ConsumerOptions { brokers: broker.bootstrap(), group_id: "hostile".into(), batch_size: 20 };
    let (projector, s) = (Projector::new(db.pool.clone(), Target::all_live()), stop.clone());
    let consumer = tokio::spawn(async move { run_consumer(projector, options, s).await });

    let mut w = Workload::setup(&store, 2, 2).await;
    let victim_order = w.order(&store, 0).await; // stays pending
    let victim_product = Uuid::new_v4(); // not part of the workload, so nothing else touches it
    let listing = ListProduct {
        product_id: victim_product,
        merchant_id: w.merchants[0],
        sku: Sku::parse("VICTIM-1").unwrap(),
        name: "victim".into(),
        description: None,
        price: eur(100),
        initial_stock: 5,
    };
    exec::<Product>(&store, StreamRef::new(StreamCategory::Product, victim_product), listing.into()).await.unwrap();
    let victims = [
        (StreamCategory::Customer, w.customers[0]),
        (StreamCategory::Merchant, w.merchants[0]),
        (StreamCategory::Product, victim_product),
        (StreamCategory::Order, victim_order),
    ];
    let producer: FutureProducer = producer_config(&broker.bootstrap(), Duration::from_secs(10)).create().unwrap();
    let mut produced = Vec::new();
    for (category, id) in victims {
        for h in hostile_messages(&store, StreamRef::new(category, id)).await {
            let mut record = FutureRecord::<str, [u8]>::to(category.topic());
            if let Some(k) = &h.key {
                record = record.key(k.as_str());
            }
            if let Some(p) = &h.payload {
                record = record.payload(p.as_slice());
            }
            let delivery = producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
            produced.push((category, h.what, delivery.partition, delivery.offset));
        }
    }
    // good traffic on other streams after the garbage
    for n in 1..9 {
        w.order(&store, n).await;
    }

    let others = Workload { orders: w.orders[1..].to_vec(), ..w.clone() };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !diff_against_fold(&db.pool, &others).await.is_empty() {
        assert!(!consumer.is_finished(), "the projector stopped");
        assert!(
            Instant::now() < deadline,
            "other streams were not applied: {:?}",
            diff_against_fold(&db.pool, &others).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut missing = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        missing.clear();
        for (category, what, partition, offset) in &produced {
            let readers: i64 = match category {
                StreamCategory::Order => 2,
                StreamCategory::Product => 1,
                _ => 0,
            };
            let dead: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT projection) FROM dead_letters WHERE topic = $1 AND partition = $2 \
                 AND kafka_offset = $3",
            )
            .bind(category.topic())
            .bind(partition)
            .bind(offset)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            let consumed: Option<i64> = sqlx::query_scalar(
                "SELECT next_offset FROM projector_offsets WHERE group_id = 'hostile' AND topic = $1 AND partition = $2",
            )
            .bind(category.topic())
            .bind(partition)
            .fetch_optional(&db.pool)
            .await
            .unwrap();
            if dead != readers || consumed.is_none_or(|next| next <= *offset) {
                missing.push(format!(
                    "{what} on {}: {dead} dead letters (expected {readers}), next offset {consumed:?}",
                    category.topic()
                ));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));

    let parked: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT projection, stream_id FROM parked_streams ORDER BY projection, stream_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected = vec![
        ("catalog".to_owned(), victim_product),
        ("orders".to_owned(), victim_order),
        ("sales".to_owned(), victim_order),
    ];
    expected.sort();
    assert_eq!(parked, expected, "only the streams the hostile keys named are parked");

    assert!(!consumer.is_finished(), "the projector survived everything");
    stop.trigger();
    consumer.await.unwrap().unwrap();
    relay_stop.trigger();
    let _ = relay.await;
    broker.stop().await;
}
