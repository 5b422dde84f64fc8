//! Kafka plumbing shared by the relay, the order saga and the projectors.
//!
//! - [`client_config`] / [`producer_config`]: client settings from a brokers string
//!   (`KAFKA_BROKERS`, default [`DEFAULT_BROKERS`]) plus the librdkafka properties given as
//!   `ORDO_KAFKA_*` variables (TLS, SASL; see [`settings`]).
//! - [`ensure_topics`]: creates the four category topics when missing (brokers used here do
//!   not auto-create topics), replicated as [`TopicSettings`] says.
//! - [`check_environment`]: refuses unusable Kafka settings at start.
//! - [`encode`] / [`decode`]: an [`EventEnvelope`] as a Kafka message (key = stream id, value =
//!   JSON envelope, headers from [`ordo_schemas::envelope::headers`]) and back, with a typed
//!   [`MessageError`] so a consumer can dead-letter malformed input.
//! - [`EventConsumer`]: a consumer-group member whose `BaseConsumer` is polled on a dedicated
//!   OS thread (dropping an rdkafka `StreamConsumer` can hang for a minute; this closes
//!   promptly). Messages reach async code through a bounded channel; offsets are committed
//!   only when the caller says a message was handled ([`EventConsumer::commit`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ordo_schemas::envelope::headers;
use ordo_schemas::{EventEnvelope, StreamCategory};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

pub mod settings;

pub use settings::{check_environment, ClientProperties, SettingsError, TopicSettings};

/// Brokers used when none are configured.
pub const DEFAULT_BROKERS: &str = ordo_service::config::DEFAULT_KAFKA_BROKERS;

/// The topic of every category, in [`StreamCategory::ALL`] order.
pub fn topics() -> [&'static str; 4] {
    StreamCategory::ALL.map(StreamCategory::topic)
}

/// The category a topic carries, if it is one of Ordo's topics.
pub fn category_of_topic(topic: &str) -> Option<StreamCategory> {
    StreamCategory::ALL.into_iter().find(|c| c.topic() == topic)
}

/// Settings every Ordo client shares: the bootstrap brokers, Ordo's timeouts, then the
/// properties from the environment ([`ClientProperties::from_env`]).
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    // Reconnect within a second of the broker's return instead of librdkafka's 10 s backoff
    // ceiling, and give up on a request a frozen broker never answers after 10 s, not 60 s.
    config.set("bootstrap.servers", brokers).set("reconnect.backoff.max.ms", "1000").set("socket.timeout.ms", "10000");
    environment_properties().apply(&mut config);
    config
}

/// An idempotent producer that keeps per-partition order: `enable.idempotence=true`,
/// `acks=all`, at most 5 requests in flight per connection. A message not acknowledged within
/// `delivery_timeout` fails its delivery future (the caller retries). Properties from the
/// environment apply last (the ones these guarantees rest on are [`settings::RESERVED`]).
pub fn producer_config(brokers: &str, delivery_timeout: Duration) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .set("message.timeout.ms", delivery_timeout.as_millis().max(1).to_string());
    environment_properties().apply(&mut config);
    config
}

/// The `ORDO_KAFKA_*` properties of this process, read once. Unusable ones were refused at start
/// by [`check_environment`]; a process that skipped it gets none of them and an error log.
pub fn environment_properties() -> &'static ClientProperties {
    static PROPERTIES: std::sync::OnceLock<ClientProperties> = std::sync::OnceLock::new();
    PROPERTIES.get_or_init(|| {
        ClientProperties::from_env().unwrap_or_else(|e| {
            tracing::error!(error = %e, "kafka properties from the environment ignored");
            ClientProperties::default()
        })
    })
}

/// Failures setting up Kafka.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic} failed: {code}")]
    CreateTopic { topic: String, code: RDKafkaErrorCode },
    #[error("kafka settings: {0}")]
    Settings(#[from] SettingsError),
}

/// Creates `ordo.customers`, `ordo.merchants`, `ordo.products` and `ordo.orders` with
/// `partitions` partitions each, if missing, replicated as `ORDO_TOPIC_REPLICATION_FACTOR` and
/// `ORDO_TOPIC_MIN_INSYNC_REPLICAS` say ([`TopicSettings::from_env`]). A topic that already
/// exists is left as it is.
///
/// # Errors
/// [`SetupError`] when the brokers cannot be reached or refuse to create a topic.
pub async fn ensure_topics(brokers: &str, partitions: i32) -> Result<(), SetupError> {
    create_missing_topics(brokers, partitions).await.map(drop)
}

