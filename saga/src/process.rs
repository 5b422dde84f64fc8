//! The `order-saga` process: its configuration (flags, each also settable as
//! `ORDO_SAGA_<FLAG>`, see `ordo_service::config` for the conventions; the database URL from
//! the environment only, `ORDO_SAGA_DATABASE_URL` or `ORDO_DATABASE_URL`) and its life:
//! ops endpoints, then the saga until shutdown.
//!
//! `DATABASE_URL` and `KAFKA_BROKERS` of earlier releases still work, with a warning, and so
//! does the `--brokers` flag (now `--kafka-brokers`).

use std::sync::Arc;

use ordo_commands::CommandService;
use ordo_event_store::{connect, kafka, EventStore};
use ordo_service::config::{DatabaseArgs, KafkaArgs, OpsArgs, Process, ProcessArgs, Secret};
use ordo_service::ops;
use ordo_service::shutdown::Shutdown;

use crate::{SagaConfig, SagaStatus};

/// The saga among Ordo's processes: its variables are `ORDO_SAGA_<SETTING>`.
pub const PROCESS: Process = Process {
    binary: "order-saga",
    prefix: "SAGA",
    deprecated: &[("DATABASE_URL", "DATABASE_URL"), ("KAFKA_BROKERS", "KAFKA_BROKERS")],
    secrets: &["DATABASE_URL", "PERSONAL_DATA_KEK", "PERSONAL_DATA_KEK_PREVIOUS"],
};

/// The saga's defaults where they differ from the shared groups' (argument id, value).
const DEFAULTS: &[(&str, &str)] = &[("ops_addr", "127.0.0.1:9102"), ("max_connections", "8")];

/// `order-saga` flags; each falls back to its environment variable, then to its default.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "The Ordo order saga: drives orders to confirmed or rejected and compensates cancellations", version)]
pub struct Args {
    /// Consumer group; saga replicas share it.
    #[arg(long, default_value = "ordo-order-saga")]
    pub group_id: String,
    /// Partitions of topics created at start-up when missing.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Events handled at once, of different orders (1: one at a time).
    #[arg(long, default_value_t = crate::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
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
    pub saga: SagaConfig,
}

impl Config {
    /// The configuration of parsed flags and the database URL.
    pub fn from_args(args: Args, database_url: Secret) -> Self {
        let saga = SagaConfig {
            brokers: args.kafka.brokers,
            group_id: args.group_id,
            partitions: args.partitions,
            concurrency: usize::from(args.concurrency),
            ..SagaConfig::default()
        };
        Self { database_url, database: args.database, ops_addr: args.ops.ops_addr, saga }
    }

    /// Flags, environment and the database URL; the `ORDO_KAFKA_*` client properties are
    /// checked. `--help` and bad flags end the process as clap does.
    ///
    /// # Errors
    /// An `ORDO_KAFKA_*` property that librdkafka refuses or Ordo reserves; a malformed KEK.
    pub fn load() -> anyhow::Result<Self> {
        let config = Self::from_args(Args::load_args(), PROCESS.database_url());
        kafka::check_environment()?;
        ordo_event_store::personal::check_environment()?;
        Ok(config)
    }
}

/// The process's life: connects, checks the schema (or migrates with `--migrate`), serves the
/// ops endpoints and runs the saga until `shutdown` fires. The events in flight are finished
/// (for up to 10 s) and the offsets they allow committed before it returns.
///
/// # Errors
/// When the database cannot be reached, the schema is behind, the ops address cannot be bound
/// or the consumer cannot be created.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let pool = connect(config.database_url.expose(), config.database.max_connections).await?;
    let migrators = [&ordo_event_store::MIGRATOR, &crate::MIGRATOR];
    ordo_event_store::prepare_schema(&pool, &migrators, config.database.migrate).await?;
    let service = CommandService::new(EventStore::new(pool.clone()));
    let saga = config.saga;
    tracing::info!(brokers = %saga.brokers, group = %saga.group_id, concurrency = saga.concurrency, "order saga starting");
    let checks = vec![ops::postgres(pool.clone()), kafka::readiness(saga.brokers.clone())];
    let ops_task = ops::serve_worker_ops(&config.ops_addr.to_string(), checks, shutdown.clone()).await?;
    let result = crate::run(service, saga, Arc::new(SagaStatus::default()), shutdown.clone()).await;
    shutdown.trigger();
    let _ = ops_task.await;
    pool.close().await;
    Ok(result?)
}
