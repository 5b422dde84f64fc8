//! `ordo`: the operator CLI (tokens, migrations, chain verification, digest proofs, export,
//! projection rebuilds, parked-stream retries and replay with drift detection).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod progress;
mod projections;
mod token;

#[derive(Parser)]
#[command(name = "ordo", version, about = "operate an Ordo deployment")]
struct Cli {
    /// The Ordo database.
    #[arg(long, global = true, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ordo")]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update every crate's tables: event store, command API, projections (idempotent).
    Migrate,
    /// Sign a JWT for local use with the secret in ORDO_JWT_SECRET.
    MintToken(token::Args),
    /// Recompute hash chains (whole log, a category or one stream); exits 1 on a broken chain.
    Verify(audit::VerifyArgs),
    /// Prove that a stream's history still extends a digest saved earlier; exits 1 if not.
    ProveDigest(audit::ProveArgs),
    /// Print a stream's current digest (version and head hash).
    Digest(audit::StreamArgs),
    /// Write a position or time range of the log as JSON lines (with hashes) to stdout.
    Export(audit::ExportArgs),
    /// Re-verify an export (a file, or - for stdin) without the database; exits 1 if broken.
    VerifyExport(audit::VerifyExportArgs),
    /// Rebuild projections from the log into shadow tables and swap them in.
    Rebuild(projections::RebuildArgs),
    /// Re-apply parked streams from the log; exits 1 if a stream stays parked.
    RetryParked(projections::RetryArgs),
    /// Replay projections from the log into separate tables and diff them with the live ones;
    /// exits 1 on drift.
    Replay(projections::ReplayArgs),
    /// After a restore onto empty topics: forget the relay checkpoints and projector offsets so
    /// the relay republishes the whole log (stop the relay and projectors first).
    ResetPublishing,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::MintToken(args) => token::run(args),
        Command::Migrate => projections::migrate(&cli.database_url).await,
        Command::ResetPublishing => projections::reset_publishing(&cli.database_url).await,
        Command::Verify(args) => audit::verify(&cli.database_url, args).await,
        Command::ProveDigest(args) => audit::prove(&cli.database_url, args).await,
        Command::Digest(args) => audit::digest(&cli.database_url, args).await,
        Command::Export(args) => audit::export(&cli.database_url, args).await,
        Command::VerifyExport(args) => audit::verify_export(args),
        Command::Rebuild(args) => projections::rebuild(&cli.database_url, args).await,
        Command::RetryParked(args) => projections::retry_parked(&cli.database_url, args).await,
        Command::Replay(args) => projections::replay(&cli.database_url, args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
