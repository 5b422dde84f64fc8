//! The live projector as a Kafka consumer-group member, fed by the relay through a real broker.

use std::time::{Duration, Instant};

use ordo_domain::Order;
use ordo_event_store::kafka::{producer_config, topics};
use ordo_event_store::relay::{Relay, RelayConfig};
use ordo_event_store::signing::SigningKey;
use ordo_event_store::testing::{duplicate_every_message, read_all, until, Broker, TestDb};
use ordo_projectors::consumer::{run_consumer, ConsumerOptions};
use ordo_projectors::testing::{diff_against_fold, exec, snapshot, wait_caught_up, Workload};
use ordo_projectors::{projection_status, retry_parked, Projector, Target};
use ordo_schemas::envelope::headers;
use ordo_schemas::{ConfirmOrder, StreamCategory, StreamRef};
use ordo_service::shutdown::Shutdown;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Row;
use tokio::task::JoinHandle;

use crate::db;

struct Stack {
    broker: Broker,
    relay_stop: Shutdown,
    relay: JoinHandle<()>,
}

async fn stack(db: &TestDb) -> Stack {
    let broker = Broker::start().await;
    broker.create_topics(&topics(), 3).await;
    let config =
        RelayConfig { brokers: broker.bootstrap(), poll_interval: Duration::from_millis(20), ..Default::default() };
    let relay = Relay::new(db.store(), config);
    let relay_stop = Shutdown::new();
    let stop = relay_stop.clone();
    let relay = tokio::spawn(async move { relay.run(stop).await });
    Stack { broker, relay_stop, relay }
}

impl Stack {
    async fn stop(mut self) {
        self.relay_stop.trigger();
        let _ = self.relay.await;
        self.broker.stop().await;
    }
}

fn consumer(db: &TestDb, brokers: String, group: &str, batch: usize) -> (Shutdown, JoinHandle<()>) {
    let stop = Shutdown::new();
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    let options = ConsumerOptions { brokers, group_id: group.to_owned(), batch_size: batch };
    let s = stop.clone();
    let task = tokio::spawn(async move { run_consumer(projector, options, s).await.unwrap() });
    (stop, task)
}

