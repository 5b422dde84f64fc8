//! The relay against a real Postgres and a real nisshi broker: no loss, per-stream order,
//! broker outages, leader election and failover.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_event_store::kafka::{self, ConsumerSettings, EventConsumer};
use ordo_event_store::relay::{Relay, RelayConfig, RelayStatus};
use ordo_event_store::testing::{Broker, TestDb};
use ordo_event_store::{EventStore, ExpectedVersion, LogCursor};
use ordo_schemas::{EventEnvelope, StreamCategory, StreamRef};
use ordo_service::shutdown::Shutdown;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::event;

fn config(broker: &Broker, batch_size: i64) -> RelayConfig {
    RelayConfig {
        brokers: broker.bootstrap(),
        batch_size,
        poll_interval: Duration::from_millis(20),
        standby_interval: Duration::from_millis(200),
        delivery_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_secs(1),
        ..RelayConfig::default()
    }
}

struct Running {
    task: JoinHandle<()>,
    stop: Shutdown,
    status: Arc<RelayStatus>,
}

fn spawn_relay(store: EventStore, config: RelayConfig) -> Running {
    let relay = Relay::new(store, config);
    let status = relay.status();
    let stop = Shutdown::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { relay.run(s).await });
    Running { task, stop, status }
}

impl Running {
    async fn stop(self) {
        self.stop.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("relay stops").expect("relay task");
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends `total` events over `streams` streams (products and orders) from `writers`
/// concurrent tasks, one to three events per append. Returns the appended event ids.
async fn append_concurrently(store: &EventStore, total: usize, streams: usize, writers: usize) -> HashSet<Uuid> {
    let refs: Arc<Vec<StreamRef>> = Arc::new(
        (0..streams)
            .map(|i| {
                let category = if i % 2 == 0 { StreamCategory::Product } else { StreamCategory::Order };
                StreamRef::new(category, Uuid::new_v4())
            })
            .collect(),
    );
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let refs = refs.clone();
        let quota = total / writers + usize::from(w < total % writers);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut i = w;
            while ids.len() < quota {
                let n = (1 + i % 3).min(quota - ids.len());
                let events: Vec<_> = (0..n).map(|k| event((i + k) as i64)).collect();
                let batch_ids: Vec<Uuid> = events.iter().map(|e| e.metadata.event_id).collect();
                let stream = refs[(i * 7 + w) % refs.len()];
                store.append(stream, ExpectedVersion::Any, events).await.expect("append");
                ids.extend(batch_ids);
                i += writers;
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    all
}

/// Reads every topic as a fresh consumer group until all `want` event ids arrived.
async fn consume_until(bootstrap: &str, want: &HashSet<Uuid>, timeout: Duration) -> Vec<EventEnvelope> {
    let settings = ConsumerSettings::new(bootstrap, format!("test-{}", Uuid::new_v4()), &kafka::topics());
    let mut consumer = EventConsumer::start(settings).expect("consumer");
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    while !want.is_subset(&seen) && Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            let envelope = kafka::decode(&m).expect("relay publishes valid envelopes");
            seen.insert(envelope.metadata.metadata.event_id);
            got.push(envelope);
            consumer.commit(&m);
        }
    }
    consumer.shutdown().await;
    let missing = want.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} of {} events never reached kafka", want.len());
    got
}

/// Per stream, first deliveries only (duplicates are recognised by event id): versions must
/// be strictly increasing. Returns how many duplicates were dropped.
fn assert_stream_order(received: &[EventEnvelope]) -> usize {
    let mut first_seen = HashSet::new();
    let mut last: HashMap<StreamRef, i64> = HashMap::new();
    let mut duplicates = 0;
    for e in received {
        if !first_seen.insert(e.metadata.metadata.event_id) {
            duplicates += 1;
            continue;
        }
        let prev = last.insert(e.stream(), e.version).unwrap_or(0);
        assert!(e.version > prev, "stream {} delivered version {} after {prev}", e.stream(), e.version);
    }
    duplicates
}

