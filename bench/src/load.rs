//! `ordo-bench load`: the whole stack under HTTP load, beside pgbench on the same PostgreSQL.
//!
//! Phases, in one run against one database:
//! 1. `mix`: the configured mix (`--mix`) at `--concurrency` for `--seconds`, with relay and
//!    projector throughput and lag, and sampled end-to-end visibility.
//! 2. `adjust-max`: stock adjustments spread over every product, flat out: Ordo's single-stream
//!    command throughput.
//! 3. `adjust-half`: the same at half of that rate: latency at a sustainable load.
//! 4. `hot-product`: `--hot-clients` clients adjusting one and the same product flat out,
//!    without `If-Match`: successful commands/s, and how many answers were 409 or 412 (a race
//!    that reached a client; there should be none).
//! 5. `order-flow`: only order placements; the orders are then followed until the saga has
//!    confirmed them and the read model shows it: orders/s from placed to confirmed and visible.
//! 6. pgbench's one-row INSERT at the same concurrency, flat out and at half its rate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ordo_service::JwtKeys;
use sqlx::PgPool;
use uuid::Uuid;

use crate::driver::{self, Mix, Op, PhaseSpec, Raw};
use crate::observe::{MetricsUrls, Observed, Observer};
use crate::procstat::{self, ProcSample};
use crate::report::{self, LoadReport, OrderFlow, PgbenchFigures, PhaseReport};
use crate::stack::{Service, Stack, StackOptions};
use crate::stats::Summary;
use crate::world::{Endpoints, Size, World};

#[derive(clap::Args)]
pub struct Args {
    /// Use a running command API instead of starting the stack (needs --query-url, the JWT
    /// secret and, for pgbench and the order flow, --database-url).
    #[arg(long, requires = "query_url")]
    command_url: Option<String>,
    /// Use a running query API.
    #[arg(long, requires = "command_url")]
    query_url: Option<String>,
    /// With a running stack: the relay's and the projectors' `/metrics` URLs.
    #[arg(long)]
    relay_metrics_url: Option<String>,
    #[arg(long)]
    projectors_metrics_url: Option<String>,
    /// With a running stack: its database, for pgbench and the order flow (never logged).
    #[arg(long, env = "ORDO_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// With a running stack: the JWT secret it trusts (never logged).
    #[arg(long, env = "ORDO_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Concurrent HTTP clients (and pgbench clients).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of the mix phase.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds of each of the other phases and of each pgbench run.
    #[arg(long, default_value_t = 20)]
    phase_seconds: u64,
    /// Clients of the hot-product phase (all on one product, no `If-Match`).
    #[arg(long, default_value_t = 8)]
    hot_clients: usize,
    /// Operation weights of the mix phase.
    #[arg(long, default_value = "adjust=60,place=20,pay=5,ship=5,query=10")]
    mix: Mix,
    /// Every n-th successful command of a client is followed to the query API.
    #[arg(long, default_value_t = 10)]
    visibility_every: u64,
    /// Adjustments per second of the quiet phase (4 clients, every command followed to the query
    /// API), which runs first, on an otherwise idle stack; 0 skips it.
    #[arg(long, default_value_t = 20.0)]
    quiet_rate: f64,
    /// Only the mix phase (no headline phases, no pgbench), e.g. under a profiler.
    #[arg(long)]
    mix_only: bool,
    /// Only the order-flow phase (no mix, no other headline phases, no pgbench).
    #[arg(long, conflicts_with = "mix_only")]
    order_flow_only: bool,
    /// Where results go; default `bench-results/<UTC timestamp>/`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The release binaries (`cargo build --release --bins`).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// `RUST_LOG` of the started processes.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Start the command API under this command line, e.g.
    /// `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out`.
    #[arg(long)]
    command_api_wrapper: Option<String>,
    #[command(flatten)]
    size: Size,
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(default_out);
    std::fs::create_dir_all(&out)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency * 4)
        .build()?;
    let load_before = procstat::load_average();
    let pg_cpu_before = procstat::postgres_cpu_seconds();

    let (mut stack, endpoints, db_url, urls, secret) = match (&args.command_url, &args.query_url) {
        (Some(c), Some(q)) => {
            let secret = args.jwt_secret.clone().context("a running stack needs ORDO_JWT_SECRET")?;
            let endpoints = Endpoints {
                command: c.trim_end_matches('/').into(),
                query: q.trim_end_matches('/').into(),
                http: http.clone(),
            };
            let urls =
                MetricsUrls { relay: args.relay_metrics_url.clone(), projectors: args.projectors_metrics_url.clone() };
            (None, endpoints, args.database_url.clone(), urls, secret)
        }
        _ => {
            let secret = format!("bench-{}", Uuid::new_v4().simple());
            let opts = StackOptions {
                admin_url: admin_url.to_owned(),
                bin_dir: args.bin_dir.clone(),
                log_dir: out.join("logs"),
                jwt_secret: secret.clone(),
                log_level: args.log_level.clone(),
                command_api_wrapper: args.command_api_wrapper.clone(),
            };
            println!("starting the stack (logs in {})", opts.log_dir.display());
            let stack = Stack::start(&opts, &http).await?;
            let endpoints = Endpoints {
                command: stack.url(Service::CommandApi),
                query: stack.url(Service::QueryApi),
                http: http.clone(),
            };
            let urls = MetricsUrls {
                relay: Some(format!("{}/metrics", stack.url(Service::Relay))),
                projectors: Some(format!("{}/metrics", stack.url(Service::Projectors))),
            };
            let db_url = stack.db.url.clone();
            (Some(stack), endpoints, Some(db_url), urls, secret)
        }
    };
    let result = drive(&args, &http, endpoints, db_url.as_deref(), urls, &secret, stack.as_ref()).await;
    let pg_cpu = procstat::postgres_cpu_seconds() - pg_cpu_before;
    // pgbench runs with the stack stopped: its connections would not fit beside the stack's
    // pools under max_connections, and an idle stack still polls
    if let Some(stack) = stack.as_mut() {
        stack.stop_processes().await;
    }
    let result = match (result, db_url.as_deref(), args.mix_only || args.order_flow_only) {
        (Ok(mut report), Some(url), false) => {
            let pool = ordo_event_store::connect(url, 2).await?;
            let pg = pgbench(&pool, url, args.concurrency, Duration::from_secs(args.phase_seconds), &out).await;
            pool.close().await;
            pg.map(|pg| {
                report.pgbench = Some(pg);
                report
            })
        }
        (result, _, _) => result,
    };
    if let Some(stack) = stack {
        stack.finish().await?;
    }
    let mut report = result?;
    report.postgres_cpu_seconds = pg_cpu;
    report.load_average_before = load_before;
    report.load_average_after = procstat::load_average();
    report::write_load(&out, &report)?;
    println!("{}", std::fs::read_to_string(out.join("load.md"))?);
    println!("results in {}", out.display());
    Ok(())
}

