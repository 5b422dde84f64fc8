//! The relay: publishes the event log to Kafka (a transactional outbox without a second table).
//!
//! - Reads the log by position from its checkpoint (positions follow commit order, ADR 0019).
//!   It wakes on the notification every committed append batch sends (`ordo_log`), and polls
//!   only as a fallback.
//! - Publishes each event to its category topic, key = stream id, with an idempotent producer
//!   (`acks=all`, at most 5 in flight, so a partition keeps the order it was given). Each message
//!   carries the broker incarnation (`ordo-incarnation`) and an HMAC signature of its value
//!   (`ordo-signature`, see [`crate::signing`]); the projectors apply only signed messages.
//! - Pipelines pages (module `pipeline`): it reads and sends the next page while
//!   the broker acknowledges the previous ones, up to [`RelayConfig::pipeline_depth`] pages.
//!   Pages settle in the order they were read; the position advances only past pages whose
//!   every delivery was acknowledged, and the checkpoint follows, together with the offset the
//!   messages reached in each partition, at most every [`RelayConfig::checkpoint_interval`]
//!   (at once when idle, failing or stopping): a crash only makes the relay publish again what
//!   followed the checkpoint. When a page fails, later pages are not recorded; after a backoff
//!   missing topics are created, the producer is rebuilt and everything after the checkpoint
//!   is published again (consumers deduplicate by stream version); the relay never skips ahead.
//! - A broker that lost what was published (a partition shorter than the offset the relay
//!   reached, a delivery below it, or a topic that had to be created again) starts a new
//!   incarnation: the number goes up, the checkpoint goes back to the start of the log, and the
//!   whole log is published again. Consumers that see a higher incarnation drop their stored
//!   offsets for that partition and read it from its beginning (ADR 0021).
//! - A stored event whose metadata does not decode is published with metadata rebuilt from its
//!   columns, recorded in `relay_dead_letters`, logged and counted: its data, version and hashes
//!   are intact and are what consumers act on, so going on is safe; stopping would stop every
//!   consumer behind it for good, since the log cannot be changed.
//! - One active relay per checkpoint name: the leader holds a Postgres session advisory lock on a
//!   dedicated connection; standbys poll for it. That session has `idle_session_timeout` set to
//!   the leader timeout and the leader speaks on it every quarter of that, even while it waits
//!   for the broker, so a frozen or cut-off leader loses the lock and a standby takes over. The
//!   leader writes its checkpoint through that session, so a leader whose session ended cannot
//!   move the checkpoint, and before it sends a page it checks the session unless the session
//!   spoke within the checkpoint interval (ADR 0023).
//!
//! Metrics: `ordo_relay_events_published_total`, `ordo_relay_publish_errors_total`,
//! `ordo_relay_lag_events`, `ordo_relay_lag_seconds`, `ordo_relay_is_leader`,
//! `ordo_relay_incarnation`, `ordo_relay_republishes_total`, `ordo_relay_dead_letters_total`,
//! `ordo_log_writer_lock_held_seconds`.

mod pipeline;
pub mod process;
mod publish;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_service::shutdown::Shutdown;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

use crate::error::StoreError;
use crate::kafka;
use crate::types::LogCursor;
use crate::EventStore;

