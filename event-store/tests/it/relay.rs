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

pub(crate) fn config(broker: &Broker, batch_size: i64) -> RelayConfig {
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

pub(crate) struct Running {
    pub(crate) task: JoinHandle<()>,
    pub(crate) stop: Shutdown,
    pub(crate) status: Arc<RelayStatus>,
}

pub(crate) fn spawn_relay(store: EventStore, config: RelayConfig) -> Running {
    let relay = Relay::new(store, config);
    let status = relay.status();
    let stop = Shutdown::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { relay.run(s).await });
    Running { task, stop, status }
}

impl Running {
    pub(crate) async fn stop(self) {
        self.stop.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("relay stops").expect("relay task");
    }
}

pub(crate) async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends `total` events over `streams` streams (products and orders) from `writers`
/// concurrent tasks, one to three events per append. Returns the appended event ids.
pub(crate) async fn append_concurrently(
    store: &EventStore,
    total: usize,
    streams: usize,
    writers: usize,
) -> HashSet<Uuid> {
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
pub(crate) async fn consume_until(bootstrap: &str, want: &HashSet<Uuid>, timeout: Duration) -> Vec<EventEnvelope> {
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
pub(crate) fn assert_stream_order(received: &[EventEnvelope]) -> usize {
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
pub(crate) async fn assert_matches_log(store: &EventStore, received: &[EventEnvelope]) {
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

pub(crate) async fn incarnation(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT incarnation FROM relay_incarnations WHERE name = 'relay'").fetch_one(pool).await.unwrap()
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
    tokio::time::sleep(Duration::from_secs(6)).await; // at least one broker check while idle
    assert_eq!(incarnation(&db.pool).await, 1, "a healthy broker is never taken for one that lost data");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_comes_back_empty_is_given_the_whole_log_again_under_a_new_incarnation() {
    let db = TestDb::new().await;
    let mut broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 100));
    let before = append_concurrently(&db.store(), 150, 10, 2).await;
    wait_until("the first events are published", Duration::from_secs(60), || relay.status.published() >= 150).await;

    broker.restart().await; // in-memory storage: everything published is gone, offsets too
    let after = append_concurrently(&db.store(), 30, 5, 2).await;

    // A consumer that starts now must find every event of the log, not only the new ones.
    let mut all = before.clone();
    all.extend(after);
    let received = consume_until(&broker.bootstrap(), &all, Duration::from_secs(90)).await;
    assert_stream_order(&received);
    assert_matches_log(&db.store(), &received).await;
    let incarnation = incarnation(&db.pool).await;
    assert!(incarnation >= 2, "the relay counted a new broker incarnation, got {incarnation}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_is_signed_and_stamped_with_the_incarnation() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 100));
    let ids = append_concurrently(&db.store(), 20, 4, 1).await;
    let key = ordo_event_store::signing::SigningKey::load(&db.pool).await.unwrap();
    let settings = ConsumerSettings::new(broker.bootstrap(), format!("test-{}", Uuid::new_v4()), &kafka::topics());
    let mut consumer = EventConsumer::start(settings).expect("consumer");
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ids.is_subset(&seen) {
        assert!(Instant::now() < deadline, "not every event arrived");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            use rdkafka::Message;
            let signature = kafka::header(&m, "ordo-signature").expect("a signature header");
            assert!(key.verify(m.payload().unwrap_or_default(), signature), "the signature verifies with the key");
            assert_eq!(kafka::incarnation(&m), Some(1));
            seen.insert(kafka::decode(&m).unwrap().metadata.metadata.event_id);
        }
    }
    consumer.shutdown().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_event_whose_metadata_does_not_decode_is_published_dead_lettered_and_the_relay_goes_on() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let store = db.store();
    let stream = StreamRef::new(StreamCategory::Product, Uuid::new_v4());
    store.append(stream, ExpectedVersion::Any, vec![event(1)]).await.unwrap();
    let bad_id = Uuid::new_v4();
    let mut bad = event(2);
    bad.metadata.event_id = bad_id;
    store.append(stream, ExpectedVersion::Any, vec![bad]).await.unwrap();
    // Damage the stored metadata of version 2 as only someone bypassing the log's guard could.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    sqlx::query("UPDATE events SET metadata = '{\"actor\": 42}' WHERE event_id = $1")
        .bind(bad_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let mut later = HashSet::new();
    let e3 = event(3);
    later.insert(e3.metadata.event_id);
    store.append(stream, ExpectedVersion::Any, vec![e3]).await.unwrap();

    let relay = spawn_relay(store.clone(), config(&broker, 100));
    later.insert(bad_id);
    let received = consume_until(&broker.bootstrap(), &later, Duration::from_secs(60)).await;
    let versions: Vec<i64> = received.iter().filter(|e| e.stream() == stream).map(|e| e.version).collect();
    assert_eq!(versions, vec![1, 2, 3], "the relay went on past the damaged event, in order");
    let dead: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, error FROM relay_dead_letters").fetch_all(&db.pool).await.unwrap();
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    assert_eq!(dead[0].0, 2);
    relay.stop().await;
}

/// The ops address of an `event-relay` process and the process itself.
struct RelayProcess {
    child: tokio::process::Child,
    ops: String,
}

impl RelayProcess {
    fn spawn(db_url: &str, broker: &Broker) -> Self {
        let ops = format!("127.0.0.1:{}", ordo_event_store::testing::free_port());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_event-relay"))
            .env("ORDO_DATABASE_URL", db_url)
            .env("ORDO_KAFKA_BROKERS", broker.bootstrap())
            .env("ORDO_RELAY_OPS_ADDR", &ops)
            .env("ORDO_RELAY_POLL_INTERVAL_MS", "20")
            .env_remove("ORDO_RELAY_LEADER_TIMEOUT_MS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start event-relay");
        Self { child, ops }
    }

    async fn is_leader(&self) -> bool {
        let Ok(r) = reqwest::get(format!("http://{}/metrics", self.ops)).await else { return false };
        let text = r.text().await.unwrap_or_default();
        text.lines().any(|l| l.starts_with("ordo_relay_is_leader ") && l.trim_end().ends_with(" 1"))
    }

    async fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = tokio::process::Command::new("kill").args([sig, &pid]).status().await.unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_leader_is_replaced_within_30_s_and_on_waking_neither_publishes_out_of_order_nor_moves_the_checkpoint()
{
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let url = db.url.clone();
    let a = RelayProcess::spawn(&url, &broker);
    let b = RelayProcess::spawn(&url, &broker);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (leader, standby) = loop {
        if a.is_leader().await {
            break (a, b);
        }
        if b.is_leader().await {
            break (b, a);
        }
        assert!(Instant::now() < deadline, "no relay process became leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ids = append_concurrently(&db.store(), 100, 10, 2).await;
    consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;

    leader.signal("-STOP").await;
    let frozen_at = Instant::now();
    let during = append_concurrently(&db.store(), 100, 10, 2).await;
    let _ = consume_until(&broker.bootstrap(), &during, Duration::from_secs(30)).await;
    let visible_after = frozen_at.elapsed();
    eprintln!("relay | events appended after the leader froze were on kafka {visible_after:.1?} after the freeze");
    assert!(standby.is_leader().await, "the standby leads");
    ids.extend(during);

    let checkpoint = || async {
        sqlx::query_scalar::<_, i64>("SELECT position FROM checkpoints WHERE name = 'relay'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let before_wake = checkpoint().await;
    leader.signal("-CONT").await;
    ids.extend(append_concurrently(&db.store(), 50, 10, 2).await);
    let mut last = before_wake;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = checkpoint().await;
        if now < last {
            let why: Vec<(i64, String)> =
                sqlx::query_as("SELECT incarnation, reason FROM relay_incarnations").fetch_all(&db.pool).await.unwrap();
            panic!("the checkpoint moved backwards from {last} to {now}: {why:?}");
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!leader.is_leader().await, "the woken leader stood down");
    assert_eq!(incarnation(&db.pool).await, 1, "a freeze is not mistaken for a broker that lost data");
    assert!(standby.is_leader().await, "the new leader still leads");
    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;
    assert_stream_order(&received);
    assert_matches_log(&db.store(), &received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_wakes_an_idle_relay_long_before_its_poll_interval() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), RelayConfig { poll_interval: Duration::from_secs(10), ..config(&broker, 100) });
    let first = append_concurrently(&db.store(), 1, 1, 1).await;
    consume_until(&broker.bootstrap(), &first, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the relay is idle, waiting
    let published = relay.status.published();
    let appended = Instant::now();
    append_concurrently(&db.store(), 1, 1, 1).await;
    wait_until("the relay published the new event", Duration::from_secs(5), || relay.status.published() > published)
        .await;
    eprintln!("relay | an append was published {:.1?} after it committed (poll interval 10 s)", appended.elapsed());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_messages_carry_personal_fields_sealed_and_no_clear_value() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 100));
    let customer = StreamRef::new(StreamCategory::Customer, Uuid::new_v4());
    let email = format!("kafka-{}@example.com", Uuid::new_v4().simple());
    let mut registered = event(1);
    registered.event_type = "CustomerRegistered".into();
    registered.data = serde_json::json!({
        "customer_id": customer.id, "name": "Ada Lovelace", "email": email,
        "shipping_address": {"line1": "Invalidenstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    });
    let id = registered.metadata.event_id;
    db.store().append(customer, ExpectedVersion::NoStream, vec![registered]).await.unwrap();
    db.store().personal().erase(customer.id).await.unwrap();

    let got = consume_until(&broker.bootstrap(), &HashSet::from([id]), Duration::from_secs(60)).await;
    let message = got.iter().find(|e| e.metadata.metadata.event_id == id).unwrap();
    let text = serde_json::to_string(message).unwrap();
    assert!(!text.contains(&email) && !text.contains("Lovelace") && !text.contains("Berlin"), "{text}");
    assert!(ordo_schemas::SealedField::is_current(&message.data["email"]), "{text}");
    relay.stop().await;
}

/// A consumer that read the relay's partitions to their ends keeps still while nothing new
/// comes. It checks every few seconds whether its position lies past a partition's end (the
/// sign of a broker that lost messages), and a broker may answer "where does it end" with less
/// than it serves (nisshi: the start of the newest record batch, plus one). Taken for a loss,
/// that answer made consumers read whole partitions again, every check, for as long as they
/// were idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_at_the_end_of_the_relays_partitions_does_not_read_them_again_while_idle() {
    use rdkafka::Message;

    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), config(&broker, 500));
    let want = append_concurrently(&db.store(), 3000, 64, 8).await;
    let settings = ConsumerSettings::new(broker.bootstrap(), format!("idle-{}", Uuid::new_v4()), &kafka::topics());
    let mut consumer = EventConsumer::start(settings).expect("consumer");
    let mut deliveries: HashMap<(String, i32, i64), usize> = HashMap::new();
    let mut ids = HashSet::new();
    let mut until = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut all_read = false;
    loop {
        match tokio::time::timeout_at(until, consumer.recv()).await {
            Ok(Some(m)) => {
                *deliveries.entry((m.topic().to_owned(), m.partition(), m.offset())).or_default() += 1;
                ids.insert(kafka::decode(&m).expect("an envelope").metadata.metadata.event_id);
                if !all_read && want.is_subset(&ids) {
                    // then three of the consumer's checks against the partitions' ends
                    all_read = true;
                    until = tokio::time::Instant::now() + Duration::from_secs(7);
                }
            }
            Ok(None) => panic!("the consumer stopped"),
            Err(_) => break,
        }
    }
    consumer.shutdown().await;
    relay.stop().await;
    assert!(all_read, "{} of {} events arrived", ids.len(), want.len());
    let again = deliveries.values().filter(|n| **n > 1).count();
    assert_eq!(again, 0, "{again} of {} messages were delivered more than once", deliveries.len());
}