/// [`ensure_topics`] with explicit replication settings.
///
/// # Errors
/// As [`ensure_topics`]; a replication factor above the number of brokers is refused by them.
pub async fn ensure_topics_with(brokers: &str, partitions: i32, settings: TopicSettings) -> Result<(), SetupError> {
    create_missing_topics_with(brokers, partitions, settings).await.map(drop)
}

/// [`ensure_topics`], answering which topics did not exist and were created now (the relay
/// takes a topic created after it had published as a sign that the broker lost its data).
///
/// # Errors
/// As [`ensure_topics`].
pub async fn create_missing_topics(brokers: &str, partitions: i32) -> Result<Vec<String>, SetupError> {
    create_missing_topics_with(brokers, partitions, TopicSettings::from_env()?).await
}

async fn create_missing_topics_with(
    brokers: &str,
    partitions: i32,
    settings: TopicSettings,
) -> Result<Vec<String>, SetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let min_insync = settings.min_insync_replicas.map(|n| n.to_string());
    let new: Vec<NewTopic<'_>> = topics()
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t, partitions.max(1), TopicReplication::Fixed(settings.replication_factor));
            match &min_insync {
                Some(n) => topic.set("min.insync.replicas", n),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&new, &options).await?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(SetupError::CreateTopic { topic, code }),
        }
    }
    Ok(created)
}

/// An event ready to be produced: topic, key, JSON value and headers.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub topic: &'static str,
    /// The stream id, so every event of a stream lands in one partition.
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// Encodes an envelope as a Kafka message.
///
/// # Errors
/// Only if the envelope cannot be serialised to JSON (not expected for stored events).
pub fn encode(envelope: &EventEnvelope) -> Result<EncodedEvent, serde_json::Error> {
    let payload = serde_json::to_vec(envelope)?;
    let schema_version = envelope.schema_version.to_string();
    let event_id = envelope.metadata.metadata.event_id.to_string();
    let correlation_id = envelope.metadata.metadata.correlation_id.to_string();
    let mut h = OwnedHeaders::new_with_capacity(5)
        .insert(Header { key: headers::EVENT_TYPE, value: Some(envelope.event_type.as_str()) })
        .insert(Header { key: headers::SCHEMA_VERSION, value: Some(schema_version.as_str()) })
        .insert(Header { key: headers::EVENT_ID, value: Some(event_id.as_str()) })
        .insert(Header { key: headers::CORRELATION_ID, value: Some(correlation_id.as_str()) });
    if let Some(tp) = envelope.metadata.metadata.traceparent.as_deref() {
        h = h.insert(Header { key: headers::TRACEPARENT, value: Some(tp) });
        if let Some(ts) = envelope.metadata.metadata.tracestate.as_deref() {
            h = h.insert(Header { key: headers::TRACESTATE, value: Some(ts) });
        }
    }
    Ok(EncodedEvent { topic: envelope.category.topic(), key: envelope.stream_id.to_string(), payload, headers: h })
}

/// Why a consumed message is not a valid Ordo event (dead-letter it; retrying will not help).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message has no payload")]
    MissingPayload,
    #[error("payload is not an event envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("message key {key:?} is not the stream id {stream_id}")]
    KeyMismatch { key: Option<String>, stream_id: uuid::Uuid },
    #[error("topic {topic} does not carry {category} events")]
    TopicMismatch { topic: String, category: StreamCategory },
    #[error("header {name} is {found:?}, the envelope says {expected}")]
    HeaderMismatch { name: &'static str, found: String, expected: String },
}

/// The value of header `name`, if present and UTF-8.
pub fn header<'a, M: Message>(message: &'a M, name: &str) -> Option<&'a str> {
    let hs = message.headers()?;
    hs.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

/// Decodes a consumed message back into the envelope it was produced from, checking that the
/// key, topic and the event type / event id headers (when present) agree with the value.
///
/// # Errors
/// [`MessageError`] naming what is wrong with the message.
pub fn decode<M: Message>(message: &M) -> Result<EventEnvelope, MessageError> {
    let payload = message.payload().ok_or(MessageError::MissingPayload)?;
    let envelope: EventEnvelope = serde_json::from_slice(payload)?;
    let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
    if key.as_deref() != Some(envelope.stream_id.to_string().as_str()) {
        return Err(MessageError::KeyMismatch { key, stream_id: envelope.stream_id });
    }
    if let Some(category) = category_of_topic(message.topic()) {
        if category != envelope.category {
            return Err(MessageError::TopicMismatch { topic: message.topic().to_owned(), category: envelope.category });
        }
    }
    let checks = [
        (headers::EVENT_TYPE, envelope.event_type.clone()),
        (headers::EVENT_ID, envelope.metadata.metadata.event_id.to_string()),
    ];
    for (name, expected) in checks {
        if let Some(found) = header(message, name) {
            if found != expected {
                return Err(MessageError::HeaderMismatch { name, found: found.to_owned(), expected });
            }
        }
    }
    Ok(envelope)
}

