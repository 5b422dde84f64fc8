//! The relay: publishes the event log to Kafka (a transactional outbox without a second table).
//!
//! - Reads the log with the commit-safe cursor ([`EventStore::read_all`]) from its checkpoint.
//! - Publishes each event to its category topic, key = stream id, with an idempotent producer
//!   (`acks=all`, at most 5 in flight, so a partition keeps the order it was given). The log
//!   guarantees that `read_all` returns each stream's versions in order (`ordo_append` refuses a
//!   transaction older than the stream's last writer), so a page is published as read.
//! - Waits until every delivery of a batch is acknowledged, and only then advances the
//!   checkpoint. A failed batch is published again after a backoff (consumers deduplicate by
//!   event id or stream version), topics are re-created if they vanished, and the producer is
//!   rebuilt; the relay never skips ahead, however long the broker is away.
//! - One active relay per checkpoint name: the leader holds a Postgres session advisory lock on a
//!   dedicated connection; standbys poll for it. The leader checks that connection before each
//!   batch and writes its checkpoint through it, so a leader whose lock connection broke stops
//!   publishing and cannot move the checkpoint.
//!
//! Metrics: `ordo_relay_events_published_total`, `ordo_relay_publish_errors_total`,
//! `ordo_relay_lag_events`, `ordo_relay_lag_seconds`, `ordo_relay_is_leader`,
//! `ordo_log_writer_lock_held_seconds`.

mod publish;

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
    /// Events read and published per batch (default 500).
    pub batch_size: i64,
    /// Sleep when the log has nothing new (default 100 ms).
    pub poll_interval: Duration,
    /// How often a standby tries to take the lock (default 1 s).
    pub standby_interval: Duration,
    /// How long a message may wait for an acknowledgement before its batch is retried (30 s).
    pub delivery_timeout: Duration,
    /// Longest wait between retries of a failing batch (default 5 s; starts at 100 ms).
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            name: "relay".into(),
            brokers: kafka::DEFAULT_BROKERS.into(),
            partitions: 3,
            batch_size: 500,
            poll_interval: Duration::from_millis(100),
            standby_interval: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
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
}

/// What a running relay reports about itself (for tests and readiness checks).
#[derive(Debug, Default)]
pub struct RelayStatus {
    is_leader: AtomicBool,
    published: AtomicU64,
}

impl RelayStatus {
    /// Whether this relay currently holds the leader lock.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::SeqCst)
    }

    /// Events this relay has published and seen acknowledged (duplicates included).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
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
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
        if got {
            Ok(Some(conn))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Publishes while holding the lock held by `lock`. Returns `Ok` on shutdown.
    async fn lead(&self, mut lock: PgConnection, shutdown: &Shutdown) -> Result<(), RelayError> {
        let cfg = &self.config;
        let Some(mut producer) = self.prepare_kafka(&mut lock, shutdown).await? else { return Ok(()) };
        let mut cursor = load_checkpoint(&mut lock, &cfg.name).await.map_err(RelayError::LockLost)?;
        let mut metrics_due = Instant::now();
        let mut backoff = Backoff::new(cfg.max_backoff);
        tracing::info!(relay = %cfg.name, position = cursor.position, "relay resuming");
        loop {
            if Instant::now() >= metrics_due {
                self.record_lag(cursor).await;
                metrics_due = Instant::now() + Duration::from_secs(1);
            }
            if shutdown.is_triggered() {
                return Ok(());
            }
            let (page, next) = self.store.read_all(cursor, cfg.batch_size).await?;
            if page.is_empty() {
                sqlx::query("SELECT 1").execute(&mut lock).await.map_err(RelayError::LockLost)?;
                tokio::select! {
                    () = tokio::time::sleep(cfg.poll_interval) => {}
                    () = shutdown.wait() => {}
                }
                continue;
            }
            // The log keeps each stream's versions in commit-safe read order (`ordo_append`
            // refuses an older transaction behind a newer writer), so a page is published as read.
            // Fence: publish only while the lock connection is alive.
            sqlx::query("SELECT 1").execute(&mut lock).await.map_err(RelayError::LockLost)?;
            loop {
                match publish::publish(&producer, &page).await {
                    Ok(()) => {
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        metrics::counter!("ordo_relay_publish_errors_total").increment(1);
                        tracing::warn!(relay = %cfg.name, error = %e, events = page.len(), "publish failed, retrying batch");
                        sqlx::query("SELECT 1").execute(&mut lock).await.map_err(RelayError::LockLost)?;
                        self.record_lag(cursor).await;
                        tokio::select! {
                            () = backoff.wait() => {}
                            () = shutdown.wait() => return Ok(()),
                        }
                        // The broker may have come back empty: re-create topics, rebuild the producer.
                        if let Err(e) = kafka::ensure_topics(&cfg.brokers, cfg.partitions).await {
                            tracing::warn!(relay = %cfg.name, error = %e, "cannot ensure topics");
                        }
                        producer = publish::producer(cfg)?;
                    }
                }
            }
            save_checkpoint(&mut lock, &cfg.name, next).await.map_err(RelayError::LockLost)?;
            let published = page.len() as u64;
            metrics::counter!("ordo_relay_events_published_total").increment(published);
            self.status.published.fetch_add(published, Ordering::SeqCst);
            cursor = next;
        }
    }

    /// Creates the topics (retrying until the broker answers) and the producer. `None` on
    /// shutdown.
    async fn prepare_kafka(
        &self,
        lock: &mut PgConnection,
        shutdown: &Shutdown,
    ) -> Result<Option<rdkafka::producer::FutureProducer>, RelayError> {
        let cfg = &self.config;
        let mut backoff = Backoff::new(cfg.max_backoff);
        loop {
            match kafka::ensure_topics(&cfg.brokers, cfg.partitions).await {
                Ok(()) => return Ok(Some(publish::producer(cfg)?)),
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

    /// Updates the lag and horizon gauges; failures only leave them stale.
    async fn record_lag(&self, cursor: LogCursor) {
        let lag = sqlx::query(
            "SELECT count(*) AS n, \
                    COALESCE(EXTRACT(EPOCH FROM now() - min(recorded_at))::float8, 0) AS age \
             FROM events WHERE position > $1",
        )
        .bind(cursor.position)
        .fetch_one(self.store.pool())
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
        if let Ok(holder) = self.store.writer_lock_holder().await {
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
}

async fn load_checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogCursor, sqlx::Error> {
    let row = sqlx::query("SELECT position FROM checkpoints WHERE name = $1").bind(name).fetch_optional(conn).await?;
    match row {
        Some(r) => Ok(LogCursor::at(r.try_get("position")?)),
        None => Ok(LogCursor::START),
    }
}

/// Writes the checkpoint through the lock connection, and never moves it backwards.
async fn save_checkpoint(conn: &mut PgConnection, name: &str, cursor: LogCursor) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) \
         ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now() \
         WHERE checkpoints.position < EXCLUDED.position",
    )
    .bind(name)
    .bind(cursor.position)
    .execute(conn)
    .await?;
    Ok(())
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
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}