async fn offsets_total(pool: &sqlx::PgPool, group: &str) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(sum(next_offset), 0)::bigint FROM projector_offsets WHERE group_id = $1")
        .bind(group)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_projection_through_the_broker_equals_the_fold_and_redelivery_changes_nothing() {
    let db = db().await;
    let stack = stack(&db).await;
    let (stop, task) = consumer(&db, stack.broker.bootstrap(), "ordo-projectors", 100);
    let w = Workload::run(&db.store(), 35).await;
    wait_caught_up(&db.pool, Duration::from_secs(60)).await;
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
    stop.trigger();
    task.await.unwrap();

    let before = snapshot(&db.pool).await;
    let applied: i64 = sqlx::query_scalar("SELECT sum(events_applied)::bigint FROM projection_state")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let consumed = offsets_total(&db.pool, "ordo-projectors").await;
    assert!(consumed > 0);

    // a second group reads every message again from the start
    let (stop, task) = consumer(&db, stack.broker.bootstrap(), "redelivery", 7);
    until("the redelivery group to read everything", Duration::from_secs(60), || async {
        offsets_total(&db.pool, "redelivery").await >= consumed
    })
    .await;
    stop.trigger();
    task.await.unwrap();
    assert_eq!(snapshot(&db.pool).await, before, "redelivered events change no row");
    let applied_after: i64 = sqlx::query_scalar("SELECT sum(events_applied)::bigint FROM projection_state")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied_after, applied);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&db.pool).await.unwrap();
    assert_eq!(dead, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_projector_converges_after_the_broker_comes_back_empty() {
    let db = db().await;
    let mut stack = stack(&db).await;
    let store = db.store();
    let mut w = Workload::setup(&store, 3, 2).await;
    let (stop, task) = consumer(&db, stack.broker.bootstrap(), "ordo-projectors", 20);
    for n in 0..30 {
        w.order(&store, n).await;
    }
    wait_caught_up(&db.pool, Duration::from_secs(60)).await;
    assert!(offsets_total(&db.pool, "ordo-projectors").await > 0);

    // The broker loses everything: topics, messages, committed offsets, producer ids.
    stack.broker.restart().await;
    for n in 30..60 {
        w.order(&store, n).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let diff = diff_against_fold(&db.pool, &w).await;
        if diff.is_empty() {
            break;
        }
        assert!(!task.is_finished(), "the projector stopped");
        if Instant::now() > deadline {
            let incarnations: Vec<(i64, String)> =
                sqlx::query_as("SELECT incarnation, reason FROM relay_incarnations").fetch_all(&db.pool).await.unwrap();
            let offsets: Vec<(String, i32, i64, i64)> = sqlx::query_as(
                "SELECT topic, partition, next_offset, incarnation FROM projector_offsets ORDER BY 1, 2",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            panic!(
                "the read models never converged after the broker came back empty: {} differences, first {:?}; \
                 relay incarnations {incarnations:?}; projector offsets {offsets:?}",
                diff.len(),
                diff.first()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&db.pool).await.unwrap();
    assert_eq!(dead, 0, "republished messages are signed and skipped by version, never dead-lettered");
    stop.trigger();
    task.await.unwrap();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_aborted_mid_batch_and_restarted_ends_equal_to_the_fold() {
    let db = db().await;
    let stack = stack(&db).await;
    let mut w = Workload::setup(&db.store(), 3, 2).await;
    let (_stop, task) = consumer(&db, stack.broker.bootstrap(), "ordo-projectors", 5);
    let writer = {
        let store = db.store();
        let mut w = w.clone();
        tokio::spawn(async move {
            for n in 0..40 {
                w.order(&store, n).await;
            }
            w
        })
    };
    until("some batches to commit", Duration::from_secs(60), || async {
        let n: Option<i64> = sqlx::query_scalar("SELECT sum(events_applied)::bigint FROM projection_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        n.unwrap_or(0) > 40
    })
    .await;
    task.abort();
    let _ = task.await;
    w = writer.await.unwrap();
    let (stop, task) = consumer(&db, stack.broker.bootstrap(), "ordo-projectors", 5);
    wait_caught_up(&db.pool, Duration::from_secs(60)).await;
    stop.trigger();
    task.await.unwrap();
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_parks_only_its_stream_and_retry_parked_applies_it_from_the_log() {
    let db = db().await;
    let stack = stack(&db).await;
    let store = db.store();
    let (stop, task) = consumer(&db, stack.broker.bootstrap(), "ordo-projectors", 50);
    let mut w = Workload::setup(&store, 2, 2).await;
    let victim = w.order(&store, 0).await; // stays pending
    wait_caught_up(&db.pool, Duration::from_secs(60)).await;

    let producer: FutureProducer =
        producer_config(&stack.broker.bootstrap(), Duration::from_secs(10)).create().unwrap();
    let key = victim.to_string();
    let garbage = b"{\"this is\": not an envelope".to_vec();
    // signed, as if the relay itself had published it: a poison event, not a forgery
    let signature = SigningKey::load(&db.pool).await.unwrap().sign(&garbage);
    let signed = OwnedHeaders::new().insert(Header { key: headers::SIGNATURE, value: Some(signature.as_str()) });
    producer
        .send(FutureRecord::to("ordo.orders").key(&key).payload(&garbage).headers(signed), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let victim_stream = StreamRef::new(StreamCategory::Order, victim);
    exec::<Order>(&store, victim_stream, ConfirmOrder {}.into()).await.unwrap();
    for n in 1..8 {
        w.order(&store, n).await;
    }

    until("the victim's next event to be held back", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE kind = 'parked' AND stream_id = $1")
            .bind(victim)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        n >= 2 // once per projection reading orders
    })
    .await;
    let others = Workload { orders: w.orders[1..].to_vec(), ..w.clone() };
    until("the other streams to keep up", Duration::from_secs(60), || async {
        diff_against_fold(&db.pool, &others).await.is_empty()
    })
    .await;

    let poison = sqlx::query(
        "SELECT projection, topic, partition, kafka_offset, payload, error FROM dead_letters \
         WHERE kind = 'poison' ORDER BY projection",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(poison.len(), 2, "one poison row per projection reading orders");
    for row in &poison {
        assert_eq!(row.get::<Option<String>, _>("topic").as_deref(), Some("ordo.orders"));
        assert!(row.get::<Option<i64>, _>("kafka_offset").is_some());
        assert_eq!(row.get::<Vec<u8>, _>("payload"), garbage);
        assert!(row.get::<String, _>("error").contains("envelope"));
    }
    let parked: Vec<(String, uuid::Uuid)> =
        sqlx::query_as("SELECT projection, stream_id FROM parked_streams ORDER BY projection")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(parked, [("orders".to_owned(), victim), ("sales".to_owned(), victim)]);
    let version: i64 = sqlx::query_scalar("SELECT version FROM rm_orders WHERE order_id = $1")
        .bind(victim)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(version, 1, "the parked stream is not applied");
    let status = projection_status(&db.pool).await.unwrap();
    assert_eq!(status.iter().find(|s| s.name == "orders").unwrap().status, "degraded");

    let outcomes = retry_parked(&db.pool, None, None).await.unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.unparked && o.applied == 1), "{outcomes:?}");
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(open, 0);
    wait_caught_up(&db.pool, Duration::from_secs(10)).await;
    stop.trigger();
    task.await.unwrap();
    stack.stop().await;
}

/// A projector process that starts after the broker came back empty, whose group holds a
/// commit of the old log on the new broker (a late commit: it counts messages of a partition
/// that no longer exists), must not start reading the re-created partition there. Here the old
/// log held duplicates, so the stale offsets lie inside the republished partitions, past events
/// the projector never applied: read from the stale offset, those orders never reach the read
/// models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_started_after_the_broker_came_back_empty_is_not_misled_by_a_stale_commit_of_the_old_log() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let db = db().await;
    let mut stack = stack(&db).await;
    let store = db.store();
    let mut w = Workload::setup(&store, 3, 2).await;
    let orders = StreamCategory::Order.topic();
    let (stop, task) = consumer(&db, stack.broker.bootstrap(), "ordo-projectors", 20);
    for n in 0..20 {
        w.order(&store, n).await;
    }
    wait_caught_up(&db.pool, Duration::from_secs(60)).await;
    let ends = duplicate_every_message(&stack.broker.bootstrap(), orders).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM projector_offsets WHERE group_id = 'ordo-projectors' AND topic = $1 \
             ORDER BY 1",
        )
        .bind(orders)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        if ends.iter().filter(|(_, end)| *end > 0).all(|e| stored.contains(e)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projector did not read the duplicates: ends {ends:?}, stored {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The projector process ends; what it committed last is the old log's offsets.
    stop.trigger();
    task.await.unwrap();
    let stale: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM projector_offsets WHERE group_id = 'ordo-projectors' ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();

    // The broker loses everything; orders go on; the relay gives the broker the whole log again
    // under a new incarnation, without the duplicates.
    stack.broker.restart().await;
    stack.broker.create_topics(&topics(), 3).await;
    for n in 20..50 {
        w.order(&store, n).await;
    }
    let last: i64 = sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(&db.pool).await.unwrap();
    until("the relay to publish the whole log again", Duration::from_secs(90), || async {
        let (i, at): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT max(incarnation) FROM relay_incarnations), \
                    (SELECT position FROM checkpoints WHERE name = 'relay')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        i >= Some(2) && at >= Some(last)
    })
    .await;
    let (_, new_ends) = read_all(&stack.broker.bootstrap(), orders).await;
    let inside =
        stale.iter().filter(|(t, p, c)| t == orders && *c > 0 && new_ends.iter().any(|e| e.0 == *p && e.1 >= *c));
    assert!(inside.count() > 0, "no stale offset {stale:?} lies inside a re-created partition {new_ends:?}");

    // A late commit of the old log reaches the new broker.
    let bootstrap = stack.broker.bootstrap();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "ordo-projectors")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in &stale {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).expect("commit the old log's offsets");
    })
    .await
    .unwrap();

    // A new projector process starts.
    let (stop, task) = consumer(&db, stack.broker.bootstrap(), "ordo-projectors", 20);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let diff = diff_against_fold(&db.pool, &w).await;
        if diff.is_empty() {
            break;
        }
        assert!(!task.is_finished(), "the projector stopped");
        if Instant::now() > deadline {
            let offsets: Vec<(String, i32, i64, i64)> = sqlx::query_as(
                "SELECT topic, partition, next_offset, incarnation FROM projector_offsets ORDER BY 1, 2",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            panic!(
                "the read models never converged: {} differences, first {:?}; projector offsets {offsets:?}",
                diff.len(),
                diff.first()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.trigger();
    task.await.unwrap();
    stack.stop().await;
}