/// How the relay runs. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Checkpoint name, also the leader-election key (default `relay`).
    pub name: String,
    /// Kafka bootstrap servers (default `127.0.0.1:9092`).
    pub brokers: String,
    /// Partitions of topics the relay creates (default 3).
    pub partitions: i32,
    /// Events read and published per page (default 500).
    pub batch_size: i64,
    /// Pages handed to the producer and not yet acknowledged, at most (default 4): the relay
    /// reads and sends the next page while the broker acknowledges the previous ones. 1 waits
    /// for each page before reading the next.
    pub pipeline_depth: usize,
    /// How long acknowledged progress may wait before it is saved as the checkpoint (default
    /// 100 ms). An idle, failing or stopping relay saves at once. A crash loses at most this
    /// much progress, which is published again.
    pub checkpoint_interval: Duration,
    /// The longest wait when the log has nothing new (default 1 s). Appends notify the relay
    /// (channel `ordo_log`, one notification per committed batch), so this is only the fallback
    /// when a notification is lost.
    pub poll_interval: Duration,
    /// How often a standby tries to take the lock (default 1 s).
    pub standby_interval: Duration,
    /// How long a message may wait for an acknowledgement before its batch is retried (30 s).
    pub delivery_timeout: Duration,
    /// Longest wait between retries of a failing batch (default 5 s; starts at 100 ms).
    pub max_backoff: Duration,
    /// How long the leader's lock session may stay silent before PostgreSQL ends it and a
    /// standby takes over (default 15 s). The leader speaks on it every quarter of this, so
    /// only a frozen or cut-off leader loses it.
    pub leader_timeout: Duration,
    /// How often the leader checks that the broker still holds what it published (default 5 s).
    pub broker_check_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            name: "relay".into(),
            brokers: kafka::DEFAULT_BROKERS.into(),
            partitions: 3,
            batch_size: 500,
            pipeline_depth: 4,
            checkpoint_interval: Duration::from_millis(100),
            poll_interval: Duration::from_secs(1),
            standby_interval: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            leader_timeout: Duration::from_secs(15),
            broker_check_interval: Duration::from_secs(5),
        }
    }
}

/// Why a relay stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the leader lock connection failed: {0}")]
    LockLost(sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the leader lock connection timed out")]
    Silent,
}

/// What a running relay reports about itself (for tests and readiness checks).
#[derive(Debug, Default)]
pub struct RelayStatus {
    is_leader: AtomicBool,
    published: AtomicU64,
    enqueued: AtomicU64,
}

impl RelayStatus {
    /// Whether this relay currently holds the leader lock.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::SeqCst)
    }

    /// Events this relay has published, seen acknowledged and checkpointed (duplicates
    /// included).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Events this relay has handed to the producer, acknowledged or not (events published
    /// again count again). Ahead of [`RelayStatus::published`] by the pages in flight.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::SeqCst)
    }
}

/// A relay replica. Run several: one leads, the others stand by.
pub struct Relay {
    store: EventStore,
    config: RelayConfig,
    status: Arc<RelayStatus>,
}

impl Relay {
    /// A replica publishing `store`'s log; it does nothing until [`Relay::run`].
    pub fn new(store: EventStore, config: RelayConfig) -> Self {
        Self { store, config, status: Arc::new(RelayStatus::default()) }
    }

    /// A handle on this relay's status.
    pub fn status(&self) -> Arc<RelayStatus> {
        self.status.clone()
    }

    /// The advisory-lock key of a relay name (stable across processes and versions).
    pub fn lock_key(name: &str) -> i64 {
        // FNV-1a, 64 bit: stable, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in "ordo.relay:".bytes().chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(h.to_ne_bytes())
    }

