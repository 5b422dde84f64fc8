//! `ordo-bench`: prints throughput and latency figures of Ordo next to pgbench's on the same
//! PostgreSQL at the same concurrency. See the library docs of `ordo_bench`.

use clap::{Parser, Subcommand};
use ordo_bench::{append, cold_load, commands, load, query, rebuild, write_path};

#[derive(Parser)]
#[command(name = "ordo-bench", about = "benchmarks of Ordo against the database's own limit")]
struct Cli {
    /// Server on which the benchmark databases are (re)created (never logged).
    #[arg(
        long,
        env = "ORDO_BENCH_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    admin_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Single-event appends to the event log with 1, 8 and 32 concurrent writers, beside
    /// pgbench's one-row INSERT at the same concurrency.
    Append(append::Args),
    /// One writer process of a multi-process `append` run (started by it).
    #[command(hide = true)]
    AppendWorker(append::WorkerArgs),
    /// Stock adjustments through the command service called directly (no HTTP), on distinct
    /// products or one hot product; the figure the Rust peer (cqrs-es) is compared with.
    Commands(commands::Args),
    /// Cold loads of a long product stream by a fresh command service, without and with its
    /// snapshot.
    ColdLoad(cold_load::Args),
    /// The whole stack under an HTTP command and query mix, then single-stream throughput,
    /// latency at half of it, one hot product, the order flow, and pgbench at the same
    /// concurrency.
    Load(Box<load::Args>),
    /// `GET /v1/products/{id}` and an authorised `GET /v1/orders/{id}` with its token through
    /// the release query API, read cache off and on, each beside pgbench's primary-key SELECT.
    Query(query::Args),
    /// Appends a large realistic log, then times every projection rebuild and the relay over it.
    Rebuild(rebuild::Args),
    /// The write-path figures of one `scripts/bench.sh write-path` run as one table of figure,
    /// measured, target and met (from the JSON files the runs wrote).
    WritePathReport(write_path::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Append(args) => append::run(&cli.admin_url, args).await,
        Command::AppendWorker(args) => append::worker(args).await,
        Command::Commands(args) => commands::run(&cli.admin_url, args).await,
        Command::ColdLoad(args) => cold_load::run(&cli.admin_url, args).await,
        Command::Load(args) => load::run(&cli.admin_url, *args).await,
        Command::Query(args) => query::run(&cli.admin_url, args).await,
        Command::Rebuild(args) => rebuild::run(&cli.admin_url, args).await,
        Command::WritePathReport(args) => write_path::run(args),
    }
}
