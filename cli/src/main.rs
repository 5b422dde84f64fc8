//! `ordo`: the operator CLI (tokens, migrations, chain verification, digest proofs, export,
//! projection rebuilds, parked-stream retries and replay with drift detection).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ordo_service::config::Process;

mod audit;
mod progress;
mod projections;
mod token;

/// The CLI among Ordo's processes: it reads the database URL from `ORDO_CLI_DATABASE_URL` or
/// `ORDO_DATABASE_URL` (`DATABASE_URL` still works, with a warning) and the token secret from
/// `ORDO_JWT_SECRET`, never from a flag.
pub const PROCESS: Process = Process {
    binary: "ordo",
    prefix: "CLI",
    deprecated: &[("DATABASE_URL", "DATABASE_URL")],
    secrets: &["DATABASE_URL", "JWT_SECRET"],
};

#[derive(Parser)]
#[command(
    name = "ordo",
    version,
    about = "operate an Ordo deployment",
    after_help = "Environment only, never printed:\n  ORDO_DATABASE_URL (or ORDO_CLI_DATABASE_URL): the Ordo database, default \
                  postgres://postgres@127.0.0.1:5432/ordo\n  ORDO_JWT_SECRET: the HS256 secret of mint-token\n  ORDO_PERSONAL_DATA_KEK, \
                  ORDO_PERSONAL_DATA_KEK_PREVIOUS: the key-encryption keys of personal data (migrate, export --decrypt)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update every crate's tables: event store, command API, projections (idempotent).
    /// Services check the schema at start; run this first, as a role that may change the schema.
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
    /// After a restore onto empty topics: forget the relay checkpoints and the projectors' and
    /// saga's stored offsets so the relay republishes the whole log (stop them all first).
    ResetPublishing,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let url = PROCESS.database_url();
    let database_url = url.expose();
    let result = match cli.command {
        Command::MintToken(args) => token::run(args),
        Command::Migrate => projections::migrate(database_url).await,
        Command::ResetPublishing => projections::reset_publishing(database_url).await,
        Command::Verify(args) => audit::verify(database_url, args).await,
        Command::ProveDigest(args) => audit::prove(database_url, args).await,
        Command::Digest(args) => audit::digest(database_url, args).await,
        Command::Export(args) => audit::export(database_url, args).await,
        Command::VerifyExport(args) => audit::verify_export(args),
        Command::Rebuild(args) => projections::rebuild(database_url, args).await,
        Command::RetryParked(args) => projections::retry_parked(database_url, args).await,
        Command::Replay(args) => projections::replay(database_url, args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every flag and argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_of_every_command_has_help_text() {
        fn undocumented(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    out.push(format!("{path} --{id}"));
                }
            }
            for sub in command.get_subcommands() {
                undocumented(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "ordo", &mut missing);
        assert!(missing.is_empty(), "arguments without help text: {missing:?}");
    }
}