    /// Runs until `shutdown` fires: waits for leadership, then publishes. Errors while leading
    /// (a broken lock connection, the database away) make the relay step down, back off and
    /// compete for the lock again; they are logged, not returned.
    pub async fn run(&self, shutdown: Shutdown) {
        let mut backoff = Backoff::new(self.config.max_backoff);
        // A standby reports 0, so a missing series means a missing relay, not a waiting one.
        self.set_leader(false);
        while !shutdown.is_triggered() {
            let Some(lock) = self.acquire(&shutdown).await else { return };
            self.set_leader(true);
            tracing::info!(relay = %self.config.name, "relay is leader");
            let outcome = self.lead(lock, &shutdown).await;
            self.set_leader(false);
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(relay = %self.config.name, error = %e, "relay stepped down");
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = shutdown.wait() => return,
                    }
                }
            }
        }
    }

    fn set_leader(&self, leader: bool) {
        self.status.is_leader.store(leader, Ordering::SeqCst);
        metrics::gauge!("ordo_relay_is_leader").set(if leader { 1.0 } else { 0.0 });
    }

    /// Waits until this replica holds the leader lock (or shutdown).
    async fn acquire(&self, shutdown: &Shutdown) -> Option<PgConnection> {
        let key = Self::lock_key(&self.config.name);
        let mut logged_standby = false;
        loop {
            match self.try_lock(key).await {
                Ok(Some(conn)) => return Some(conn),
                Ok(None) if !logged_standby => {
                    tracing::info!(relay = %self.config.name, "relay standing by, another replica leads");
                    logged_standby = true;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(relay = %self.config.name, error = %e, "relay cannot try the leader lock"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.standby_interval) => {}
                () = shutdown.wait() => return None,
            }
        }
    }

    async fn try_lock(&self, key: i64) -> Result<Option<PgConnection>, sqlx::Error> {
        let options = (*self.store.pool().connect_options()).clone().application_name("ordo-relay-lock");
        let mut conn = options.connect().await?;
        // A leader that is frozen or cut off stops speaking on this session; PostgreSQL then ends
        // it, which frees the lock for a standby (the keepalives cover a silent peer too).
        let timeout_ms = self.config.leader_timeout.as_millis().max(1000).to_string();
        let keepalive_s = (self.config.leader_timeout.as_secs() / 3).max(1).to_string();
        sqlx::query(
            "SELECT set_config('idle_session_timeout', $1, false), set_config('tcp_user_timeout', $1, false), \
                    set_config('tcp_keepalives_idle', $2, false), set_config('tcp_keepalives_interval', $2, false), \
                    set_config('tcp_keepalives_count', '3', false)",
        )
        .bind(&timeout_ms)
        .bind(&keepalive_s)
        .execute(&mut conn)
        .await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
        if got {
            Ok(Some(conn))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Listens for the log's notifications (one per committed append batch, channel
    /// `ordo_log`); `None` when that fails, and the relay polls meanwhile.
    async fn listen(&self) -> Option<sqlx::postgres::PgListener> {
        let attempt = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(self.store.pool()).await?;
            listener.listen("ordo_log").await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(relay = %self.config.name, error = %e, "cannot listen for log notifications, polling");
                None
            }
        }
    }

    /// Runs `work` while speaking on the lock session every quarter of the leader timeout, so a
    /// slow broker does not cost a live leader its lock. Fails when the session is gone.
    async fn fenced<F: std::future::Future>(&self, lock: &mut PgConnection, work: F) -> Result<F::Output, RelayError> {
        let beat = (self.config.leader_timeout / 4).max(Duration::from_millis(250));
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                () = tokio::time::sleep(beat) => {
                    sqlx::query("SELECT 1").execute(&mut *lock).await.map_err(RelayError::LockLost)?;
                }
            }
        }
    }

    /// Sleeps `d` while keeping the lock session alive; a failed beat ends the sleep early (the
    /// next statement on the session reports it).
    async fn fenced_sleep(&self, lock: &mut PgConnection, d: Duration) {
        let _ = self.fenced(lock, tokio::time::sleep(d)).await;
    }

    /// Starts a new broker incarnation: the next incarnation number, the checkpoint back to the
    /// start of the log and no partition offsets, in one statement on the lock session. The
    /// relay then republishes the whole log; consumers skip what they already have by stream
    /// version, and read re-created partitions from their beginning.
    async fn new_incarnation(&self, lock: &mut PgConnection, reason: &str) -> Result<RelayState, RelayError> {
        let name = &self.config.name;
        let incarnation: i64 = sqlx::query_scalar(
            "WITH p AS (DELETE FROM relay_partitions WHERE name = $1), \
                  c AS (UPDATE checkpoints SET position = 0, updated_at = now() WHERE name = $1) \
             INSERT INTO relay_incarnations AS i (name, incarnation, reason) VALUES ($1, 2, $2) \
             ON CONFLICT (name) DO UPDATE SET incarnation = i.incarnation + 1, started_at = now(), reason = EXCLUDED.reason \
             RETURNING incarnation",
        )
        .bind(name)
        .bind(reason)
        .fetch_one(&mut *lock)
        .await
        .map_err(RelayError::LockLost)?;
        tracing::warn!(relay = %name, incarnation, reason, "the broker lost what was published: republishing the log from the start");
        metrics::counter!("ordo_relay_republishes_total").increment(1);
        metrics::gauge!("ordo_relay_incarnation").set(incarnation as f64);
        Ok(RelayState { cursor: LogCursor::START, incarnation, partitions: HashMap::new(), burst: HashMap::new() })
    }

    /// Creates the topics (retrying until the broker answers) and the producer; answers which
    /// topics had to be created. `None` on shutdown.
    async fn prepare_kafka(
        &self,
        lock: &mut PgConnection,
        shutdown: &Shutdown,
    ) -> Result<Option<(Producing, Vec<String>)>, RelayError> {
        let cfg = &self.config;
        let mut backoff = Backoff::new(cfg.max_backoff);
        loop {
            let created = self.fenced(lock, kafka::create_missing_topics(&cfg.brokers, cfg.partitions)).await?;
            match created {
                Ok(created) => return Ok(Some((Producing::new(cfg)?, created))),
                Err(e) => {
                    metrics::counter!("ordo_relay_publish_errors_total").increment(1);
                    tracing::warn!(relay = %cfg.name, error = %e, "cannot create topics, retrying");
                }
            }
            sqlx::query("SELECT 1").execute(&mut *lock).await.map_err(RelayError::LockLost)?;
            tokio::select! {
                () = backoff.wait() => {}
                () = shutdown.wait() => return Ok(None),
            }
        }
    }
}

