//! The command path without HTTP: `CommandService` called directly by concurrent tasks, each
//! adjusting the stock of its own products (distinct streams), or all of them one product (a hot
//! stream). This is what the Rust peer (cqrs-es with postgres-es) measures as a whole command.
//!
//! With `--peer-dir` (a built checkout of the cqrs-es benchmark harness: its `sql/schema.sql`
//! and `target/release/cqrs-es-bench`), the peer runs right after Ordo at each task count, on
//! a fresh database of its own, for the same time: `--workload distinct` (a new aggregate per
//! command, as the peer's own results use) or `--workload hot` with `--hot`. The ratio is
//! Ordo's commands/s over the peer's successful commands/s of the adjacent run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ordo_commands::{CommandContext, CommandError, CommandService};
use ordo_schemas::{
    Actor, AdjustStock, Currency, ListProduct, Money, RegisterMerchant, Role, Sku, StockAdjustmentReason,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::stats::Summary;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent tasks, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    tasks: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Products each task rotates over (distinct streams).
    #[arg(long, default_value_t = 16)]
    products_per_task: usize,
    /// Every task adjusts one and the same product instead.
    #[arg(long)]
    hot: bool,
    /// A built checkout of the cqrs-es benchmark harness, run beside Ordo at each task count.
    #[arg(long, env = "ORDO_BENCH_PEER_DIR")]
    peer_dir: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Ordo's commands/s over the peer's, distinct streams, 32 tasks, must reach this.
pub const PEER_RATIO_TARGET: f64 = 2.0;
/// The task count the peer ratio is judged at.
pub const PEER_RATIO_TASKS: usize = 32;

/// One run of the peer, from its `RESULT` line.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PeerRun {
    pub ok_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub conflicts: u64,
    pub other_errors: u64,
}

impl PeerRun {
    /// Parses the `RESULT key=value ...` line the peer prints last.
    pub fn parse(output: &str) -> anyhow::Result<Self> {
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or_else(|| anyhow::anyhow!("the peer printed no RESULT line"))?;
        let field = |key: &str| -> Option<&str> {
            line.split_whitespace().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        };
        let num = |key: &str| field(key).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Ok(Self {
            ok_per_s: num("ok_per_s"),
            p50_ms: num("p50_ms"),
            p99_ms: num("p99_ms"),
            conflicts: num("conflicts") as u64,
            other_errors: num("other_errors") as u64,
        })
    }
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    let db = "ordo_bench_commands";
    let mut admin = PgConnection::connect(admin_url).await?;
    println!(
        "stock adjustments through CommandService, {}s per run, {}",
        args.seconds,
        if args.hot { "all tasks on one product" } else { "each task on its own products" }
    );
    println!(
        "{:>6} | {:>10} {:>9} {:>9} | {:>8} {:>8} | {:>10} {:>9} {:>9} {:>9} | {:>7} {:>13}",
        "tasks",
        "cmd/s",
        "p50 ms",
        "p99 ms",
        "refused",
        "errors",
        "peer ok/s",
        "p50 ms",
        "p99 ms",
        "conflicts",
        "ratio",
        "target"
    );
    let mut results = Vec::new();
    for &tasks in &args.tasks {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await?;
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{db}"),
            None => format!("{admin_url}/{db}"),
        };
        let pool = ordo_event_store::connect(&url, 8).await?;
        ordo_event_store::migrate(&pool).await?;
        ordo_commands::migrate(&pool).await?;
        let service = CommandService::new(ordo_event_store::EventStore::new(pool.clone()));
        let run = command_run(&service, tasks, &args).await?;
        pool.close().await;
        drop(service);
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
        let peer = match &args.peer_dir {
            Some(dir) => Some(peer_run(&mut admin, admin_url, dir, tasks, args.hot, args.seconds).await?),
            None => None,
        };
        let ratio = peer.as_ref().map(|p| run.summary.per_second / p.ok_per_s.max(1e-9));
        let target = (!args.hot && tasks == PEER_RATIO_TASKS && peer.is_some()).then_some(PEER_RATIO_TARGET);
        // without the peer its columns and the ratio are "-"
        let peer_cols = peer.as_ref().map_or_else(
            || format!("{:>10} {:>9} {:>9} {:>9} | {:>7}", "-", "-", "-", "-", "-"),
            |p| {
                format!(
                    "{:>10.0} {:>9.2} {:>9.2} {:>9} | {:>6.2}x",
                    p.ok_per_s,
                    p.p50_ms,
                    p.p99_ms,
                    p.conflicts,
                    ratio.unwrap_or(0.0)
                )
            },
        );
        println!(
            "{:>6} | {:>10.0} {:>9.2} {:>9.2} | {:>8} {:>8} | {peer_cols} {:>13}",
            tasks,
            run.summary.per_second,
            run.summary.p50_ms,
            run.summary.p99_ms,
            run.refused,
            run.errors,
            target.map_or("-".into(), |t| format!(
                ">= {t:.1}x {}",
                if ratio.unwrap_or(0.0) >= t { "met" } else { "MISSED" }
            )),
        );
        results.push(serde_json::json!({
            "tasks": tasks, "hot": args.hot, "ordo": run.summary, "refused": run.refused, "errors": run.errors,
            "peer": peer, "ratio": ratio, "target_ratio": target,
        }));
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

/// One run of the peer on a fresh database of its own, dropped afterwards.
async fn peer_run(
    admin: &mut PgConnection,
    admin_url: &str,
    dir: &Path,
    tasks: usize,
    hot: bool,
    seconds: u64,
) -> anyhow::Result<PeerRun> {
    let db = "ordo_bench_peer";
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut *admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut *admin).await?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{admin_url}/{db}"),
    };
    let schema = std::fs::read_to_string(dir.join("sql/schema.sql"))?;
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::raw_sql(&schema).execute(&mut conn).await?;
    conn.close().await?;
    let out = tokio::process::Command::new(dir.join("target/release/cqrs-es-bench"))
        .args(["--url", &url, "--tasks", &tasks.to_string(), "--duration", &seconds.to_string()])
        .args(["--workload", if hot { "hot" } else { "distinct" }])
        .kill_on_drop(true)
        .output()
        .await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut *admin).await?;
    anyhow::ensure!(out.status.success(), "the peer failed: {}", String::from_utf8_lossy(&out.stderr));
    PeerRun::parse(&String::from_utf8_lossy(&out.stdout))
}

