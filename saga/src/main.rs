//! `order-saga`: drives orders to confirmed or rejected and compensates cancellations.
//!
//! Configuration (flag, environment variable, default):
//! - `--database-url`, `DATABASE_URL`, `postgres://postgres@127.0.0.1:5432/ordo`
//! - `--brokers`, `KAFKA_BROKERS`, `127.0.0.1:9092`
//! - `--ops-addr`, `ORDO_SAGA_OPS_ADDR`, `127.0.0.1:9102` (`/healthz`, `/readyz`, `/metrics`)
//! - `--group-id`, `ORDO_SAGA_GROUP_ID`, `ordo-order-saga`
//! - `--partitions`, `ORDO_SAGA_PARTITIONS`, 3 (for topics created if missing)
//! - `--concurrency`, `ORDO_SAGA_CONCURRENCY`, 64 (events handled at once, of different orders)
//!
//! SIGTERM or Ctrl-C: the events in flight are finished (for up to 10 s), the offsets they allow
//! are committed, then it exits.

use std::sync::Arc;

use clap::Parser;
use ordo_commands::CommandService;
use ordo_event_store::{connect, kafka, migrate, EventStore};
use ordo_saga::{SagaConfig, SagaStatus};
use ordo_service::ops;
use ordo_service::shutdown::Shutdown;

#[derive(Debug, Parser)]
#[command(name = "order-saga", about = "The Ordo order saga")]
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
    #[arg(long, env = "ORDO_SAGA_OPS_ADDR", default_value = "127.0.0.1:9102")]
    ops_addr: String,
    /// Consumer group; saga replicas share it.
    #[arg(long, env = "ORDO_SAGA_GROUP_ID", default_value = "ordo-order-saga")]
    group_id: String,
    /// Partitions of topics created at start-up when missing.
    #[arg(long, env = "ORDO_SAGA_PARTITIONS", default_value_t = 3)]
    partitions: i32,
    /// Events handled at once, of different orders (1: one at a time).
    #[arg(long, env = "ORDO_SAGA_CONCURRENCY", default_value_t = ordo_saga::DEFAULT_CONCURRENCY,
        value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _telemetry = ordo_service::telemetry::init();
    let args = Args::parse();
    if let Err(e) = kafka::check_environment() {
        tracing::error!(error = %e, "invalid kafka settings");
        std::process::exit(2);
    }
    let pool = connect(&args.database_url, 8).await?;
    migrate(&pool).await?;
    let service = CommandService::new(EventStore::new(pool.clone()));
    let config = SagaConfig {
        brokers: args.brokers.clone(),
        group_id: args.group_id,
        partitions: args.partitions,
        concurrency: usize::from(args.concurrency),
        ..SagaConfig::default()
    };

    tracing::info!(brokers = %config.brokers, group = %config.group_id, concurrency = config.concurrency, "order saga starting");
    let stop = Shutdown::on_signal();
    let checks = vec![ops::postgres(pool.clone()), kafka::readiness(args.brokers.clone())];
    let ops_task = ops::serve_worker_ops(&args.ops_addr, checks, stop.clone()).await?;

    let result = ordo_saga::run(service, config, Arc::new(SagaStatus::default()), stop.clone()).await;
    stop.trigger();
    let _ = ops_task.await;
    result?;
    Ok(())
}