/// Updates the lag and horizon gauges; failures only leave them stale.
async fn record_lag(store: &EventStore, cursor: LogCursor) {
    let lag = sqlx::query(
        "SELECT count(*) AS n, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(recorded_at))::float8, 0) AS age \
         FROM events WHERE position > $1",
    )
    .bind(cursor.position)
    .fetch_one(store.pool())
    .await;
    match lag {
        Ok(row) => {
            let n: i64 = row.try_get("n").unwrap_or_default();
            let age: f64 = row.try_get("age").unwrap_or_default();
            metrics::gauge!("ordo_relay_lag_events").set(n as f64);
            metrics::gauge!("ordo_relay_lag_seconds").set(age.max(0.0));
        }
        Err(e) => tracing::debug!(error = %e, "relay lag query failed"),
    }
    if let Ok(holder) = store.writer_lock_holder().await {
        let held = holder.as_ref().map_or(0.0, |h| h.held_seconds);
        metrics::gauge!("ordo_log_writer_lock_held_seconds").set(held);
        if held > 5.0 {
            if let Some(h) = holder {
                tracing::warn!(pid = h.pid, application = %h.application_name, state = %h.state,
                    held_seconds = h.held_seconds, "a session holds the event log's writer lock, every append waits");
            }
        }
    }
}

/// The leader's producer, replaced by a fresh one when it lost the broker (at most every 5 s, so
/// a broker that stays away does not make the relay churn clients).
struct Producing {
    producer: publish::RelayProducer,
    watch: publish::BrokerWatch,
    since: Instant,
}

impl Producing {
    const MIN_AGE: Duration = Duration::from_secs(5);

    fn new(cfg: &RelayConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let (producer, watch) = publish::producer(cfg)?;
        Ok(Self { producer, watch, since: Instant::now() })
    }

    /// A fresh producer in place of this one.
    fn renew(&mut self, cfg: &RelayConfig) -> Result<(), rdkafka::error::KafkaError> {
        let old = std::mem::replace(self, Self::new(cfg)?);
        publish::discard(old.producer);
        Ok(())
    }

    fn renewal_is_due(&self) -> bool {
        self.watch.is_gone() && self.since.elapsed() >= Self::MIN_AGE
    }

    /// Resolves once [`Producing::renewal_is_due`].
    async fn renewal_due(&self) {
        self.watch.gone().await;
        tokio::time::sleep(Self::MIN_AGE.saturating_sub(self.since.elapsed())).await;
    }
}

