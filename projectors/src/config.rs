//! Configuration of the `projectors` process: flags, each also settable as
//! `ORDO_PROJECTORS_<FLAG>` (see `ordo_service::config` for the conventions), and the database
//! URL from the environment only (`ORDO_PROJECTORS_DATABASE_URL` or `ORDO_DATABASE_URL`).
//! `DATABASE_URL`, `KAFKA_BROKERS`, `ORDO_PROJECTORS_GROUP` and `ORDO_PROJECTORS_DB_CONNECTIONS`
//! of earlier releases still work, with a warning.

use std::net::SocketAddr;

use ordo_event_store::kafka;
use ordo_service::config::{DatabaseArgs, KafkaArgs, OpsArgs, Process, ProcessArgs, Secret};

/// The projectors among Ordo's processes: their variables are `ORDO_PROJECTORS_<SETTING>`.
pub const PROCESS: Process = Process {
    binary: "projectors",
    prefix: "PROJECTORS",
    deprecated: &[
        ("DATABASE_URL", "DATABASE_URL"),
        ("KAFKA_BROKERS", "KAFKA_BROKERS"),
        ("ORDO_PROJECTORS_GROUP", "GROUP_ID"),
        ("ORDO_PROJECTORS_DB_CONNECTIONS", "DB_MAX_CONNECTIONS"),
    ],
    secrets: &["DATABASE_URL", "PERSONAL_DATA_KEK", "PERSONAL_DATA_KEK_PREVIOUS"],
};

/// The projectors' defaults where they differ from the shared groups' (argument id, value).
const DEFAULTS: &[(&str, &str)] = &[("ops_addr", "127.0.0.1:9103"), ("max_connections", "8")];

/// `projectors` flags; each falls back to its environment variable, then to its default.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Kafka consumer-group workers that build Ordo read models", version)]
pub struct Args {
    /// Consumer group id.
    #[arg(long, default_value = crate::GROUP_ID)]
    pub group_id: String,
    /// Most events applied in one Postgres transaction (a batch is whatever is queued, up to this).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Create the `ordo.*` topics at start (partitions per topic; 0 to skip).
    #[arg(long, default_value_t = 0)]
    pub create_topics: i32,
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

/// Everything [`crate::run::run`] needs. The database URL is a [`Secret`].
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret,
    /// Apply pending migrations at start instead of requiring `ordo migrate` first.
    pub migrate: bool,
    pub kafka_brokers: String,
    pub group_id: String,
    pub batch_size: usize,
    pub ops_addr: SocketAddr,
    pub db_connections: u32,
    pub create_topics: i32,
}

impl Config {
    /// The configuration of parsed flags and the database URL.
    pub fn from_args(args: Args, database_url: Secret) -> Self {
        Self {
            database_url,
            migrate: args.database.migrate,
            kafka_brokers: args.kafka.brokers,
            group_id: args.group_id,
            batch_size: usize::try_from(args.batch_size).unwrap_or(usize::MAX),
            ops_addr: args.ops.ops_addr,
            db_connections: args.database.max_connections,
            create_topics: args.create_topics,
        }
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
