//! Reads at the database's speed: `GET /v1/products/{id}` and an authorised
//! `GET /v1/orders/{id}` with its consistency token, driven by wrk at a given concurrency against
//! the release `query-api` with its read cache off and on, each beside pgbench running the same
//! primary-key SELECT over the same ids.
//!
//! The database is a fresh one holding a generated log, projected by rebuilds. The ids are
//! picked at random per request (wrk: a Lua script; pgbench: a `uuid[]` constant indexed by
//! `random()`), so both sides read the same rows.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ordo_event_store::EventStore;
use ordo_projectors::Projection;
use ordo_schemas::Role;
use ordo_service::JwtKeys;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::generate::{self, Shape};
use crate::procstat::load_average;
use crate::scrape::Scrape;
use crate::stack::{free_port, BenchDb};

const SECRET: &str = "ordo-bench-query-secret";

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per wrk and per pgbench run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections of wrk and pgbench.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Events of the generated log the read models are projected from.
    #[arg(long, default_value_t = 30_000)]
    events: u64,
    /// Distinct ids read (at most what the log holds).
    #[arg(long, default_value_t = 1000)]
    ids: i64,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The two reads, each as wrk's paths (with headers) and pgbench's SQL.
struct Read {
    name: &'static str,
    requests: Vec<(String, Option<String>)>,
    sql: String,
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    which("wrk", "run scripts/install-tools.sh --bench (Debian package wrk)")?;
    which("pgbench", "Debian package postgresql-client")?;
    let work = std::env::temp_dir().join(format!("ordo-bench-query-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let db = BenchDb::create(admin_url, "query").await?;
    let reads = seed(&db.url, &args).await?;
    let before = load_average();
    println!("load average before: {:.2} {:.2} {:.2}", before[0], before[1], before[2]);
    println!(
        "{:<34} {:>6} {:>12} {:>12} {:>7} {:>9}",
        "request", "cache", "api req/s", "pgbench tps", "ratio", "hit rate"
    );
    let mut results = Vec::new();
    for cache_mib in [0u64, 32] {
        let api = QueryApi::start(&args.bin_dir, &db.url, cache_mib, &work).await?;
        for read in &reads {
            let script = wrk_script(&work, read)?;
            // one short pass fills the cache (and warms the pool) before the measured one
            wrk(&api.base, &script, args.connections, 2)?;
            let metrics = format!("{}/metrics", api.base);
            let counted = Scrape::fetch(&api.http, &metrics).await.by_label("ordo_query_cache_total", "result");
            let rps = wrk(&api.base, &script, args.connections, args.seconds)?;
            let after = Scrape::fetch(&api.http, &metrics).await.by_label("ordo_query_cache_total", "result");
            let delta = |k: &str| after.get(k).copied().unwrap_or(0.0) - counted.get(k).copied().unwrap_or(0.0);
            let lookups = delta("hit") + delta("miss");
            let hit_rate = (lookups > 0.0).then(|| delta("hit") / lookups);
            let tps = pgbench(&db.url, &work, &read.sql, read.requests.len(), args.connections, args.seconds)?;
            let state = if cache_mib == 0 { "off" } else { "on" };
            println!(
                "{:<34} {:>6} {:>12.0} {:>12.0} {:>6.2}x {:>9}",
                read.name,
                state,
                rps,
                tps,
                rps / tps,
                hit_rate.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0))
            );
            results.push(serde_json::json!({
                "request": read.name, "cache": state, "api_requests_per_s": rps, "pgbench_tps": tps,
                "ratio": rps / tps, "cache_hit_rate": hit_rate, "connections": args.connections,
                "seconds": args.seconds,
            }));
        }
        api.stop().await;
    }
    let after = load_average();
    println!("load average after: {:.2} {:.2} {:.2}", after[0], after[1], after[2]);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "load_before": before, "load_after": after, "runs": results });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    db.drop_db().await?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Appends and projects a log, then picks the ids both sides read.