/// Where the leader is: its checkpoint, the broker incarnation it publishes to, and the next
/// offset its messages reached in each partition of that incarnation.
#[derive(Debug)]
struct RelayState {
    cursor: LogCursor,
    incarnation: i64,
    partitions: HashMap<(String, i32), Mark>,
    /// The first offset delivered in each partition since the last moment nothing was in
    /// flight. Pages in flight together may share the broker's record batches, so the batch
    /// holding a page's messages can start as far back as this.
    burst: HashMap<(String, i32), i64>,
}

/// How far the relay's messages reached in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// One past the highest offset delivered.
    next_offset: i64,
    /// One past the first offset of the latest burst delivered here (pages sent while others
    /// were in flight, see `RelayState::burst`): the lowest high watermark a broker still
    /// holding it reports (some report the start of their last record batch rather than its
    /// end, so `next_offset` would be too strict).
    watermark_floor: i64,
}

/// The reason for a new incarnation when `created` topics had to be created again.
fn topics_recreated(created: &[String]) -> Option<String> {
    (!created.is_empty()).then(|| format!("topics {} were missing", created.join(", ")))
}

impl RelayState {
    /// Why the broker lost what this relay published, when it had published something and
    /// `created` topics had to be created again.
    fn recreated(&self, created: &[String]) -> Option<String> {
        topics_recreated(created).filter(|_| !self.partitions.is_empty())
    }

    /// The first delivery that landed below where this relay's messages already reached in its
    /// partition, if any.
    fn lost_by<'a>(&self, delivered: &'a [publish::Delivered]) -> Option<&'a publish::Delivered> {
        delivered
            .iter()
            .find(|d| self.partitions.get(&(d.topic.to_owned(), d.partition)).is_some_and(|m| d.offset < m.next_offset))
    }

    /// Records an acknowledged page; `settled_all` when nothing else is in flight, so the next
    /// page starts a new burst.
    fn record(&mut self, delivered: &[publish::Delivered], next: LogCursor, settled_all: bool) {
        let mut batch: HashMap<(&str, i32), (i64, i64)> = HashMap::new();
        for d in delivered {
            let (lo, hi) = batch.entry((d.topic, d.partition)).or_insert((d.offset, d.offset));
            *lo = (*lo).min(d.offset);
            *hi = (*hi).max(d.offset);
        }
        for ((topic, partition), (lo, hi)) in batch {
            let key = (topic.to_owned(), partition);
            let first = *self.burst.entry(key.clone()).or_insert(lo);
            let mark = Mark { next_offset: hi + 1, watermark_floor: first.min(lo) + 1 };
            let slot = self.partitions.entry(key).or_insert(mark);
            slot.next_offset = slot.next_offset.max(mark.next_offset);
            slot.watermark_floor = slot.watermark_floor.max(mark.watermark_floor);
        }
        if settled_all {
            self.burst.clear();
        }
        self.cursor = next;
    }
}

