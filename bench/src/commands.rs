//! The command path without HTTP: `CommandService` called directly by concurrent tasks, each
//! adjusting the stock of its own products (distinct streams), or all of them one product (a hot
//! stream). This is what the Rust peer (cqrs-es with postgres-es) measures as a whole command.

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
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    let db = "ordo_bench_commands";
    let mut admin = PgConnection::connect(admin_url).await?;
    println!(
        "stock adjustments through CommandService, {}s per run, {}",
        args.seconds,
        if args.hot { "all tasks on one product" } else { "each task on its own products" }
    );
    println!("{:>6} | {:>10} {:>9} {:>9} | {:>8} {:>8}", "tasks", "cmd/s", "p50 ms", "p99 ms", "refused", "errors");
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
        println!(
            "{:>6} | {:>10.0} {:>9.2} {:>9.2} | {:>8} {:>8}",
            tasks, run.summary.per_second, run.summary.p50_ms, run.summary.p99_ms, run.refused, run.errors
        );
        results.push(serde_json::json!({
            "tasks": tasks, "hot": args.hot, "ordo": run.summary, "refused": run.refused, "errors": run.errors,
        }));
        pool.close().await;
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
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
