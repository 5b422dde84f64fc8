//! Hostile messages on every `ordo.*` topic of a real broker: malformed JSON, truncated
//! envelopes, unknown event types, future schema versions, wrong keys, empty and missing
//! payloads, signed with the event signing key as if the relay had gone wrong. The live projector
//! dead-letters each one (parking the stream its key names), keeps applying every other stream,
//! and never stops. A well-formed message nobody signed is dead-lettered without parking
//! anything, and the real event at its version is applied.

use std::time::{Duration, Instant};

use ordo_domain::Product;
use ordo_event_store::kafka::{producer_config, topics};
use ordo_event_store::relay::{Relay, RelayConfig};
use ordo_event_store::signing::SigningKey;
use ordo_event_store::testing::Broker;
use ordo_event_store::testing::TestDb;
use ordo_event_store::EventStore;
use ordo_projectors::consumer::{run_consumer, ConsumerOptions};
use ordo_projectors::testing::{diff_against_fold, eur, exec, Workload};
use ordo_projectors::{Projector, Target};
use ordo_schemas::envelope::headers;
use ordo_schemas::{ChangePrice, ListProduct, Sku, StreamCategory, StreamRef};
use ordo_service::shutdown::Shutdown;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;
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

/// Produces `h` to its category's topic, signed with `key` when given; where it landed.
async fn produce(
    producer: &FutureProducer,
    category: StreamCategory,
    h: &Hostile,
    key: Option<&SigningKey>,
) -> (i32, i64) {
    let mut record = FutureRecord::<str, [u8]>::to(category.topic());
    if let Some(k) = &h.key {
        record = record.key(k.as_str());
    }
    if let Some(p) = &h.payload {
        record = record.payload(p.as_slice());
    }
    if let Some(key) = key {
        let signature = key.sign(h.payload.as_deref().unwrap_or_default());
        let signed = OwnedHeaders::new().insert(Header { key: headers::SIGNATURE, value: Some(signature.as_str()) });
        record = record.headers(signed);
    }
    let delivery = producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    (delivery.partition, delivery.offset)
}

/// A broker, a relay publishing the test database's log to it, and a live projector of `group`.
struct Pipeline {
    broker: Broker,
    relay_stop: Shutdown,
    relay: JoinHandle<()>,
    stop: Shutdown,
    consumer: JoinHandle<Result<(), ordo_projectors::ProjectorError>>,
}

impl Pipeline {
    async fn start(db: &TestDb, group: &str) -> Self {
        let broker = Broker::start().await;
        broker.create_topics(&topics(), 3).await;
        let relay_config =
            RelayConfig { brokers: broker.bootstrap(), poll_interval: Duration::from_millis(20), ..Default::default() };
        let relay = Relay::new(db.store(), relay_config);
        let relay_stop = Shutdown::new();
        let s = relay_stop.clone();
        let relay = tokio::spawn(async move { relay.run(s).await });
        let stop = Shutdown::new();
        let options = ConsumerOptions { brokers: broker.bootstrap(), group_id: group.into(), batch_size: 20 };
        let (projector, s) = (Projector::new(db.pool.clone(), Target::all_live()), stop.clone());
        let consumer = tokio::spawn(async move { run_consumer(projector, options, s).await });
        Self { broker, relay_stop, relay, stop, consumer }
    }

    async fn stop(mut self) {
        assert!(!self.consumer.is_finished(), "the projector survived everything");
        self.stop.trigger();
        self.consumer.await.unwrap().unwrap();
        self.relay_stop.trigger();
        let _ = self.relay.await;
        self.broker.stop().await;
    }
}