async fn load_state(conn: &mut PgConnection, name: &str) -> Result<RelayState, sqlx::Error> {
    let position: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    let incarnation: i64 = sqlx::query_scalar(
        "WITH i AS (INSERT INTO relay_incarnations (name, incarnation, reason) VALUES ($1, 1, 'first publication') \
                    ON CONFLICT (name) DO NOTHING RETURNING incarnation) \
         SELECT incarnation FROM i UNION ALL SELECT incarnation FROM relay_incarnations WHERE name = $1 LIMIT 1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    let rows =
        sqlx::query("SELECT topic, partition, next_offset, watermark_floor FROM relay_partitions WHERE name = $1")
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
    let mut partitions = HashMap::new();
    for r in rows {
        let mark = Mark { next_offset: r.try_get("next_offset")?, watermark_floor: r.try_get("watermark_floor")? };
        partitions.insert((r.try_get("topic")?, r.try_get("partition")?), mark);
    }
    Ok(RelayState {
        cursor: position.map_or(LogCursor::START, LogCursor::at),
        incarnation,
        partitions,
        burst: HashMap::new(),
    })
}

/// Writes the checkpoint (never backwards), the partitions' next offsets and the dead letters
/// published since the last save through the lock connection, in one statement.
async fn save_progress(
    conn: &mut PgConnection,
    name: &str,
    state: &RelayState,
    dead_letters: &[publish::DeadLetter],
) -> Result<(), sqlx::Error> {
    let topics: Vec<&str> = state.partitions.keys().map(|(t, _)| t.as_str()).collect();
    let parts: Vec<i32> = state.partitions.keys().map(|(_, p)| *p).collect();
    let offsets: Vec<i64> = state.partitions.values().map(|m| m.next_offset).collect();
    let floors: Vec<i64> = state.partitions.values().map(|m| m.watermark_floor).collect();
    let dl = dead_letters;
    sqlx::query(
        "WITH c AS (INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) \
                    ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now() \
                    WHERE checkpoints.position < EXCLUDED.position), \
              p AS (INSERT INTO relay_partitions AS r (name, topic, partition, next_offset, watermark_floor) \
                    SELECT $1, t, n, o, f FROM unnest($3::text[], $4::int4[], $5::int8[], $11::int8[]) AS x(t, n, o, f) \
                    ON CONFLICT (name, topic, partition) DO UPDATE \
                    SET next_offset = GREATEST(r.next_offset, EXCLUDED.next_offset), \
                        watermark_floor = GREATEST(r.watermark_floor, EXCLUDED.watermark_floor)) \
         INSERT INTO relay_dead_letters (position, category, stream_id, version, error) \
         SELECT * FROM unnest($6::int8[], $7::text[], $8::uuid[], $9::int8[], $10::text[]) \
         ON CONFLICT (position) DO NOTHING",
    )
    .bind(name)
    .bind(state.cursor.position)
    .bind(&topics)
    .bind(&parts)
    .bind(&offsets)
    .bind(dl.iter().map(|d| d.position).collect::<Vec<_>>())
    .bind(dl.iter().map(|d| d.category).collect::<Vec<_>>())
    .bind(dl.iter().map(|d| d.stream_id).collect::<Vec<_>>())
    .bind(dl.iter().map(|d| d.version).collect::<Vec<_>>())
    .bind(dl.iter().map(|d| d.error.as_str()).collect::<Vec<_>>())
    .bind(&floors)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why the broker no longer holds what this relay published, if it does not: a partition whose
/// high watermark is below the offset this relay's messages reached, or one of the topics gone.
/// A broker that cannot be asked gives no answer (the publish path finds out).
async fn broker_lost_data(
    cfg: &RelayConfig,
    producer: &publish::RelayProducer,
    partitions: &HashMap<(String, i32), Mark>,
) -> Option<String> {
    if partitions.is_empty() {
        return None;
    }
    let producer = producer.clone();
    let partitions = partitions.clone();
    let found = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        let mut missing = false;
        for ((topic, partition), mark) in &partitions {
            match producer.client().fetch_watermarks(topic, *partition, Duration::from_secs(5)) {
                Ok((_, high)) if high < mark.watermark_floor => {
                    let next = mark.next_offset;
                    return Err(format!(
                        "{topic} partition {partition} ends at {high}, the relay's messages reached {next}"
                    ));
                }
                Ok(_) => {}
                Err(
                    rdkafka::error::KafkaError::MetadataFetch(code) | rdkafka::error::KafkaError::OffsetFetch(code),
                ) if code == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition => {
                    missing = true;
                }
                Err(_) => return Ok(false),
            }
        }
        Ok(missing)
    })
    .await
    .unwrap_or(Ok(false));
    match found {
        Err(reason) => Some(reason),
        Ok(false) => None,
        Ok(true) => {
            // A topic is gone: create it, and say so if it really was missing.
            let created = kafka::create_missing_topics(&cfg.brokers, cfg.partitions).await.ok()?;
            topics_recreated(&created)
        }
    }
}

/// Exponential backoff from 100 ms up to a ceiling.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self { next: Duration::from_millis(100), max }
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next()).await;
    }

    /// The wait before the next retry; the one after is twice as long, up to the ceiling.
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}