struct Run {
    summary: Summary,
    /// Commands the domain refused (none expected: every adjustment is a restock).
    refused: u64,
    /// Commands that failed otherwise (conflicts surfaced, infrastructure).
    errors: u64,
}

async fn command_run(service: &CommandService, tasks: usize, args: &Args) -> anyhow::Result<Run> {
    let merchant = Uuid::new_v4();
    let ctx = CommandContext::new(Actor { id: merchant, role: Role::Merchant }, Uuid::new_v4());
    service.register_merchant(&ctx, RegisterMerchant { merchant_id: merchant, name: "Bench".into() }).await?;
    let per_task = if args.hot { 1 } else { args.products_per_task.max(1) };
    let shared = if args.hot { Some(list(service, &ctx, merchant).await?) } else { None };
    let mut products = Vec::new();
    for _ in 0..tasks {
        let mut own = Vec::with_capacity(per_task);
        for _ in 0..per_task {
            own.push(match shared {
                Some(p) => p,
                None => list(service, &ctx, merchant).await?,
            });
        }
        products.push(own);
    }

    let duration = Duration::from_secs(args.seconds);
    let deadline = Instant::now() + duration;
    let mut handles = Vec::new();
    for own in products {
        let (service, ctx) = (service.clone(), ctx.clone());
        handles.push(tokio::spawn(async move {
            let (mut micros, mut refused, mut errors) = (Vec::new(), 0u64, 0u64);
            let mut i = 0usize;
            while Instant::now() < deadline {
                let product = own[i % own.len()];
                let t = Instant::now();
                let restock = AdjustStock { delta: 1, reason: StockAdjustmentReason::Restock };
                match service.adjust_stock(&ctx, product, restock).await {
                    Ok(_) => micros.push(t.elapsed().as_micros() as u64),
                    Err(CommandError::Domain(_)) => refused += 1,
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (micros, refused, errors)
        }));
    }
    let (mut micros, mut refused, mut errors) = (Vec::new(), 0, 0);
    for h in handles {
        let (m, r, e) = h.await?;
        micros.extend(m);
        refused += r;
        errors += e;
    }
    Ok(Run { summary: Summary::from_micros(micros, duration), refused, errors })
}

async fn list(service: &CommandService, ctx: &CommandContext, merchant: Uuid) -> anyhow::Result<Uuid> {
    let product = Uuid::new_v4();
    let listing = ListProduct {
        product_id: product,
        merchant_id: merchant,
        sku: Sku::parse(&format!("B-{}", product.simple())).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        name: "Bench".into(),
        description: None,
        price: Money::new(100, Currency::parse("EUR").map_err(|e| anyhow::anyhow!("{e:?}"))?),
        initial_stock: 0,
    };
    service.list_product(ctx, listing).await?;
    Ok(product)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_result_line_is_read_by_key() {
        let out = "cqrs-es-bench workload=distinct\n  ok=10\nRESULT workload=distinct ids=fresh tasks=8 pool=8 \
                   elapsed_s=10.0 ok=43470 ok_per_s=4347.0 attempted=43470 conflicts=0 user_errors=0 \
                   other_errors=2 mean_ms=1.8 p50_ms=1.700 p99_ms=4.250 max_ms=9.0 hot_len=-1 per_sec=1,2\n";
        let run = PeerRun::parse(out).unwrap();
        assert_eq!(run, PeerRun { ok_per_s: 4347.0, p50_ms: 1.7, p99_ms: 4.25, conflicts: 0, other_errors: 2 });
        assert!(PeerRun::parse("no result").is_err());
    }
}