/// How to join a consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// Messages fetched ahead of the handler (the channel bound). Default 256.
    pub buffer: usize,
    /// Extra librdkafka settings, applied last.
    pub extra: Vec<(String, String)>,
    /// What the owner stored durably of its progress, when it keeps it: then a partition is
    /// positioned from that record rather than from the group's committed offset alone (see
    /// [`Progress`]).
    pub progress: Option<Progress>,
}

impl ConsumerSettings {
    /// Settings for group `group_id` on `topics` with the default buffer.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            buffer: 256,
            extra: Vec::new(),
            progress: None,
        }
    }
}

/// A consumer's progress as its owner stored it durably (a projector's `projector_offsets`),
/// and the broker incarnation the relay publishes in now (`relay_incarnations`), shared with
/// the consumer's thread. The owner loads it before [`EventConsumer::start`] and keeps it up to
/// date.
///
/// The group's committed offset is only the broker's copy, and after the broker lost its data it
/// can be a late commit of the old log: an offset of a partition that no longer exists, anywhere
/// in the re-created one. A consumer process started after the loss has no memory of the old
/// partition, so it checks every partition it is given against this record before it hands
/// anything of it on: a partition stored in an older incarnation than the current one (or than a
/// message arriving past its first offset) is read from its beginning; one positioned past its
/// stored offset in the same incarnation is read from the stored offset.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<ProgressState>>);

#[derive(Debug, Default)]
struct ProgressState {
    current: i64,
    partitions: HashMap<(String, i32), Stored>,
}

/// A partition's stored progress: the next offset to read, counted in `incarnation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stored {
    pub incarnation: i64,
    pub next_offset: i64,
}

/// The task of [`Progress::refresh_every_2s`], ended when this is dropped.
#[derive(Debug)]
pub struct ProgressRefresh(tokio::task::JoinHandle<()>);

impl Drop for ProgressRefresh {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Progress {
    /// Loads `group`'s stored progress from `table` (one of the owners' offsets tables, with
    /// `group_id`, `topic`, `partition`, `next_offset` and `incarnation`: `projector_offsets`,
    /// `saga_offsets`) and the relay's current broker incarnation.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn load(&self, pool: &sqlx::PgPool, table: &'static str, group: &str) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, i32, i64, i64)> = sqlx::query_as(&format!(
            "SELECT topic, partition, next_offset, incarnation FROM {table} WHERE group_id = $1"
        ))
        .bind(group)
        .fetch_all(pool)
        .await?;
        for (topic, partition, next_offset, incarnation) in rows {
            self.record(&topic, partition, incarnation, next_offset);
        }
        let current: Option<i64> =
            sqlx::query_scalar("SELECT max(incarnation) FROM relay_incarnations").fetch_one(pool).await?;
        self.set_current(current.unwrap_or(0));
        Ok(())
    }

    /// Loads the stored progress (as [`Progress::load`]) again every 2 s while the answer lives:
    /// other replicas of the owner move it.
    pub fn refresh_every_2s(&self, pool: sqlx::PgPool, table: &'static str, group: String) -> ProgressRefresh {
        let progress = self.clone();
        ProgressRefresh(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Err(e) = progress.load(&pool, table, &group).await {
                    tracing::debug!(error = %e, table, "refreshing the stored offsets failed");
                }
            }
        }))
    }

    /// The current broker incarnation (the relay's record); a lower one than known is ignored.
    pub fn set_current(&self, incarnation: i64) {
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.current = state.current.max(incarnation);
    }

    /// A partition's stored progress. The record only moves forward: a newer incarnation replaces
    /// it, within one incarnation the higher offset wins (as the stored offsets do).
    pub fn record(&self, topic: &str, partition: i32, incarnation: i64, next_offset: i64) {
        let stored = Stored { incarnation, next_offset };
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = state.partitions.entry((topic.to_owned(), partition)).or_insert(stored);
        *slot = (*slot).max(stored);
    }

    fn current(&self) -> i64 {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).current
    }

    fn stored(&self, topic: &str, partition: i32) -> Option<Stored> {
        let state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.partitions.get(&(topic.to_owned(), partition)).copied()
    }
}