fn listing(product_id: Uuid, merchant_id: Uuid, sku: &str) -> ListProduct {
    ListProduct {
        product_id,
        merchant_id,
        sku: Sku::parse(sku).unwrap(),
        name: sku.to_lowercase(),
        description: None,
        price: eur(100),
        initial_stock: 5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_message_the_relay_did_not_sign_is_dead_lettered_and_the_real_event_at_its_version_applied() {
    let db = db().await;
    let store = db.store();
    let pipeline = Pipeline::start(&db, "forged").await;
    let broker = &pipeline.broker;

    let merchant = Uuid::new_v4();
    let (victim, decoy) = (Uuid::new_v4(), Uuid::new_v4());
    let product = |id| StreamRef::new(StreamCategory::Product, id);
    exec::<Product>(&store, product(victim), listing(victim, merchant, "VICTIM-2").into()).await.unwrap();
    exec::<Product>(&store, product(decoy), listing(decoy, merchant, "DECOY-2").into()).await.unwrap();
    // a real price change of another product, re-aimed at the victim's next version: well formed
    exec::<Product>(&store, product(decoy), ChangePrice { price: eur(1) }.into()).await.unwrap();
    let model = store.read_stream(product(decoy), 2).await.unwrap().pop().unwrap();
    let mut forged = serde_json::to_value(model.to_envelope().unwrap()).unwrap();
    forged["stream_id"] = serde_json::json!(victim);
    forged["version"] = serde_json::json!(2);
    forged["metadata"]["event_id"] = serde_json::json!(Uuid::new_v4());
    let applied = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>("SELECT version, price_minor FROM rm_products WHERE product_id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied(victim).await.is_none() {
        assert!(Instant::now() < deadline, "the victim was never listed in the catalog");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer: FutureProducer = producer_config(&broker.bootstrap(), Duration::from_secs(10)).create().unwrap();
    let h = Hostile {
        what: "a well-formed price change nobody signed",
        key: Some(victim.to_string()),
        payload: Some(serde_json::to_vec(&forged).unwrap()),
    };
    let (partition, offset) = produce(&producer, StreamCategory::Product, &h, None).await;
    let dead = || {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM dead_letters WHERE topic = 'ordo.products' AND partition = $1 AND kafka_offset = $2",
            )
            .bind(partition)
            .bind(offset)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead().await == 0 {
        assert!(
            Instant::now() < deadline,
            "the forged message was not dead-lettered; catalog: {:?}",
            applied(victim).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the real version 2 of the victim comes after the forgery
    exec::<Product>(&store, product(victim), ChangePrice { price: eur(250) }.into()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = applied(victim).await;
        if now == Some((2, 250)) {
            break;
        }
        assert!(Instant::now() < deadline, "the real version 2 was not applied: {now:?} (a forgery was taken for it)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_streams").fetch_one(&db.pool).await.unwrap();
    assert_eq!(parked, 0, "a message nobody signed parks nothing");

    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_on_every_topic_are_dead_lettered_and_every_other_stream_keeps_being_applied() {
    let db = db().await;
    let store = db.store();
    let pipeline = Pipeline::start(&db, "hostile").await;
    let (broker, consumer) = (&pipeline.broker, &pipeline.consumer);

    let mut w = Workload::setup(&store, 2, 2).await;
    let victim_order = w.order(&store, 0).await; // stays pending
    let victim_product = Uuid::new_v4(); // not part of the workload, so nothing else touches it
    let listed = listing(victim_product, w.merchants[0], "VICTIM-1");
    exec::<Product>(&store, StreamRef::new(StreamCategory::Product, victim_product), listed.into()).await.unwrap();
    let victims = [
        (StreamCategory::Customer, w.customers[0]),
        (StreamCategory::Merchant, w.merchants[0]),
        (StreamCategory::Product, victim_product),
        (StreamCategory::Order, victim_order),
    ];
    let producer: FutureProducer = producer_config(&broker.bootstrap(), Duration::from_secs(10)).create().unwrap();
    let key = SigningKey::load(&db.pool).await.unwrap();
    let mut produced = Vec::new();
    for (category, id) in victims {
        for h in hostile_messages(&store, StreamRef::new(category, id)).await {
            let (partition, offset) = produce(&producer, category, &h, Some(&key)).await;
            produced.push((category, h.what, partition, offset));
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

    pipeline.stop().await;
}
