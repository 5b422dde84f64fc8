//! Configuration of the `projectors` process, from flags and environment variables.

use std::net::SocketAddr;

/// `projectors` settings. Secrets (the database URL's password) are never logged.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "projectors", about = "Kafka consumer-group workers that build Ordo read models")]
pub struct Config {
    /// Postgres holding the event log and the read models.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ordo",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Consumer group id.
    #[arg(long, env = "ORDO_PROJECTORS_GROUP", default_value = crate::GROUP_ID)]
    pub group_id: String,
    /// Most events applied in one Postgres transaction (a batch is whatever is queued, up to this).
    #[arg(long, env = "ORDO_PROJECTORS_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "ORDO_PROJECTORS_OPS_ADDR", default_value = "127.0.0.1:9103")]
    pub ops_addr: SocketAddr,
    /// Postgres connections.
    #[arg(long, env = "ORDO_PROJECTORS_DB_CONNECTIONS", default_value_t = 8)]
    pub db_connections: u32,
    /// Create the `ordo.*` topics at start (partitions per topic; 0 to skip).
    #[arg(long, env = "ORDO_PROJECTORS_CREATE_TOPICS", default_value_t = 0)]
    pub create_topics: i32,
}