/// A consumer-group member (`enable.auto.commit=false`, `auto.offset.reset=earliest`).
///
/// Receive with [`EventConsumer::recv`], handle, then [`EventConsumer::commit`]: a message
/// that was not committed is delivered again after a restart or a rebalance, so handlers must
/// be idempotent. [`EventConsumer::shutdown`] stops polling, commits what was acknowledged and
/// leaves the group; dropping the consumer stops the thread without waiting for it.
pub struct EventConsumer {
    rx: Option<mpsc::Receiver<OwnedMessage>>,
    commits: std_mpsc::Sender<Commit>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventConsumer {
    /// Joins the group and starts polling on a dedicated thread.
    ///
    /// # Errors
    /// When the client cannot be created or the subscription is refused.
    pub fn start(settings: ConsumerSettings) -> Result<Self, KafkaError> {
        let mut config = client_config(&settings.brokers);
        config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // An idle fetch returns after 50 ms instead of librdkafka's 500 ms, which otherwise
            // sets a floor under end-to-end visibility.
            .set("fetch.wait.max.ms", "50")
            // A subscribed topic created after the group was joined (the relay re-creating topics
            // on a broker that came back empty) is found within 5 s, not librdkafka's 5 min.
            .set("topic.metadata.refresh.interval.ms", "5000")
            // The partitions' high watermarks as fetched, for the check of positions past the
            // end (`rewind_past_end`).
            .set("statistics.interval.ms", "1000");
        environment_properties().apply(&mut config);
        for (k, v) in &settings.extra {
            config.set(k, v);
        }
        let topics = settings.topics.clone();
        let assignments = Assignments::default();
        let context = assignments.clone();
        let make = move || -> Result<Client, KafkaError> {
            let consumer: Client = config.create_with_context(context.clone())?;
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
            Ok(consumer)
        };
        let consumer = make()?;
        let (tx, rx) = mpsc::channel(settings.buffer.max(1));
        let (commits, commit_rx) = std_mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let incarnations = Incarnations::new(settings.progress, assignments);
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{}", settings.group_id))
            .spawn(move || poll_loop(consumer, &make, incarnations, &tx, &commit_rx, &flag))
            .map_err(|e| KafkaError::ClientCreation(format!("spawn consumer thread: {e}")))?;
        Ok(Self { rx: Some(rx), commits, stop, thread: Some(thread) })
    }

    /// The next message; `None` once the consumer is shutting down.
    pub async fn recv(&mut self) -> Option<OwnedMessage> {
        self.rx.as_mut()?.recv().await
    }

    /// Marks `message` handled: its offset (and every earlier one in its partition) is
    /// committed shortly, asynchronously, and at the latest on [`EventConsumer::shutdown`].
    pub fn commit(&self, message: &OwnedMessage) {
        let _ = self.commits.send(Commit {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            next_offset: message.offset() + 1,
            incarnation: incarnation(message),
        });
    }

    /// Commits `next_offset` (the offset of the next message to read) for a partition.
    pub fn commit_offset(&self, topic: &str, partition: i32, next_offset: i64) {
        let _ = self.commits.send(Commit { topic: topic.to_owned(), partition, next_offset, incarnation: None });
    }

    /// Stops polling, commits acknowledged offsets synchronously and leaves the group.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.rx.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for EventConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type Pending = HashMap<(String, i32), i64>;

/// The client an [`EventConsumer`] polls.
type Client = BaseConsumer<Assignments>;

/// The consumer's context: the partitions the group assigned since the polling thread last
/// looked (filled by librdkafka's rebalance callback, which runs on that thread inside `poll`),
/// and each partition's position beside the high watermark the broker's fetch responses
/// reported, as librdkafka's latest statistics (served by the same `poll`) show them.
#[derive(Clone, Default)]
struct Assignments {
    assigned: Arc<Mutex<Vec<(String, i32)>>>,
    fetched: Arc<Mutex<HashMap<(String, i32), Fetched>>>,
}

/// One partition in librdkafka's latest statistics: both figures come from the same moment.
#[derive(Clone, Copy, Debug)]
struct Fetched {
    /// The offset after the last message handed to the application, or else the next offset
    /// to fetch.
    position: i64,
    /// The high watermark in the broker's latest fetch response.
    high_watermark: i64,
}

impl Assignments {
    fn take(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.assigned.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// `partition` of `topic` in the latest statistics, once the broker answered a fetch of it.
    fn fetched(&self, topic: &str, partition: i32) -> Option<Fetched> {
        let fetched = self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fetched.get(&(topic.to_owned(), partition)).copied()
    }
}

impl ClientContext for Assignments {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut fetched = self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fetched.clear();
        for (name, topic) in statistics.topics {
            // librdkafka reports -1001 (invalid) for what it does not know yet.
            for p in topic.partitions.values().filter(|p| p.partition >= 0 && p.hi_offset >= 0) {
                let position = if p.app_offset >= 0 { p.app_offset } else { p.next_offset };
                if position >= 0 {
                    let at = Fetched { position, high_watermark: p.hi_offset };
                    fetched.insert((name.clone(), p.partition), at);
                }
            }
        }
    }
}

impl ConsumerContext for Assignments {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let mut new = self.assigned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            new.extend(assigned.elements().iter().map(|p| (p.topic().to_owned(), p.partition())));
        }
    }
}