/// Every stream of the log arrives gapless from version 1 (first deliveries only).
async fn assert_matches_log(store: &EventStore, received: &[EventEnvelope]) {
    let (log, _) = store.read_all(LogCursor::START, 1_000_000).await.unwrap();
    let mut per_stream: HashMap<StreamRef, Vec<i64>> = HashMap::new();
    let mut first_seen = HashSet::new();
    for e in received {
        if first_seen.insert(e.metadata.metadata.event_id) {
            per_stream.entry(e.stream()).or_default().push(e.version);
        }
    }
    let mut expected: HashMap<StreamRef, i64> = HashMap::new();
    for e in &log {
        let v = expected.entry(e.stream).or_default();
        *v = (*v).max(e.version);
    }
    for (stream, max) in expected {
        let got = per_stream.get(&stream).cloned().unwrap_or_default();
        assert_eq!(got, (1..=max).collect::<Vec<_>>(), "stream {stream} on kafka differs from the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_appended_by_concurrent_writers_reaches_kafka_in_stream_version_order() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 200));

    let started = Instant::now();
    let ids = append_concurrently(&db.store(), 2_000, 120, 8).await;
    let appended_in = started.elapsed();
    wait_until("the relay caught up", Duration::from_secs(90), || relay.status.published() >= 2_000).await;
    let published_in = started.elapsed();
    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;

    let duplicates = assert_stream_order(&received);
    assert_matches_log(&db.store(), &received).await;
    let ids_on_kafka: HashSet<Uuid> = received.iter().map(|e| e.metadata.metadata.event_id).collect();
    assert_eq!(ids_on_kafka, ids, "kafka holds exactly the appended events");
    eprintln!(
        "relay: 2000 events appended in {appended_in:?}, all acknowledged after {published_in:?}, {duplicates} duplicates"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_resumes_by_itself_after_the_broker_was_frozen_while_appends_went_on() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 100));
    let mut ids = append_concurrently(&db.store(), 200, 20, 4).await;
    wait_until("the first events are published", Duration::from_secs(60), || relay.status.published() >= 200).await;

    broker.pause().await;
    let during = append_concurrently(&db.store(), 300, 20, 4).await;
    assert_eq!(during.len(), 300, "appends are accepted while the broker is away");
    // Keep the broker away longer than the delivery timeout so batches fail and are retried.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stuck = relay.status.published();
    assert!(stuck < 500, "nothing can be acknowledged while the broker is frozen ({stuck})");
    broker.resume().await;
    ids.extend(during);

    wait_until("the relay caught up", Duration::from_secs(90), || relay.status.published() >= 500).await;
    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;
    assert_stream_order(&received);
    assert_matches_log(&db.store(), &received).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_resumes_after_the_broker_restarts_empty_and_topics_are_created_again() {
    let db = TestDb::new().await;
    let mut broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 100));
    append_concurrently(&db.store(), 100, 10, 2).await;
    wait_until("the first events are published", Duration::from_secs(60), || relay.status.published() >= 100).await;

    broker.stop().await;
    let during = append_concurrently(&db.store(), 200, 10, 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage
    broker.restart().await; // in-memory storage: the topics are gone

    let received = consume_until(&broker.bootstrap(), &during, Duration::from_secs(90)).await;
    assert_stream_order(&received);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_publishes_and_a_standby_takes_over_without_loss_when_the_leader_dies() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let a = spawn_relay(db.store(), config(&broker, 100));
    let b = spawn_relay(db.store(), config(&broker, 100));
    wait_until("a leader is elected", Duration::from_secs(30), || a.status.is_leader() || b.status.is_leader()).await;
    let (leader, standby) = if a.status.is_leader() { (a, b) } else { (b, a) };

    let mut ids = append_concurrently(&db.store(), 300, 30, 4).await;
    wait_until("the leader published", Duration::from_secs(60), || leader.status.published() >= 300).await;
    assert!(!standby.status.is_leader(), "the standby does not lead while the leader lives");
    assert_eq!(standby.status.published(), 0, "the standby published nothing");

    // The leader dies: its task and its lock connection are dropped mid-flight.
    leader.task.abort();
    let _ = leader.task.await;
    ids.extend(append_concurrently(&db.store(), 300, 30, 4).await);
    wait_until("the standby took over", Duration::from_secs(30), || standby.status.is_leader()).await;
    wait_until("the new leader caught up", Duration::from_secs(60), || standby.status.published() >= 300).await;

    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;
    assert_stream_order(&received);
    assert_matches_log(&db.store(), &received).await;
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lock_connection_is_killed_steps_down_and_publishing_continues_under_a_new_lock() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 50));
    let lock_pid = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'ordo-relay-lock' AND datname = current_database()",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap()
    };
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.is_none() {
        assert!(Instant::now() < deadline, "the relay never took the lock");
        first = lock_pid().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = append_concurrently(&db.store(), 100, 10, 2).await;
    wait_until("published", Duration::from_secs(60), || relay.status.published() >= 100).await;

    sqlx::query("SELECT pg_terminate_backend($1)").bind(first).execute(&db.pool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = lock_pid().await;
        if now.is_some() && now != first {
            break;
        }
        assert!(Instant::now() < deadline, "the relay never re-took the lock on a new connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ids.extend(append_concurrently(&db.store(), 100, 10, 2).await);
    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;
    assert_stream_order(&received);
    relay.stop().await;
}