async fn seed(url: &str, args: &Args) -> anyhow::Result<Vec<Read>> {
    let pool = ordo_event_store::connect(url, 4).await?;
    ordo_event_store::migrate(&pool).await?;
    ordo_projectors::migrate(&pool).await?;
    let store = EventStore::new(pool.clone());
    let started = Instant::now();
    let shape = Shape { merchants: 10, products_per_merchant: 100, customers: 200, orders_per_batch: 50 };
    let events = generate::generate(&store, args.events, 1, shape).await?;
    for projection in Projection::ALL {
        ordo_projectors::rebuild(&pool, projection).await?;
    }
    println!("{events} events appended and projected in {:.1} s", started.elapsed().as_secs_f64());
    let products: Vec<Uuid> = sqlx::query_scalar("SELECT product_id FROM rm_products ORDER BY product_id LIMIT $1")
        .bind(args.ids)
        .fetch_all(&pool)
        .await?;
    let orders: Vec<(Uuid, Uuid, i64)> =
        sqlx::query_as("SELECT order_id, customer_id, version FROM rm_orders ORDER BY order_id LIMIT $1")
            .bind(args.ids)
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    if products.is_empty() || orders.is_empty() {
        bail!("the generated log holds no products or no orders");
    }
    let keys = JwtKeys::from_secret(SECRET.as_bytes());
    let mut order_requests = Vec::new();
    for (id, customer, version) in &orders {
        let token = keys.mint(*customer, Role::Customer, chrono::Duration::hours(2))?;
        order_requests
            .push((format!("/v1/orders/{id}?consistency_token=order:{id}:{version}"), Some(format!("Bearer {token}"))));
    }
    Ok(vec![
        Read {
            name: "GET /v1/products/{id}",
            requests: products.iter().map(|id| (format!("/v1/products/{id}"), None)).collect(),
            sql: pk_select(
                "product_id, merchant_id, sku, name, description, price_minor, currency, on_hand, reserved, \
                 status, version, updated_at",
                "rm_products",
                "product_id",
                &products,
            ),
        },
        Read {
            name: "GET /v1/orders/{id} with a token",
            requests: order_requests,
            sql: pk_select(
                "order_id, customer_id, merchant_id, status, lines, total_minor, currency, shipping_address, \
                 placed_at, updated_at, rejection, payment, shipment, cancellation, delivered_at, version",
                "rm_orders",
                "order_id",
                &orders.iter().map(|o| o.0).collect::<Vec<_>>(),
            ),
        },
    ])
}

/// The query API's own SELECT, of one of `ids` chosen by pgbench's `:n`.
fn pk_select(columns: &str, table: &str, key: &str, ids: &[Uuid]) -> String {
    let list: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    format!("SELECT {columns} FROM {table} WHERE {key} = ('{{{}}}'::uuid[])[:n];\n", list.join(","))
}

fn which(tool: &str, hint: &str) -> anyhow::Result<()> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!("{tool} is missing ({hint})");
    }
    Ok(())
}

/// A Lua script for wrk choosing one of the read's requests at random.
fn wrk_script(work: &Path, read: &Read) -> anyhow::Result<PathBuf> {
    let mut lua = String::from("local r = {\n");
    for (path, auth) in &read.requests {
        match auth {
            Some(a) => writeln!(lua, "  {{ \"{path}\", {{ [\"Authorization\"] = \"{a}\" }} }},")?,
            None => writeln!(lua, "  {{ \"{path}\", nil }},")?,
        }
    }
    lua.push_str(
        "}\nmath.randomseed(os.time())\nrequest = function()\n  local q = r[math.random(#r)]\n  \
         return wrk.format(\"GET\", q[1], q[2])\nend\n",
    );
    let path = work.join(format!("{}.lua", if read.name.contains("orders") { "orders" } else { "products" }));
    std::fs::write(&path, lua)?;
    Ok(path)
}

/// Runs wrk; its requests per second. Any answer but 200 and 304 fails the run.
fn wrk(base: &str, script: &Path, connections: usize, seconds: u64) -> anyhow::Result<f64> {
    let out = std::process::Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string(), "-d", &format!("{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(base)
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx or 3xx")) {
        bail!("wrk saw failed requests: {}", line.trim());
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

/// Runs pgbench on `sql` with `:n` from 1 to `ids`; its transactions per second.
fn pgbench(url: &str, work: &Path, sql: &str, ids: usize, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let script = work.join("select.sql");
    std::fs::write(&script, format!("\\set n random(1, {ids})\n{sql}"))?;
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", &clients.min(2).to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .context("run pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // "tps = 41234.5 (without initial connection time)"
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}

/// The release `query-api` on a free port.
struct QueryApi {
    base: String,
    http: reqwest::Client,
    child: Child,
}

impl QueryApi {
    async fn start(bin_dir: &Path, db_url: &str, cache_mib: u64, work: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = std::fs::File::create(work.join(format!("query-api-cache-{cache_mib}.log")))?;
        let child = Command::new(bin_dir.join("query-api"))
            .env("ORDO_DATABASE_URL", db_url)
            .env("ORDO_QUERY_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDO_JWT_SECRET", SECRET)
            .env("ORDO_QUERY_CACHE_MIB", cache_mib.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin_dir.join("query-api").display()))?;
        let api = Self { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = api.http.get(format!("{}/readyz", api.base)).send().await {
                if r.status().is_success() {
                    return Ok(api);
                }
            }
            if Instant::now() > deadline {
                bail!("query-api did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