fn default_out() -> PathBuf {
    PathBuf::from("bench-results").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &Args,
    http: &reqwest::Client,
    endpoints: Endpoints,
    db_url: Option<&str>,
    urls: MetricsUrls,
    secret: &str,
    stack: Option<&Stack>,
) -> anyhow::Result<LoadReport> {
    let keys = JwtKeys::from_secret(secret.as_bytes());
    let pool = match db_url {
        Some(url) => Some(ordo_event_store::connect(url, 4).await?),
        None => None,
    };
    println!(
        "seeding {} merchants, {} products, {} customers",
        args.size.merchants,
        args.size.merchants * args.size.products_per_merchant,
        args.size.customers
    );
    let world = Arc::new(World::seed(endpoints, &keys, args.size).await?);
    if let Some(pool) = &pool {
        wait_catalog(pool, world.products.len() as i64).await;
    }
    let mut report = LoadReport {
        concurrency: args.concurrency,
        size: format!(
            "{} merchants x {} products, {} customers",
            args.size.merchants, args.size.products_per_merchant, args.size.customers
        ),
        ..LoadReport::default()
    };
    let spec = |mix: Mix, seconds: u64, rate: Option<f64>| PhaseSpec {
        mix,
        concurrency: args.concurrency,
        duration: Duration::from_secs(seconds),
        rate,
        visibility_every: args.visibility_every,
    };

    if !args.mix_only && !args.order_flow_only && args.quiet_rate > 0.0 {
        let quiet = PhaseSpec {
            concurrency: QUIET_CLIENTS,
            visibility_every: 1,
            ..spec(Mix::only(Op::Adjust), args.phase_seconds, Some(args.quiet_rate))
        };
        report.phases.push(phase(http, &world, &urls, "adjust-quiet", quiet).await);
    }
    if !args.order_flow_only {
        report.phases.push(phase(http, &world, &urls, "mix", spec(args.mix.clone(), args.seconds, None)).await);
    }
    if !args.mix_only && !args.order_flow_only {
        let max = phase(http, &world, &urls, "adjust-max", spec(Mix::only(Op::Adjust), args.phase_seconds, None)).await;
        let half_rate = max.commands.per_second / 2.0;
        report.phases.push(max);
        let half = spec(Mix::only(Op::Adjust), args.phase_seconds, Some(half_rate));
        report.phases.push(phase(http, &world, &urls, "adjust-half", half).await);
        let hot = PhaseSpec { concurrency: args.hot_clients, ..spec(Mix::only(Op::Hot), args.phase_seconds, None) };
        report.phases.push(phase(http, &world, &urls, "hot-product", hot).await);
    }
    if !args.mix_only {
        world.take_placed_log();
        // the saga's own appends: how many requests its group-commit batches carried
        let saga_metrics = stack.map(|s| format!("{}/metrics", s.url(Service::Saga)));
        let batches_before = match &saga_metrics {
            Some(url) => Some(crate::scrape::Scrape::fetch(http, url).await),
            None => None,
        };
        let flow_started = Instant::now();
        report
            .phases
            .push(phase(http, &world, &urls, "order-flow", spec(Mix::only(Op::Place), args.phase_seconds, None)).await);
        if let Some(pool) = &pool {
            let mut flow = order_flow(pool, world.take_placed_log(), flow_started).await?;
            if let (Some(url), Some(before)) = (&saga_metrics, batches_before) {
                let after = crate::scrape::Scrape::fetch(http, url).await;
                let delta = |name: &str| after.sum(name) - before.sum(name);
                let (requests, batches) =
                    (delta("ordo_append_batch_requests_sum"), delta("ordo_append_batch_requests_count"));
                flow.saga_appends = requests as u64;
                flow.saga_batches = batches as u64;
            }
            report.order_flow = Some(flow);
        }
    }
    if let Some(stack) = stack {
        report.processes = stack.sample().into_iter().collect::<BTreeMap<String, ProcSample>>();
    }
    if let Some(pool) = pool {
        pool.close().await;
    }
    Ok(report)
}

