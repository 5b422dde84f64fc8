//! `event-relay`: publishes the Postgres event log to Kafka. Run two for failover: one leads,
//! the other stands by.
//!
//! Configuration (flag, environment variable, default):
//! - `--database-url`, `DATABASE_URL`, `postgres://postgres@127.0.0.1:5432/ordo`
//! - `--brokers`, `KAFKA_BROKERS`, `127.0.0.1:9092`
//! - `--ops-addr`, `ORDO_RELAY_OPS_ADDR`, `127.0.0.1:9101` (`/healthz`, `/readyz`, `/metrics`)
//! - `--name`, `ORDO_RELAY_NAME`, `relay` (checkpoint and leader-lock name)
//! - `--batch-size`, `ORDO_RELAY_BATCH_SIZE`, 500
//! - `--poll-interval-ms`, `ORDO_RELAY_POLL_INTERVAL_MS`, 1000 (a fallback: appends notify the
//!   relay)
//! - `--partitions`, `ORDO_RELAY_PARTITIONS`, 3 (for topics the relay creates)
//! - `--delivery-timeout-ms`, `ORDO_RELAY_DELIVERY_TIMEOUT_MS`, 10000
//! - `--leader-timeout-ms`, `ORDO_RELAY_LEADER_TIMEOUT_MS`, 15000 (a frozen leader is replaced
//!   after this long)
//! - `ORDO_EVENT_SIGNING_KEY` (environment only, never logged): the key messages are signed
//!   with; unset, a random key kept in the database is used
//!
//! SIGTERM or Ctrl-C: the in-flight batch finishes and its checkpoint is saved, then it exits.

use std::time::Duration;

use clap::Parser;
use ordo_event_store::relay::{Relay, RelayConfig};
use ordo_event_store::{connect, kafka, migrate, EventStore};
use ordo_service::ops;
use ordo_service::shutdown::Shutdown;

#[derive(Debug, Parser)]
#[command(name = "event-relay", about = "Publishes the Ordo event log to Kafka")]
struct Args {
    /// Postgres holding the event log (never logged).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ordo",
        hide_env_values = true
    )]
    database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = kafka::DEFAULT_BROKERS)]
    brokers: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "ORDO_RELAY_OPS_ADDR", default_value = "127.0.0.1:9101")]
    ops_addr: String,
    /// Checkpoint and leader-lock name; replicas with the same name elect one leader.
    #[arg(long, env = "ORDO_RELAY_NAME", default_value = "relay")]
    name: String,
    /// Events read and published per batch.
    #[arg(long, env = "ORDO_RELAY_BATCH_SIZE", default_value_t = 500)]
    batch_size: i64,
    /// Longest pause when the log has nothing new, in milliseconds (appends wake the relay).
    #[arg(long, env = "ORDO_RELAY_POLL_INTERVAL_MS", default_value_t = 1000)]
    poll_interval_ms: u64,
    /// Partitions of topics the relay creates when missing.
    #[arg(long, env = "ORDO_RELAY_PARTITIONS", default_value_t = 3)]
    partitions: i32,
    /// How long a message may wait for an acknowledgement before its batch is retried.
    #[arg(long, env = "ORDO_RELAY_DELIVERY_TIMEOUT_MS", default_value_t = 10_000)]
    delivery_timeout_ms: u64,
    /// How long the leader's lock session may stay silent before a standby takes over.
    #[arg(long, env = "ORDO_RELAY_LEADER_TIMEOUT_MS", default_value_t = 15_000)]
    leader_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _telemetry = ordo_service::telemetry::init();
    let args = Args::parse();
    if let Err(e) = kafka::check_environment() {
        tracing::error!(error = %e, "invalid kafka settings");
        std::process::exit(2);
    }
    if let Err(e) = ordo_event_store::signing::SigningKey::from_env() {
        tracing::error!(error = %e, "invalid event signing key");
        std::process::exit(2);
    }
    let pool = connect(&args.database_url, 4).await?;
    migrate(&pool).await?;
    let store = EventStore::new(pool.clone());
    let config = RelayConfig {
        name: args.name,
        brokers: args.brokers.clone(),
        partitions: args.partitions,
        batch_size: args.batch_size.max(1),
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        leader_timeout: Duration::from_millis(args.leader_timeout_ms.max(1000)),
        ..RelayConfig::default()
    };

    tracing::info!(brokers = %config.brokers, relay = %config.name, "event relay starting");
    let stop = Shutdown::on_signal();
    let checks = vec![ops::postgres(pool.clone()), kafka::readiness(args.brokers.clone())];
    let ops_task = ops::serve_worker_ops(&args.ops_addr, checks, stop.clone()).await?;

    Relay::new(store, config).run(stop.clone()).await;
    stop.trigger();
    let _ = ops_task.await;
    tracing::info!("event relay stopped");
    Ok(())
}
