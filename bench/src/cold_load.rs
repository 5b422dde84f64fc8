//! Cold loads of long streams: a product with N events, loaded by a fresh `CommandService`
//! (a new process, an evicted lane) once by folding its whole history and once from the
//! snapshot the first load leaves behind.

use std::time::{Duration, Instant};

use ordo_commands::CommandService;
use ordo_domain::Product;
use ordo_event_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
use ordo_schemas::{Actor, EventMetadata, StreamCategory, StreamRef};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// Stream lengths in events, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    events: Vec<i64>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    let db = "ordo_bench_cold_load";
    let mut admin = PgConnection::connect(admin_url).await?;
    println!("cold load of one product stream by a fresh command service");
    println!("{:>10} | {:>14} | {:>18} {:>16}", "events", "whole fold ms", "from snapshot ms", "snapshot at");
    let mut results = Vec::new();
    for &n in &args.events {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await?;
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{db}"),
            None => format!("{admin_url}/{db}"),
        };
        let pool = ordo_event_store::connect(&url, 4).await?;
        ordo_event_store::migrate(&pool).await?;
        ordo_commands::migrate(&pool).await?;
        let store = EventStore::new(pool.clone());
        let stream = StreamRef::new(StreamCategory::Product, Uuid::new_v4());
        write_stream(&store, stream, n).await?;

        let whole = time_load(&store, stream).await?;
        let at = wait_for_snapshot(&pool, stream).await?;
        let from_snapshot = time_load(&store, stream).await?;
        println!("{:>10} | {:>14.1} | {:>18.1} {:>16}", n, ms(whole), ms(from_snapshot), at);
        results.push(serde_json::json!({
            "events": n, "whole_fold_ms": ms(whole), "from_snapshot_ms": ms(from_snapshot), "snapshot_version": at,
        }));
        pool.close().await;
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn time_load(store: &EventStore, stream: StreamRef) -> anyhow::Result<Duration> {
    let service = CommandService::new(store.clone());
    let started = Instant::now();
    let loaded = service.load::<Product>(stream).await?;
    let took = started.elapsed();
    anyhow::ensure!(loaded.state.exists(), "the product did not load");
    Ok(took)
}

async fn wait_for_snapshot(pool: &sqlx::PgPool, stream: StreamRef) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let at: Option<i64> = sqlx::query_scalar("SELECT version FROM aggregate_snapshots WHERE stream_id = $1")
            .bind(stream.id)
            .fetch_optional(pool)
            .await?;
        if let Some(at) = at {
            return Ok(at);
        }
        anyhow::ensure!(Instant::now() < deadline, "the cold load left no snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A listed product followed by `n - 1` restocks, appended 1,000 events per request.
async fn write_stream(store: &EventStore, stream: StreamRef, n: i64) -> anyhow::Result<()> {
    let merchant = Uuid::new_v4();
    let listed = serde_json::json!({
        "product_id": stream.id, "merchant_id": merchant, "sku": "COLD-1", "name": "Popular",
        "description": null, "price": {"amount_minor": 100, "currency": "EUR"}, "initial_stock": 0,
    });
    let mut events = vec![new_event("ProductListed", 2, listed)];
    let mut version = 0i64;
    for i in 1..n {
        let adjusted = serde_json::json!({"delta": 1, "reason": "restock", "on_hand_after": i});
        events.push(new_event("StockAdjusted", 1, adjusted));
        if events.len() == 1_000 || i == n - 1 {
            let chunk = std::mem::take(&mut events);
            let count = chunk.len() as i64;
            store.submit(AppendRequest::single(stream, ExpectedVersion::Exact(version), chunk)).await?;
            version += count;
        }
    }
    if !events.is_empty() {
        store.submit(AppendRequest::single(stream, ExpectedVersion::Exact(version), events)).await?;
    }
    Ok(())
}

fn new_event(event_type: &str, schema_version: i32, data: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        schema_version,
        data,
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    }
}