/// Clients of the quiet phase: few, so that they never queue behind one another.
const QUIET_CLIENTS: usize = 4;

/// Runs one phase with the relay and projectors observed, and prints its headline.
async fn phase(
    http: &reqwest::Client,
    world: &Arc<World>,
    urls: &MetricsUrls,
    name: &str,
    spec: PhaseSpec,
) -> PhaseReport {
    let rate = spec.rate.map(|r| format!(" at {r:.0}/s")).unwrap_or_default();
    println!("phase {name}: {} for {}s, {} clients{rate}", spec.mix, spec.duration.as_secs(), spec.concurrency);
    let observer = Observer::start(http.clone(), urls.clone()).await;
    let raw = driver::run_phase(world.clone(), &spec).await;
    let observed = observer.finish().await;
    let r = summarise(name, &spec, raw, observed);
    let failed = r.failed();
    println!(
        "  commands {:.0}/s p50 {:.1} ms p99 {:.1} ms; visibility p50 {:.0} ms p99 {:.0} ms ({} samples); {failed} failed, {} of them 409/412",
        r.commands.per_second,
        r.commands.p50_ms,
        r.commands.p99_ms,
        r.visibility.p50_ms,
        r.visibility.p99_ms,
        r.visibility.ops,
        r.conflicts()
    );
    r
}

