//! The `projectors` process: ops endpoints, status metrics and the live consumer, stopped in
//! three steps (signal, stop taking messages and finish the batch, wait).

use std::sync::Arc;
use std::time::Duration;

use ordo_event_store::kafka;
use ordo_service::ops;
use ordo_service::shutdown::Shutdown;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::consumer::{run_consumer, ConsumerOptions};
use crate::{Projector, Target};

/// Runs the process until `shutdown` fires.
///
/// # Errors
/// When the database cannot be reached or migrated, the ops address cannot be bound or the
/// consumer cannot join its group.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let pool = ordo_event_store::connect(&config.database_url, config.db_connections).await?;
    ordo_event_store::migrate(&pool).await?;
    crate::migrate(&pool).await?;
    if config.create_topics > 0 {
        kafka::ensure_topics(&config.kafka_brokers, config.create_topics).await?;
    }
    let listener = TcpListener::bind(config.ops_addr).await?;
    tracing::info!(addr = %config.ops_addr, "ops endpoints listening");
    let ops = ops::router(readiness(&pool, &config.kafka_brokers)?);
    let ops_shutdown = shutdown.clone();
    let ops_task = tokio::spawn(async move {
        ordo_service::http::serve(listener, ops, async move { ops_shutdown.wait().await }).await
    });
    let metrics_task = tokio::spawn(status_metrics(pool.clone(), shutdown.clone()));

    let projector = Projector::new(pool.clone(), Target::all_live());
    let options = ConsumerOptions {
        brokers: config.kafka_brokers.clone(),
        group_id: config.group_id.clone(),
        batch_size: config.batch_size.max(1),
        batch_wait: Duration::from_millis(config.batch_wait_ms),
    };
    let result = run_consumer(projector, options, shutdown.clone()).await;
    shutdown.trigger();
    let _ = metrics_task.await;
    let _ = ops_task.await;
    pool.close().await;
    result?;
    Ok(())
}

/// Postgres answers, and the brokers answer a metadata request.
fn readiness(pool: &PgPool, brokers: &str) -> anyhow::Result<Vec<(&'static str, ops::ReadinessCheck)>> {
    let pg = pool.clone();
    let client: Arc<BaseConsumer> = Arc::new(kafka::client_config(brokers).create()?);
    Ok(vec![
        (
            "postgres",
            ops::check(move || {
                let pg = pg.clone();
                async move { sqlx::query("SELECT 1").execute(&pg).await.map(|_| ()).map_err(|e| e.to_string()) }
            }),
        ),
        (
            "kafka",
            ops::check(move || {
                let client = client.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        client.fetch_metadata(None, Duration::from_secs(2)).map(|_| ()).map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())?
                }
            }),
        ),
    ])
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
