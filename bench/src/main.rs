//! `ordo-bench`: prints throughput and latency figures of Ordo next to pgbench's on the same
//! PostgreSQL at the same concurrency.

use clap::{Parser, Subcommand};

mod append;
mod pgbench;
mod stats;

#[derive(Parser)]
#[command(name = "ordo-bench", about = "benchmarks of Ordo against the database's own limit")]
struct Cli {
    /// Server on which the benchmark database is (re)created.
    #[arg(long, env = "ORDO_BENCH_ADMIN_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Single-event appends to the event log with 1, 8 and 32 concurrent writers, beside
    /// pgbench's one-row INSERT at the same concurrency.
    Append(append::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Append(args) => append::run(&cli.admin_url, args).await,
    }
}