fn summarise(name: &str, spec: &PhaseSpec, raw: Raw, observed: Observed) -> PhaseReport {
    let commands: Vec<u64> =
        raw.latencies.iter().filter(|(op, _)| op.is_command()).flat_map(|(_, l)| l.iter().copied()).collect();
    PhaseReport {
        name: name.to_owned(),
        mix: spec.mix.to_string(),
        concurrency: spec.concurrency,
        rate_limit: spec.rate,
        seconds: raw.elapsed.as_secs_f64(),
        commands: Summary::from_micros(commands, raw.elapsed),
        per_op: raw
            .latencies
            .iter()
            .map(|(op, l)| (op.name().to_owned(), Summary::from_micros(l.clone(), raw.elapsed)))
            .collect(),
        errors: raw
            .errors
            .iter()
            .map(|(op, e)| (op.name().to_owned(), e.iter().map(|(s, n)| (s.to_string(), *n)).collect()))
            .collect(),
        fallbacks: raw.fallbacks,
        visibility: Summary::from_micros(raw.visibility.clone(), raw.elapsed),
        visibility_timeouts: raw.visibility_timeouts,
        observed,
        latencies: raw.latencies.into_iter().map(|(op, l)| (op.name().to_owned(), l)).collect(),
        visibility_micros: raw.visibility,
    }
}

/// Waits (up to a minute) until the catalog read model shows every seeded product.
async fn wait_catalog(pool: &PgPool, products: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_products").fetch_one(pool).await.unwrap_or(0);
        if n >= products {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("warning: the catalog did not show every seeded product within a minute");
}

/// Follows the orders of the order-flow phase until the read model shows each one decided
/// (confirmed or rejected), for at most a minute after the phase.
async fn order_flow(pool: &PgPool, ids: Vec<Uuid>, started: Instant) -> anyhow::Result<OrderFlow> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |status_sql: &'static str| {
        let ids = ids.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT count(*) FROM rm_orders WHERE order_id = ANY($1) AND {status_sql}"
            ))
            .bind(ids)
            .fetch_one(pool)
            .await
        }
    };
    // a failed count (a connection ended by the server on a shared machine) is retried
    let mut decided = 0;
    loop {
        if let Ok(n) = count("status <> 'pending'").await {
            decided = n;
        }
        if decided >= ids.len() as i64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut confirmed = count("status NOT IN ('pending', 'rejected')").await;
    if confirmed.is_err() {
        confirmed = count("status NOT IN ('pending', 'rejected')").await;
    }
    let confirmed = confirmed?;
    Ok(OrderFlow {
        placed: ids.len() as u64,
        decided: decided as u64,
        confirmed: confirmed as u64,
        seconds,
        orders_per_s: confirmed as f64 / seconds.max(1e-9),
        saga_appends: 0,
        saga_batches: 0,
    })
}

/// pgbench's one-row INSERT flat out, then throttled to half its own rate.
async fn pgbench(
    pool: &PgPool,
    url: &str,
    clients: usize,
    duration: Duration,
    out: &std::path::Path,
) -> anyhow::Result<PgbenchFigures> {
    crate::pgbench::prepare(pool).await?;
    let work = out.join("pgbench");
    std::fs::create_dir_all(&work)?;
    println!("pgbench: one-row INSERT, {clients} clients, {}s", duration.as_secs());
    let (u, w) = (url.to_owned(), work.clone());
    let max = with_retry(move || crate::pgbench::run(&u, clients, duration, &w)).await?;
    println!("  {:.0} tx/s p50 {:.2} ms p99 {:.2} ms", max.per_second, max.p50_ms, max.p99_ms);
    let rate = max.per_second / 2.0;
    println!("pgbench at half rate ({rate:.0} tx/s)");
    let (u, w) = (url.to_owned(), work.clone());
    let half = with_retry(move || crate::pgbench::run_at(&u, clients, duration, &w, Some(rate))).await?;
    println!("  {:.0} tx/s p50 {:.2} ms p99 {:.2} ms", half.per_second, half.p50_ms, half.p99_ms);
    let _ = std::fs::remove_dir_all(&work);
    sqlx::query("DROP TABLE IF EXISTS pgbench_one_row").execute(pool).await?;
    Ok(PgbenchFigures { clients, max, half })
}

/// Runs pgbench off the runtime; when the server has no connection slot left (other work on a
/// shared machine), tries again up to three times, 5 s apart.
async fn with_retry<F>(f: F) -> anyhow::Result<Summary>
where
    F: Fn() -> anyhow::Result<Summary> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let g = f.clone();
        match tokio::task::spawn_blocking(move || g()).await? {
            Err(e) if attempt < 4 && e.to_string().contains("too many clients") => {
                println!("  postgres has no free connection slot, retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            other => return other,
        }
    }
}
