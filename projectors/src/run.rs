//! The `projectors` process: ops endpoints, status metrics and the live consumer, stopped in
//! three steps (signal, stop taking messages and finish the batch, wait).

use std::time::Duration;

use ordo_event_store::kafka;
use ordo_service::ops;
use ordo_service::shutdown::Shutdown;
use sqlx::PgPool;

use crate::config::Config;
use crate::consumer::{run_consumer, ConsumerOptions};
use crate::{Projector, Target};

/// Runs the process until `shutdown` fires.
///
/// # Errors
/// When the database cannot be reached or its schema is behind, the ops address cannot be bound or the
/// consumer cannot join its group.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let pool = ordo_event_store::connect(config.database_url.expose(), config.db_connections).await?;
    let migrators = [&ordo_event_store::MIGRATOR, &crate::MIGRATOR];
    ordo_event_store::prepare_schema(&pool, &migrators, config.migrate).await?;
    if config.create_topics > 0 {
        kafka::ensure_topics(&config.kafka_brokers, config.create_topics).await?;
    }
    let checks = vec![ops::postgres(pool.clone()), kafka::readiness(config.kafka_brokers.clone())];
    let ops_task = ops::serve_worker_ops(&config.ops_addr.to_string(), checks, shutdown.clone()).await?;
    let metrics_task = tokio::spawn(status_metrics(pool.clone(), shutdown.clone()));

    let projector = Projector::new(pool.clone(), Target::all_live());
    let options = ConsumerOptions {
        brokers: config.kafka_brokers.clone(),
        group_id: config.group_id.clone(),
        batch_size: config.batch_size.max(1),
    };
    let result = run_consumer(projector, options, shutdown.clone()).await;
    shutdown.trigger();
    let _ = metrics_task.await;
    let _ = ops_task.await;
    pool.close().await;
    result?;
    Ok(())
}

/// Refreshes the lag, dead-letter and parked-stream gauges every 5 seconds.
async fn status_metrics(pool: PgPool, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        if let Err(e) = crate::status::publish_metrics(&pool).await {
            tracing::warn!(error = %e, "projection status query failed");
        }
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
