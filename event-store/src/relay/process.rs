//! The `event-relay` process: its configuration (flags, each also settable as
//! `ORDO_RELAY_<FLAG>`, see `ordo_service::config` for the conventions; secrets from the
//! environment only: the database URL, `ORDO_RELAY_DATABASE_URL` or `ORDO_DATABASE_URL`, and
//! the message signing key `ORDO_EVENT_SIGNING_KEY`) and its life: ops endpoints, then the relay
//! until shutdown.
//!
//! `DATABASE_URL` and `KAFKA_BROKERS` of earlier releases still work, with a warning, and so
//! does the `--brokers` flag (now `--kafka-brokers`).

use std::time::Duration;

use ordo_service::config::{DatabaseArgs, KafkaArgs, OpsArgs, Process, ProcessArgs, Secret};
use ordo_service::ops;
use ordo_service::shutdown::Shutdown;

use super::{Relay, RelayConfig};
use crate::{connect, kafka, EventStore};

/// The relay among Ordo's processes: its variables are `ORDO_RELAY_<SETTING>`.
pub const PROCESS: Process = Process {
    binary: "event-relay",
    prefix: "RELAY",
    deprecated: &[("DATABASE_URL", "DATABASE_URL"), ("KAFKA_BROKERS", "KAFKA_BROKERS")],
    secrets: &["DATABASE_URL", "EVENT_SIGNING_KEY", "PERSONAL_DATA_KEK", "PERSONAL_DATA_KEK_PREVIOUS"],
};

/// The relay's defaults where they differ from the shared groups' (argument id, value).
const DEFAULTS: &[(&str, &str)] = &[("ops_addr", "127.0.0.1:9101"), ("max_connections", "4")];

/// `event-relay` flags; each falls back to its environment variable, then to its default.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Publishes the Ordo event log to Kafka; run two for failover", version)]
pub struct Args {
    /// Checkpoint and leader-lock name; replicas with the same name elect one leader.
    #[arg(long, default_value = "relay")]
    pub name: String,
    /// Events read and published per batch.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..))]
    pub batch_size: i64,
    /// Longest pause when the log has nothing new, in milliseconds (appends wake the relay).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_interval_ms: u64,
    /// Partitions of topics the relay creates when missing.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// How long a message may wait for an acknowledgement before its batch is retried.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub delivery_timeout_ms: u64,
    /// Pages published at once: the next page is read and sent while earlier ones wait for
    /// their acknowledgements (1: one page at a time).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub pipeline_depth: u16,
    /// Longest interval between two checkpoint saves while events flow, in milliseconds (the
    /// checkpoint is also saved whenever the relay goes idle, fails or stops).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval_ms: u64,
    /// How long the leader's lock session may stay silent before a standby takes over (at
    /// least 1000).
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub leader_timeout_ms: u64,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl ProcessArgs for Args {
    const PROCESS: Process = PROCESS;
    const DEFAULTS: &'static [(&'static str, &'static str)] = DEFAULTS;
}

/// Everything [`run`] needs. The database URL is a [`Secret`].
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret,
    pub database: DatabaseArgs,
    pub ops_addr: std::net::SocketAddr,
    pub relay: RelayConfig,
}

/// Why the relay's configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Kafka(#[from] kafka::SettingsError),
    #[error("{0}")]
    Store(#[from] crate::StoreError),
}

impl Config {
    /// The configuration of parsed flags and the database URL.
    pub fn from_args(args: Args, database_url: Secret) -> Self {
        let relay = RelayConfig {
            name: args.name,
            brokers: args.kafka.brokers,
            partitions: args.partitions,
            batch_size: args.batch_size,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
            leader_timeout: Duration::from_millis(args.leader_timeout_ms),
            pipeline_depth: usize::from(args.pipeline_depth),
            checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms),
            ..RelayConfig::default()
        };
        Self { database_url, database: args.database, ops_addr: args.ops.ops_addr, relay }
    }

    /// Flags, environment and the database URL; the `ORDO_KAFKA_*` client properties and the
    /// signing key are checked. `--help` and bad flags end the process as clap does.
    ///
    /// # Errors
    /// An `ORDO_KAFKA_*` property that librdkafka refuses or Ordo reserves; a signing key that
    /// is too short.
    pub fn load() -> Result<Self, ConfigError> {
        let config = Self::from_args(Args::load_args(), PROCESS.database_url());
        kafka::check_environment()?;
        crate::signing::SigningKey::from_env()?;
        crate::personal::check_environment()?;
        Ok(config)
    }
}

/// The process's life: connects, checks the schema (or migrates with `--migrate`), serves the
/// ops endpoints and relays until `shutdown` fires; the batch in flight finishes and its
/// checkpoint is saved before it returns.
///
/// # Errors
/// When the database cannot be reached, the schema is behind or the ops address cannot be
/// bound.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let pool = connect(config.database_url.expose(), config.database.max_connections).await?;
    crate::prepare_schema(&pool, &[&crate::MIGRATOR], config.database.migrate).await?;
    let relay = config.relay;
    tracing::info!(brokers = %relay.brokers, relay = %relay.name, "event relay starting");
    let checks = vec![ops::postgres(pool.clone()), kafka::readiness(relay.brokers.clone())];
    let ops_task = ops::serve_worker_ops(&config.ops_addr.to_string(), checks, shutdown.clone()).await?;
    Relay::new(EventStore::new(pool.clone()), relay).run(shutdown.clone()).await;
    shutdown.trigger();
    let _ = ops_task.await;
    pool.close().await;
    Ok(())
}