/// An offset to commit, with the broker incarnation of the message it follows (when known).
struct Commit {
    topic: String,
    partition: i32,
    next_offset: i64,
    incarnation: Option<i64>,
}

/// Whether a consumer error means the connection to the broker was lost, after which the
/// client is replaced (see [`poll_loop`]).
pub(crate) fn broker_gone(e: &KafkaError) -> bool {
    matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure))
}

/// Polls `consumer` until `stop`. When the connection to the broker is lost, the client is
/// replaced by a new one from `make` (once per outage): a broker may come back with its topics
/// re-created under new topic ids, and librdkafka does not recover a client that cached the old
/// ones (it can skip the new metadata, or crash updating its cache), so a client that never saw
/// the old broker is the safe one to meet the new. Committed offsets carry over through the
/// group; what a fresh client reads again is skipped by the handlers.
fn poll_loop(
    mut consumer: Client,
    make: &dyn Fn() -> Result<Client, KafkaError>,
    mut incarnations: Incarnations,
    tx: &mpsc::Sender<OwnedMessage>,
    commits: &std_mpsc::Receiver<Commit>,
    stop: &AtomicBool,
) {
    let mut pending: Pending = HashMap::new();
    let mut held: Option<OwnedMessage> = None;
    let mut last_error_log: Option<Instant> = None;
    let mut replaced_in_outage = false;
    let mut past_end_checked = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        drain_commits(commits, &mut pending, &incarnations, Duration::ZERO);
        flush_commits(&consumer, &mut pending, CommitMode::Async);
        if past_end_checked.elapsed() >= PAST_END_CHECK {
            incarnations.check_assigned(&consumer);
            incarnations.rewind_behind(&consumer);
            rewind_past_end(&consumer);
            past_end_checked = Instant::now();
        }
        if held.is_none() {
            let polled = consumer.poll(Duration::from_millis(100));
            incarnations.note_assignments();
            match polled {
                None => continue,
                Some(Ok(m)) => {
                    replaced_in_outage = false;
                    let m = m.detach();
                    if incarnations.rewind(&consumer, &m) {
                        continue;
                    }
                    held = Some(m);
                }
                Some(Err(e)) => {
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "kafka consumer error");
                        last_error_log = Some(Instant::now());
                    }
                    if broker_gone(&e) && !replaced_in_outage {
                        match make() {
                            Ok(fresh) => {
                                let old = std::mem::replace(&mut consumer, fresh);
                                // Closing the old client may wait for the broker: not here.
                                let _ = std::thread::Builder::new().name("kafka-close".into()).spawn(move || drop(old));
                                replaced_in_outage = true;
                                tracing::info!("the broker went away: kafka consumer replaced by a fresh client");
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot replace the kafka consumer"),
                        }
                    }
                    continue;
                }
            }
        }
        if let Some(m) = held.take() {
            match tx.try_send(m) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(m)) => {
                    held = Some(m);
                    // The handler is behind: wait for it, applying its commits meanwhile.
                    drain_commits(commits, &mut pending, &incarnations, Duration::from_millis(10));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    }
    drain_commits(commits, &mut pending, &incarnations, Duration::ZERO);
    flush_commits(&consumer, &mut pending, CommitMode::Sync);
    consumer.unsubscribe();
}

/// How often a consumer compares its assigned partitions' positions with their ends.
const PAST_END_CHECK: Duration = Duration::from_secs(2);

/// Moves `partition` of `topic` to `to` and logs `why` at warn level. A failure is the caller's to
/// log: a partition that is not fetching yet (just assigned) cannot move, and is tried again.
fn seek(
    consumer: &Client,
    topic: &str,
    partition: i32,
    to: Offset,
    why: std::fmt::Arguments<'_>,
) -> rdkafka::error::KafkaResult<()> {
    consumer.seek(topic, partition, to, Duration::from_secs(5))?;
    tracing::warn!(topic, partition, to = ?to, "{why}");
    Ok(())
}

