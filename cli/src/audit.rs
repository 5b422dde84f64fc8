//! Verification, digests and export over the event log.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use ordo_event_store::progress::Progress;
use ordo_event_store::search::{search, LogQuery};
use ordo_schemas::{StreamCategory, StreamRef};
use uuid::Uuid;

use crate::progress::Display;

pub(crate) fn parse_category(s: &str) -> Result<StreamCategory, String> {
    StreamCategory::parse(s).ok_or_else(|| format!("unknown category {s} (customer, merchant, product, order)"))
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Only the streams of this category (customer, merchant, product or order); every category
    /// when left out.
    #[arg(long, value_parser = parse_category)]
    category: Option<StreamCategory>,
    /// Only this stream of the category.
    #[arg(long, requires = "category")]
    id: Option<Uuid>,
}

#[derive(clap::Args)]
pub struct StreamArgs {
    /// The stream's category: customer, merchant, product or order.
    #[arg(long, value_parser = parse_category)]
    category: StreamCategory,
    /// The stream's id.
    #[arg(long)]
    id: Uuid,
}

#[derive(clap::Args)]
pub struct ProveArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// The version of the saved digest.
    #[arg(long)]
    version: i64,
    /// The head hash of the saved digest (hex).
    #[arg(long)]
    hash: String,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// First position to export (inclusive).
    #[arg(long)]
    from_position: Option<i64>,
    /// Position to stop before (exclusive).
    #[arg(long)]
    to_position: Option<i64>,
    /// Earliest recorded_at (RFC 3339, inclusive).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Latest recorded_at (RFC 3339, exclusive).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Events read per round trip; memory stays bounded by it.
    #[arg(long, default_value_t = 2_000)]
    batch: i64,
    /// For admins: write personal fields in clear (or `null` once erased) instead of the stored
    /// ciphertext. Such an export holds personal data, and its hashes no longer verify.
    #[arg(long)]
    decrypt: bool,
}

async fn pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    ordo_event_store::connect(url, 2).await.context("connect to the database")
}

pub async fn verify(url: &str, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    // the walkers of a whole-log check use half of the connections
    let pool = ordo_event_store::connect(url, 8).await.context("connect to the database")?;
    let progress = Arc::new(Progress::new());
    let display = Display::start("verify", progress.clone());
    let result = ordo_event_store::verify::verify_with(&pool, args.category, args.id, progress).await;
    display.finish().await;
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn digest(url: &str, args: StreamArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    let store = ordo_event_store::EventStore::new(pool);
    let stream = StreamRef::new(args.category, args.id);
    let version = store.stream_version(stream).await?;
    let events = store.read_stream_range(stream, version, version).await?;
    let Some(head) = events.first() else {
        anyhow::bail!("stream {stream} does not exist");
    };
    println!("{}", serde_json::json!({"version": version, "head_hash": hex::encode(&head.hash)}));
    Ok(ExitCode::SUCCESS)
}

pub async fn prove(url: &str, args: ProveArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    let stream = StreamRef::new(args.stream.category, args.stream.id);
    let proof = ordo_event_store::verify::prove_digest(&pool, stream, args.version, &args.hash).await?;
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(if proof.extends { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Streams the range in position order, one envelope per line, a batch at a time.
pub async fn export(url: &str, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    let query = LogQuery {
        from_time: args.from,
        to_time: args.to,
        from_position: args.from_position,
        to_position: args.to_position,
        ..LogQuery::default()
    };
    let personal = ordo_event_store::personal::PersonalData::new(pool.clone());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = 0;
    let mut count: u64 = 0;
    loop {
        let mut batch = search(&pool, &query, after, args.batch).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        if args.decrypt {
            personal.reveal_recorded(&mut batch).await?;
        }
        for event in &batch {
            serde_json::to_writer(&mut out, &event.to_envelope()?)?;
            out.write_all(b"\n")?;
        }
        count += batch.len() as u64;
    }
    out.flush()?;
    eprintln!("exported {count} events");
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct VerifyExportArgs {
    /// The JSON lines file written by `ordo export`, or - for stdin.
    file: String,
}

/// Checks every line's hash and, where a stream's previous event is in the export too, the link.
pub fn verify_export(args: VerifyExportArgs) -> anyhow::Result<ExitCode> {
    use std::collections::HashMap;
    use std::io::BufRead;

    let reader: Box<dyn BufRead> = if args.file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(&args.file).context("open export")?))
    };
    let mut last: HashMap<StreamRef, (i64, String)> = HashMap::new();
    let (mut checked, mut broken) = (0u64, Vec::new());
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let env: ordo_schemas::EventEnvelope =
            serde_json::from_str(&line).with_context(|| format!("line {} is not an event envelope", n + 1))?;
        checked += 1;
        let computed = hex::encode(ordo_event_store::verify::envelope_hash(&env)?);
        let stream = env.stream();
        let mut problem = None;
        if computed != env.hash {
            problem = Some("hash_mismatch");
        } else if let Some((version, hash)) = last.get(&stream) {
            if *version + 1 == env.version && env.prev_hash.as_deref() != Some(hash.as_str()) {
                problem = Some("prev_hash_mismatch");
            }
        }
        if let Some(p) = problem {
            broken.push(serde_json::json!({"line": n + 1, "category": env.category, "stream_id": env.stream_id,
                "version": env.version, "problem": p}));
        }
        last.insert(stream, (env.version, env.hash.clone()));
    }
    let ok = broken.is_empty();
    println!("{}", serde_json::json!({"ok": ok, "checked": checked, "broken": broken}));
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
