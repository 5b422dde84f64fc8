//! `ordo-bench rebuild`: appends a large realistic log (see [`crate::generate`]), then times the
//! one-pass rebuild of every projection over it, the whole-log verification, and the relay
//! publishing all of it from an empty checkpoint to a real broker.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use ordo_event_store::relay::{Relay, RelayConfig};
use ordo_event_store::EventStore;
use ordo_projectors::Projection;
use ordo_service::shutdown::Shutdown;
use sqlx::PgPool;

use crate::generate::{self, Shape};
use crate::stack::{BenchDb, BrokerProcess};

/// Goals this run is held against.
pub const REBUILD_GOAL: f64 = 150_000.0;
pub const VERIFY_GOAL: f64 = 200_000.0;
pub const RELAY_GOAL: f64 = 20_000.0;

#[derive(clap::Args)]
pub struct Args {
    /// Events to append (at least; the last batches may overshoot a little).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Concurrent appenders, each with its own part of the marketplace.
    #[arg(long, default_value_t = 4)]
    appenders: usize,
    /// Orders (with their product events) per append transaction.
    #[arg(long, default_value_t = 100)]
    orders_per_batch: usize,
    /// Longest wait for the relay to publish the whole log, in seconds.
    #[arg(long, default_value_t = 300)]
    relay_timeout: u64,
    /// Skip the relay measurement.
    #[arg(long)]
    skip_relay: bool,
    /// Measure only the relay (no rebuilds, no verification); with `--keep-db` it reuses the log.
    #[arg(long, conflicts_with = "skip_relay")]
    relay_only: bool,
    /// Keep the database `ordo_bench_rebuild` afterwards, and reuse it when it already holds
    /// enough events (skips the append).
    #[arg(long)]
    keep_db: bool,
    /// Where results go; default `bench-results/<UTC timestamp>/`.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What the run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildFigures {
    pub events: u64,
    /// `None` when an existing log was reused.
    pub append_seconds: Option<f64>,
    pub append_events_per_s: Option<f64>,
    pub rebuilds: Vec<OneRebuild>,
    /// The one pass for every projection: events of their categories read, per second of the
    /// whole rebuild (pass, indexes, catch-up and swaps).
    pub rebuild_all: Option<OneRebuild>,
    /// Whole-log verification: events checked per second.
    pub verify: Option<VerifyRun>,
    pub relay: Option<RelayRun>,
    pub load_average: [f64; 3],
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OneRebuild {
    pub projection: String,
    /// Events of the projection's categories applied.
    pub applied: u64,
    pub seconds: f64,
    /// Applied events per second.
    pub applied_per_s: f64,
    /// Log events read (the whole log) per second.
    pub read_per_s: f64,
    pub swap_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyRun {
    pub checked: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub ok: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayRun {
    pub published: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub batch_size: i64,
    pub completed: bool,
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("bench-results").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
    });
    std::fs::create_dir_all(&out)?;
    let db = reuse_or_create(admin_url, args.keep_db, args.events).await?;
    let pool = ordo_event_store::connect(&db.0.url, 10).await?;
    ordo_event_store::migrate(&pool).await?;
    ordo_projectors::migrate(&pool).await?;
    let store = EventStore::new(pool.clone());
    let mut figures = RebuildFigures::default();

    if db.1 {
        figures.events = count(&pool).await?;
        println!("reusing the log of {} events in {}", figures.events, db.0.name);
    } else {
        println!("appending {} events with {} appenders", args.events, args.appenders);
        let shape =
            Shape { merchants: 25, products_per_merchant: 40, customers: 500, orders_per_batch: args.orders_per_batch };
        let started = Instant::now();
        generate::generate(&store, args.events, args.appenders, shape).await?;
        let seconds = started.elapsed().as_secs_f64();
        figures.events = count(&pool).await?;
        figures.append_seconds = Some(seconds);
        figures.append_events_per_s = Some(figures.events as f64 / seconds);
        println!("  {} events in {seconds:.1} s ({:.0}/s)", figures.events, figures.events as f64 / seconds);
        sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    }

    if !args.relay_only {
        rebuild_and_verify(&pool, &mut figures).await?;
    }

    if !args.skip_relay {
        let l = crate::procstat::load_average();
        println!("load average before the relay: {:.2} {:.2} {:.2}", l[0], l[1], l[2]);
        figures.relay = Some(relay(&store, &out, figures.events, Duration::from_secs(args.relay_timeout)).await?);
    }
    figures.load_average = crate::procstat::load_average();
    std::fs::write(out.join("rebuild.json"), serde_json::to_vec_pretty(&figures)?)?;
    std::fs::write(out.join("rebuild.md"), markdown(&figures))?;
    println!("{}", markdown(&figures));
    pool.close().await;
    if !args.keep_db {
        db.0.drop_db().await?;
    }
    Ok(())
}

/// Rebuilds every projection in one pass, then verifies the whole log.
async fn rebuild_and_verify(pool: &PgPool, figures: &mut RebuildFigures) -> anyhow::Result<()> {
    let progress = ordo_event_store::progress::Progress::new();
    let started = Instant::now();
    let reports = ordo_projectors::rebuild::rebuild_with(pool, &Projection::ALL, &progress).await?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    for report in &reports {
        let one = OneRebuild {
            projection: report.projection.name().to_owned(),
            applied: report.events,
            seconds,
            applied_per_s: report.events as f64 / seconds,
            read_per_s: figures.events as f64 / seconds,
            swap_ms: report.swap.as_secs_f64() * 1000.0,
        };
        println!("rebuild {}: {} events applied, swap {:.0} ms", one.projection, one.applied, one.swap_ms);
        figures.rebuilds.push(one);
    }
    let all = OneRebuild {
        projection: "all (one pass)".to_owned(),
        applied: progress.done(),
        seconds,
        applied_per_s: progress.done() as f64 / seconds,
        read_per_s: figures.events as f64 / seconds,
        swap_ms: reports.iter().map(|r| r.swap.as_secs_f64() * 1000.0).sum(),
    };
    println!(
        "rebuild of every projection: {} events in {seconds:.1} s ({:.0}/s; {:.0}/s of the whole log)",
        all.applied, all.applied_per_s, all.read_per_s
    );
    figures.rebuild_all = Some(all);

    let started = Instant::now();
    let report = ordo_event_store::verify::verify(pool, None, None).await?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let run =
        VerifyRun { checked: report.checked, seconds, events_per_s: report.checked as f64 / seconds, ok: report.ok };
    println!("verify: {} events in {seconds:.1} s ({:.0}/s), ok {}", run.checked, run.events_per_s, run.ok);
    figures.verify = Some(run);
    Ok(())
}

/// The database and whether it already held the log.
async fn reuse_or_create(admin_url: &str, keep: bool, events: u64) -> anyhow::Result<(BenchDb, bool)> {
    if keep {
        let existing = BenchDb::existing(admin_url, "rebuild");
        if let Ok(pool) = ordo_event_store::connect(&existing.url, 1).await {
            let n = count(&pool).await.unwrap_or(0);
            pool.close().await;
            if n >= events {
                return Ok((existing, true));
            }
        }
    }
    Ok((BenchDb::create(admin_url, "rebuild").await?, false))
}

async fn count(pool: &PgPool) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?;
    Ok(n as u64)
}