/// Rewinds every assigned partition whose next offset (the fetch position, or the committed
/// offset before anything was fetched) lies past the partition's end. That happens after a
/// broker lost messages: it came back empty and the topic was filled again from the start,
/// while the consumer's position, or a stale commit that reached the new broker, still counts
/// in the old log. A broker that answers such a fetch with OFFSET_OUT_OF_RANGE gets it reset by
/// librdkafka (`auto.offset.reset=earliest`); one that answers with nothing would leave the
/// consumer waiting for offsets that already exist, so the consumer checks for itself. What is
/// read again is skipped by the handlers (per stream version, per stored offset).
fn rewind_past_end(consumer: &Client) {
    let Ok(assigned) = consumer.assignment() else { return };
    if assigned.count() == 0 {
        return;
    }
    let offset_in = |tpl: &TopicPartitionList, topic: &str, partition: i32| match tpl
        .find_partition(topic, partition)
        .map(|p| p.offset())
    {
        Some(Offset::Offset(n)) => Some(n),
        _ => None,
    };
    let positions = consumer.position().ok();
    let mut committed: Option<TopicPartitionList> = None;
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    for part in assigned.elements() {
        let (topic, partition) = (part.topic(), part.partition());
        let mut at = positions.as_ref().and_then(|p| offset_in(p, topic, partition));
        if at.is_none() {
            if committed.is_none() {
                committed = consumer.committed_offsets(assigned.clone(), Duration::from_secs(1)).ok();
            }
            at = committed.as_ref().and_then(|c| offset_in(c, topic, partition));
        }
        if let Some(n) = at.filter(|n| *n > 0) {
            next.insert((topic.to_owned(), partition), n);
        }
    }
    if next.is_empty() {
        return;
    }
    // The ends of every partition in one request per broker: a lookup by the timestamp -1
    // (`Offset::End`) answers each partition's latest offset.
    let mut query = TopicPartitionList::new();
    for (topic, partition) in next.keys() {
        let _ = query.add_partition_offset(topic, *partition, Offset::End);
    }
    let Ok(ends) = consumer.offsets_for_times(query, Duration::from_secs(1)) else { return };
    for ((topic, partition), next) in next {
        let Some(end) = offset_in(&ends, &topic, partition) else { continue };
        if next <= end {
            continue;
        }
        // Some brokers answer the lookup with the start of the partition's newest record batch
        // (plus one) rather than its end, so a position at the true end reads as past it. The
        // high watermark of the fetch responses is the end the broker serves from, and the
        // statistics show it beside the position of the same moment: within it, the position
        // was not past the end. After a loss the broker's fetch responses report its new, lower
        // end while the position still counts in the old log, so the partition is moved back.
        if consumer.context().fetched(&topic, partition).is_some_and(|f| f.position <= f.high_watermark) {
            continue;
        }
        let why = format_args!(
            "the consumer's position {next} is past the end {end} of the partition (the broker lost messages): \
             reading it again from the beginning"
        );
        if let Err(e) = seek(consumer, &topic, partition, Offset::Beginning, why) {
            tracing::warn!(topic, partition, error = %e, "cannot rewind a partition read past its end");
        }
    }
}

/// The highest broker incarnation seen per partition (the relay's `ordo-incarnation` header),
/// and the highest seen in any partition or known to be current.
///
/// With the owner's [`Progress`], a partition's entry starts from the owner's stored record each
/// time the partition is assigned, not from this process's memory: a process started after the
/// broker lost its data, or given a partition again at a stale commit, knows the old partition
/// only from that record.
struct Incarnations {
    partitions: HashMap<(String, i32), i64>,
    newest: i64,
    progress: Option<Progress>,
    assignments: Assignments,
    /// Assigned partitions not yet compared with the owner's stored progress.
    unchecked: HashSet<(String, i32)>,
}

impl Incarnations {
    fn new(progress: Option<Progress>, assignments: Assignments) -> Self {
        Self { partitions: HashMap::new(), newest: 0, progress, assignments, unchecked: HashSet::new() }
    }

    /// Takes note of the partitions assigned since the last poll: each is compared with the
    /// owner's stored progress before anything of it is handed on.
    fn note_assignments(&mut self) {
        let assigned = self.assignments.take();
        if self.progress.is_some() {
            self.unchecked.extend(assigned);
        }
    }

