//! Append throughput of the event log: each writer appends single events to its own streams
//! with an exact expected version (no contention), as command handlers do.

use std::time::{Duration, Instant};

use ordo_event_store::{EventStore, ExpectedVersion, NewEvent};
use ordo_schemas::{Actor, EventMetadata, StreamCategory, StreamRef};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::stats::Summary;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent writers, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    writers: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Streams each writer rotates over.
    #[arg(long, default_value_t = 16)]
    streams_per_writer: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    let db = "ordo_bench_append";
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{admin_url}/{db}"),
    };
    let max = args.writers.iter().copied().max().unwrap_or(1) as u32 + 2;
    let pool = ordo_event_store::connect(&url, max).await?;
    ordo_event_store::migrate(&pool).await?;
    crate::pgbench::prepare(&pool).await?;
    let store = EventStore::new(pool.clone());
    let work_dir = std::env::temp_dir().join(format!("ordo-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work_dir)?;
    let duration = Duration::from_secs(args.seconds);

    println!("single-event appends vs pgbench one-row INSERT, {}s per run", args.seconds);
    println!(
        "{:>7} | {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>7}",
        "writers", "ordo ev/s", "p50 ms", "p99 ms", "pgbench tx/s", "p50 ms", "p99 ms", "ratio"
    );
    let mut results = Vec::new();
    for &writers in &args.writers {
        let ordo = append_run(&store, writers, args.streams_per_writer, duration).await?;
        let pg = crate::pgbench::run(&url, writers, duration, &work_dir)?;
        let ratio = if pg.per_second > 0.0 { ordo.per_second / pg.per_second } else { 0.0 };
        println!(
            "{:>7} | {:>12.0} {:>9.2} {:>9.2} | {:>12.0} {:>9.2} {:>9.2} | {:>6.2}x",
            writers, ordo.per_second, ordo.p50_ms, ordo.p99_ms, pg.per_second, pg.p50_ms, pg.p99_ms, ratio
        );
        results.push(serde_json::json!({"writers": writers, "ordo": ordo, "pgbench": pg, "ratio": ratio}));
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

async fn append_run(store: &EventStore, writers: usize, streams: usize, duration: Duration) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut own: Vec<(StreamRef, i64)> =
                (0..streams).map(|_| (StreamRef::new(StreamCategory::Product, Uuid::new_v4()), 0)).collect();
            let mut micros = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let slot = i % own.len();
                let (stream, version) = own[slot];
                let t = Instant::now();
                let out = store.append(stream, ExpectedVersion::Exact(version), vec![event(i)]).await?;
                micros.push(t.elapsed().as_micros() as u64);
                own[slot].1 = out.version;
                i += 1;
            }
            anyhow::Ok(micros)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Summary::from_micros(all, started.elapsed()))
}

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_type: "StockAdjusted".into(),
        schema_version: 1,
        data: serde_json::json!({"delta": 1, "reason": "restock", "on_hand_after": i}),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
        },
    }
}