/// Runs the relay (the library the `event-relay` binary runs, with its defaults) from an empty
/// checkpoint until it has published `events`.
async fn relay(store: &EventStore, out: &std::path::Path, events: u64, timeout: Duration) -> anyhow::Result<RelayRun> {
    let broker = BrokerProcess::start(&out.join("rebuild-broker.log"), 3).await?;
    let config = RelayConfig {
        name: format!("bench-relay-{}", uuid::Uuid::new_v4().simple()),
        brokers: broker.bootstrap.clone(),
        ..RelayConfig::default()
    };
    let batch_size = config.batch_size;
    let relay = Relay::new(store.clone(), config);
    let status = relay.status();
    let stop = Shutdown::new();
    println!("relay: publishing {events} events to the broker on {}", broker.bootstrap);
    let started = Instant::now();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { relay.run(stop).await })
    };
    let deadline = started + timeout;
    let mut next_print = 100_000;
    while status.published() < events && Instant::now() < deadline {
        if task.is_finished() {
            bail!("the relay stopped before publishing the log");
        }
        if status.published() >= next_print {
            println!("  {} published", status.published());
            next_print += 100_000;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let published = status.published();
    stop.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    broker.stop().await;
    let run = RelayRun {
        published,
        seconds,
        events_per_s: published as f64 / seconds.max(1e-9),
        batch_size,
        completed: published >= events,
    };
    println!("relay: {} events in {:.1} s ({:.0}/s)", run.published, run.seconds, run.events_per_s);
    Ok(run)
}

fn markdown(f: &RebuildFigures) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Rebuild and relay over a log of {} events\n", f.events);
    if let (Some(s), Some(r)) = (f.append_seconds, f.append_events_per_s) {
        let _ = writeln!(md, "Log appended in {s:.1} s ({r:.0} events/s, batched multi-stream appends).\n");
    }
    let _ = writeln!(
        md,
        "| projection | events applied | seconds | applied/s | log read/s | swap ms |\n|---|---|---|---|---|---|"
    );
    for r in f.rebuilds.iter().chain(&f.rebuild_all) {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} |",
            r.projection, r.applied, r.seconds, r.applied_per_s, r.read_per_s, r.swap_ms
        );
    }
    if let Some(v) = &f.verify {
        let _ = writeln!(
            md,
            "\nWhole-log verification: {} events in {:.1} s: **{:.0} events/s** (chain {}).",
            v.checked,
            v.seconds,
            v.events_per_s,
            if v.ok { "intact" } else { "BROKEN" }
        );
    }
    if let Some(r) = &f.relay {
        let _ = writeln!(
            md,
            "\nRelay (batch size {}): {} events published in {:.1} s: **{:.0} events/s**{}.",
            r.batch_size,
            r.published,
            r.seconds,
            r.events_per_s,
            if r.completed { "" } else { " (did not finish within the limit)" }
        );
    }
    let _ = writeln!(md, "\n| goal | measured | met | margin |\n|---|---|---|---|");
    if let Some(all) = &f.rebuild_all {
        let _ = writeln!(
            md,
            "| rebuild >= 150,000 events/s (every projection, one pass, events of their categories) | {:.0}/s | {} | {:.2}x the goal |",
            all.applied_per_s,
            if all.applied_per_s >= REBUILD_GOAL { "yes" } else { "**no**" },
            all.applied_per_s / REBUILD_GOAL
        );
    }
    if let Some(v) = &f.verify {
        let _ = writeln!(
            md,
            "| whole-log verification >= 200,000 events/s | {:.0}/s | {} | {:.2}x the goal |",
            v.events_per_s,
            if v.events_per_s >= VERIFY_GOAL && v.ok { "yes" } else { "**no**" },
            v.events_per_s / VERIFY_GOAL
        );
    }
    if let Some(r) = &f.relay {
        let _ = writeln!(
            md,
            "| relay >= 20,000 events/s | {:.0}/s | {} | {:.2}x the goal |",
            r.events_per_s,
            if r.events_per_s >= RELAY_GOAL && r.completed { "yes" } else { "**no**" },
            r.events_per_s / RELAY_GOAL
        );
    }
    let l = f.load_average;
    let _ = writeln!(md, "\nLoad average at the end: {:.2} {:.2} {:.2}.", l[0], l[1], l[2]);
    md
}