    /// Compares the first message of a partition since its assignment with the owner's stored
    /// progress. The stored incarnation becomes the partition's. A message of that incarnation
    /// past the stored offset means the position came from a commit that leads the stored
    /// progress (a late commit of an old log counting further than the new one): the partition
    /// is read from the stored offset and `m` dropped. A message of a newer incarnation past the
    /// first offset is left to [`Incarnations::rewind`], which reads the partition again from its
    /// beginning.
    fn check_first(&mut self, consumer: &Client, m: &OwnedMessage) -> bool {
        let key = (m.topic().to_owned(), m.partition());
        if !self.unchecked.remove(&key) {
            return false;
        }
        let Some(stored) = self.progress.as_ref().and_then(|p| p.stored(m.topic(), m.partition())) else {
            return false;
        };
        self.partitions.insert(key, stored.incarnation);
        if incarnation(m) != Some(stored.incarnation) || m.offset() <= stored.next_offset {
            return false;
        }
        let why = format_args!(
            "the committed offset {} leads the stored progress: reading the partition from the stored offset",
            m.offset()
        );
        match seek(consumer, m.topic(), m.partition(), Offset::Offset(stored.next_offset), why) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), error = %e,
                    "cannot move a partition back to its stored offset");
                false
            }
        }
    }

    /// Compares the assigned partitions that have not delivered anything yet with the owner's
    /// stored progress, and takes the current incarnation from it. One stored in an older
    /// incarnation than the newest known is read from its beginning (it was re-created since);
    /// one whose position (or committed offset) lies past its stored offset in the same
    /// incarnation is read from the stored offset. A position that lies exactly at the end of a
    /// re-created partition delivers nothing, so waiting for a message would wait forever.
    fn check_assigned(&mut self, consumer: &Client) {
        let Some(progress) = self.progress.clone() else { return };
        self.newest = self.newest.max(progress.current());
        if self.unchecked.is_empty() {
            return;
        }
        let Ok(assigned) = consumer.assignment() else { return };
        let mut behind = Vec::new();
        let mut same = TopicPartitionList::new();
        for key in std::mem::take(&mut self.unchecked) {
            if assigned.find_partition(&key.0, key.1).is_none() {
                continue;
            }
            match progress.stored(&key.0, key.1) {
                None => {}
                Some(stored) if stored.incarnation < self.newest => behind.push(key),
                Some(_) => {
                    let _ = same.add_partition(&key.0, key.1);
                    self.unchecked.insert(key);
                }
            }
        }
        for (topic, partition) in behind {
            let why = format_args!(
                "the partition's stored progress is of an older broker incarnation than {}: reading it from the beginning",
                self.newest
            );
            match seek(consumer, &topic, partition, Offset::Beginning, why) {
                Ok(()) => {
                    self.partitions.insert((topic, partition), self.newest);
                }
                // Not fetching yet (just assigned): the next check tries again.
                Err(e) => {
                    tracing::debug!(topic, partition, error = %e, "cannot rewind a newly assigned partition yet");
                    self.unchecked.insert((topic, partition));
                }
            }
        }
        if same.count() == 0 {
            return;
        }
        let offset_in = |tpl: &TopicPartitionList, topic: &str, partition: i32| match tpl
            .find_partition(topic, partition)
            .map(|p| p.offset())
        {
            Some(Offset::Offset(n)) => Some(n),
            _ => None,
        };
        let positions = consumer.position().ok();
        let committed = consumer.committed_offsets(same.clone(), Duration::from_secs(1)).ok();
        for part in same.elements() {
            let (topic, partition) = (part.topic(), part.partition());
            let at = positions
                .as_ref()
                .and_then(|p| offset_in(p, topic, partition))
                .or_else(|| committed.as_ref().and_then(|c| offset_in(c, topic, partition)));
            let (Some(at), Some(stored)) = (at, progress.stored(topic, partition)) else { continue };
            let key = (topic.to_owned(), partition);
            self.partitions.insert(key.clone(), stored.incarnation);
            if at <= stored.next_offset {
                self.unchecked.remove(&key);
                continue;
            }
            let why = format_args!(
                "the committed offset {at} leads the stored progress: reading the partition from the stored offset"
            );
            match seek(consumer, topic, partition, Offset::Offset(stored.next_offset), why) {
                Ok(()) => {
                    self.unchecked.remove(&key);
                }
                Err(e) => tracing::debug!(topic, partition, error = %e, "cannot move a newly assigned partition yet"),
            }
        }
    }

    /// Whether `m` shows its partition was re-created since this consumer last read it (a higher
    /// incarnation than before, past the partition's first offset): then the partition is read
    /// again from its beginning, since the fetch position of the old incarnation may have
    /// skipped messages of the new one, and `m` is dropped (it comes again). Consumers
    /// deduplicate by stream version, so what was already handled is skipped.
    fn rewind(&mut self, consumer: &Client, m: &OwnedMessage) -> bool {
        if self.check_first(consumer, m) {
            return true;
        }
        let Some(incarnation) = incarnation(m) else { return false };
        self.newest = self.newest.max(incarnation);
        let slot = self.partitions.entry((m.topic().to_owned(), m.partition())).or_insert(incarnation);
        if incarnation <= *slot {
            return false;
        }
        *slot = incarnation;
        if m.offset() == 0 {
            return false;
        }
        let why = format_args!(
            "the broker re-created this partition (incarnation {incarnation}): reading it again from the beginning"
        );
        match seek(consumer, m.topic(), m.partition(), Offset::Beginning, why) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), error = %e,
                    "cannot rewind a re-created partition");
                false
            }
        }
    }

    /// Rewinds every assigned partition this consumer read in an older incarnation than the
    /// newest it has seen anywhere. The broker lost everything at once, so such a partition was
    /// re-created too, whether or not a message of the new incarnation has reached it: its
    /// position may come from the old partition, or from a commit of the old partition that
    /// reached the new broker late. That position can lie anywhere in the new partition, also
    /// exactly at its end, where nothing past the end shows it and no message of the new
    /// incarnation arrives to show it (a partition the relay republished no more into than the
    /// old commit counted would then never be read).
    fn rewind_behind(&mut self, consumer: &Client) {
        if !self.partitions.values().any(|i| *i < self.newest) {
            return;
        }
        let Ok(assigned) = consumer.assignment() else { return };
        for part in assigned.elements() {
            let key = (part.topic().to_owned(), part.partition());
            let Some(slot) = self.partitions.get_mut(&key) else { continue };
            if *slot >= self.newest {
                continue;
            }
            let why = format_args!(
                "the broker was re-created (incarnation {}) since this partition was read: reading it again from the beginning",
                self.newest
            );
            match seek(consumer, &key.0, key.1, Offset::Beginning, why) {
                Ok(()) => {
                    *slot = self.newest;
                }
                // Not fetching yet (just assigned): the next check tries again.
                Err(e) => tracing::debug!(topic = %key.0, partition = key.1, error = %e,
                    "cannot rewind a partition of an older incarnation yet"),
            }
        }
    }

    /// Whether a commit following a message of `incarnation` belongs to a partition this consumer
    /// knows was re-created since: its offset counts in the old partition and must not reach the
    /// new one.
    fn outdated(&self, topic: &str, partition: i32, incarnation: Option<i64>) -> bool {
        let Some(incarnation) = incarnation else { return false };
        self.partitions.get(&(topic.to_owned(), partition)).is_some_and(|known| incarnation < *known)
    }
}

/// The broker incarnation a message was published in (`None` for messages without the header).
pub fn incarnation<M: Message>(message: &M) -> Option<i64> {
    header(message, headers::INCARNATION).and_then(|v| v.parse().ok())
}

fn drain_commits(rx: &std_mpsc::Receiver<Commit>, pending: &mut Pending, known: &Incarnations, wait: Duration) {
    if !wait.is_zero() {
        if let Ok(c) = rx.recv_timeout(wait) {
            record(pending, known, c);
        }
    }
    while let Ok(c) = rx.try_recv() {
        record(pending, known, c);
    }
}

/// The latest commit of a partition wins: handlers commit each partition in the order they
/// received it, so it is also the highest, except right after a re-created partition was
/// rewound, when the old incarnation's higher offsets must not be committed over the new ones.
/// A commit after a message of an incarnation older than the partition's is dropped.
fn record(pending: &mut Pending, known: &Incarnations, c: Commit) {
    if known.outdated(&c.topic, c.partition, c.incarnation) {
        return;
    }
    pending.insert((c.topic, c.partition), c.next_offset);
}

fn flush_commits(consumer: &Client, pending: &mut Pending, mode: CommitMode) {
    if pending.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in pending.iter() {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(error = %e, topic = %topic, partition, "invalid commit offset");
        }
    }
    pending.clear();
    if let Err(e) = consumer.commit(&tpl, mode) {
        // A revoked partition cannot be committed; its new owner re-handles the message.
        tracing::warn!(error = %e, "offset commit failed");
    }
}

/// Whether the brokers answer a metadata request within `timeout` (for readiness checks).
///
/// # Errors
/// The reason they do not, as text.
/// The Kafka readiness check of a worker's `/readyz`: the brokers answer a metadata request.
pub fn readiness(brokers: String) -> (&'static str, ordo_service::ops::ReadinessCheck) {
    (
        "kafka",
        ordo_service::ops::check(move || {
            let brokers = brokers.clone();
            async move { check_reachable(&brokers, Duration::from_secs(2)).await }
        }),
    )
}

pub async fn check_reachable(brokers: &str, timeout: Duration) -> Result<(), String> {
    let config = client_config(brokers);
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::{BaseProducer, Producer};
        let producer: BaseProducer = config.create().map_err(|e| e.to_string())?;
        producer.client().fetch_metadata(None, timeout).map(|_| ()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
