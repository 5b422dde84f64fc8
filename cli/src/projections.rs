//! Projection commands: migrate, rebuild, retry-parked and replay with drift detection.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ordo_event_store::progress::Progress;
use ordo_projectors::replay::{DriftReport, ReplayOptions, TableDrift};
use ordo_projectors::Projection;
use ordo_schemas::{StreamCategory, StreamRef};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::parse_category;
use crate::progress::Display;

/// Connections for the projection commands: a rebuild holds a lock connection, reads the log
/// through a second while a third bulk-loads the tables, then swaps in a transaction.
const POOL_SIZE: u32 = 6;

fn parse_projection(s: &str) -> Result<Projection, String> {
    Projection::parse(s).ok_or_else(|| format!("unknown projection {s} (orders, catalog, sales)"))
}

fn chosen(projection: Option<Projection>) -> Vec<Projection> {
    projection.map_or_else(|| Projection::ALL.to_vec(), |p| vec![p])
}

async fn pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    ordo_event_store::connect(url, POOL_SIZE).await.context("connect to the database")
}

/// Every crate's migrations, in dependency order; each ignores the others' versions.
pub async fn migrate(url: &str) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    ordo_event_store::migrate(&pool).await.context("event store migrations")?;
    ordo_commands::migrate(&pool).await.context("command side migrations")?;
    ordo_projectors::migrate(&pool).await.context("projector migrations")?;
    ordo_saga::migrate(&pool).await.context("order saga migrations")?;
    eprintln!("migrated: event store, command side, projectors, order saga");
    // The event store's migration destroyed the keys of customers erased in the log (a restored
    // backup); with a KEK set, every key is moved to it (the second step of a KEK rotation).
    if let Some(path) = std::env::var_os(ERASURE_REGISTER_VAR).filter(|p| !p.is_empty()) {
        let reapplied = reapply_erasures(&pool, &path).await?;
        eprintln!("erasures re-applied from the register: {reapplied}");
    }
    let kek_set = std::env::var(ordo_event_store::personal::KEK_VAR).is_ok_and(|v| !v.trim().is_empty());
    if kek_set {
        let personal = ordo_event_store::personal::PersonalData::new(pool.clone());
        let rewrapped = personal.rewrap().await.context("rewrap personal data keys")?;
        eprintln!("personal data keys rewrapped under the current KEK: {rewrapped}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The environment variable naming an erasure register for `ordo migrate` after a restore: a JSON
/// lines file of envelopes (an `ordo export` of the live log taken after the backup, or the
/// `ordo.customers` topic); its `PersonalDataErased` events missing from the restored log are
/// appended again and their customers' keys destroyed.
pub const ERASURE_REGISTER_VAR: &str = "ORDO_ERASURE_REGISTER";

async fn reapply_erasures(pool: &sqlx::PgPool, path: &std::ffi::OsStr) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("open the file named by {ERASURE_REGISTER_VAR}"))?;
    let mut envelopes = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // only erasures matter; other lines need not even parse
        if line.contains("PersonalDataErased") {
            envelopes.push(serde_json::from_str(&line).context("an erasure line of the register does not parse")?);
        }
    }
    let store = ordo_event_store::EventStore::new(pool.clone());
    Ok(ordo_event_store::personal::reapply_erasures(&store, envelopes).await?)
}

/// Forgets every Kafka position Ordo keeps in Postgres: the relay republishes the whole log
/// and the projectors read every topic from the start (skipping what they already hold); the
/// saga's stored offsets count in the old topics too.
pub async fn reset_publishing(url: &str) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    let mut tx = pool.begin().await?;
    let checkpoints = sqlx::query("DELETE FROM checkpoints").execute(&mut *tx).await?.rows_affected();
    let offsets = sqlx::query("DELETE FROM projector_offsets").execute(&mut *tx).await?.rows_affected();
    let saga = sqlx::query("DELETE FROM saga_offsets").execute(&mut *tx).await?.rows_affected();
    sqlx::query("DELETE FROM relay_partitions").execute(&mut *tx).await?;
    tx.commit().await?;
    eprintln!("forgot {checkpoints} relay checkpoint(s), {offsets} projector offset(s) and {saga} saga offset(s)");
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct RebuildArgs {
    /// orders, catalog or sales; all when omitted.
    #[arg(long, value_parser = parse_projection)]
    projection: Option<Projection>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn rebuild(url: &str, args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    let projections = chosen(args.projection);
    let progress = Arc::new(Progress::new());
    let display = Display::start("rebuild", progress.clone());
    let result = ordo_projectors::rebuild::rebuild_with(&pool, &projections, &progress).await;
    display.finish().await;
    let mut reports = Vec::new();
    for r in result.context("rebuild")? {
        let p = r.projection;
        if !args.json {
            println!(
                "{p}: rebuilt from {} events ({} caught up in the swap) in {:.3} s, swap held the lock {} ms",
                r.events,
                r.caught_up,
                r.duration.as_secs_f64(),
                r.swap.as_millis()
            );
        }
        reports.push(json!({
            "projection": p.name(),
            "events": r.events,
            "caught_up": r.caught_up,
            "duration_ms": r.duration.as_millis() as u64,
            "swap_ms": r.swap.as_millis() as u64,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct RetryArgs {
    /// orders, catalog or sales; all when omitted.
    #[arg(long, value_parser = parse_projection)]
    projection: Option<Projection>,
    /// Only the stream of this category (with --id).
    #[arg(long, value_parser = parse_category, requires = "id")]
    category: Option<StreamCategory>,
    /// Only the stream with this id (with --category).
    #[arg(long, requires = "category")]
    id: Option<Uuid>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Exits 1 when a stream stays parked.
pub async fn retry_parked(url: &str, args: RetryArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    let stream = args.category.zip(args.id).map(|(c, id)| StreamRef::new(c, id));
    let outcomes = ordo_projectors::retry_parked(&pool, args.projection, stream).await.context("retry")?;
    let still_parked = outcomes.iter().filter(|o| !o.unparked).count();
    if args.json {
        let list: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                json!({"projection": o.projection.name(), "category": o.stream.category.as_str(),
                    "stream_id": o.stream.id, "unparked": o.unparked, "applied": o.applied, "error": o.error})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if outcomes.is_empty() {
        println!("no parked streams");
    } else {
        for o in &outcomes {
            match &o.error {
                None => println!("{} {}: unparked, {} events applied", o.projection, o.stream, o.applied),
                Some(e) => println!("{} {}: still parked: {e}", o.projection, o.stream),
            }
        }
        println!("{} retried, {still_parked} still parked", outcomes.len());
    }
    Ok(if still_parked == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// orders, catalog or sales; all when omitted.
    #[arg(long, value_parser = parse_projection)]
    projection: Option<Projection>,
    /// Replay events up to this log position (inclusive); default: the whole committed log.
    #[arg(long)]
    to_position: Option<i64>,
    /// Keep the <table>_replay tables for inspection (the next replay replaces them).
    #[arg(long)]
    keep: bool,
    /// Seconds to wait for a long transaction holding the commit-safe horizon back.
    #[arg(long, default_value_t = 30)]
    horizon_wait_secs: u64,
    /// Print JSON (one report per projection) instead of text.
    #[arg(long)]
    json: bool,
}

/// Exits 1 when any projection drifted.
pub async fn replay(url: &str, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(url).await?;
    let options = ReplayOptions {
        to_position: args.to_position,
        keep: args.keep,
        horizon_wait: Duration::from_secs(args.horizon_wait_secs),
    };
    let progress = Arc::new(Progress::new());
    let display = Display::start("replay", progress.clone());
    let result = ordo_projectors::replay::replay_all(&pool, &chosen(args.projection), &options, &progress).await;
    display.finish().await;
    let mut reports = result.context("replay")?;
    reveal_drift(&pool, &mut reports).await?;
    if !args.json {
        reports.iter().for_each(print_report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    let drift = reports.iter().any(|r| r.drift);
    Ok(if drift { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The orders read model keeps personal fields sealed (ADR 0027); the drift report shows them as
/// the query API answers them: in clear while the customer's key exists, `null` once erased. A
/// value that does not decrypt is shown as stored, with a warning.
async fn reveal_drift(pool: &sqlx::PgPool, reports: &mut [DriftReport]) -> anyhow::Result<()> {
    let mut slots = Vec::new();
    for table in reports.iter_mut().flat_map(|r| r.tables.iter_mut()) {
        for row in table.missing.iter_mut().chain(table.extra.iter_mut()) {
            if let Some(order) = order_of(&row.key) {
                sealed_slots(order, "", &mut row.row, &mut slots);
            }
        }
        for row in &mut table.different {
            let Some(order) = order_of(&row.key) else { continue };
            for (column, drift) in &mut row.columns {
                sealed_slots(order, column, &mut drift.live, &mut slots);
                sealed_slots(order, column, &mut drift.replay, &mut slots);
            }
        }
    }
    if slots.is_empty() {
        return Ok(());
    }
    let personal = ordo_event_store::personal::PersonalData::new(pool.clone());
    for problem in personal.reveal_slots(&mut slots).await.context("reveal personal fields")?.into_iter().flatten() {
        eprintln!("warning: {problem} does not decrypt (altered or moved); shown as stored");
    }
    Ok(())
}

/// The order a read-model row belongs to (rows keyed by `order_id`).
fn order_of(key: &serde_json::Map<String, Value>) -> Option<Uuid> {
    key.get("order_id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok())
}

/// Every sealed value within `value`, each with the member name it sits under (the field it was
/// sealed for).
fn sealed_slots<'a>(
    order: Uuid,
    field: &'a str,
    value: &'a mut Value,
    out: &mut Vec<ordo_event_store::personal::SealedSlot<'a>>,
) {
    if ordo_schemas::SealedField::from_value(value).is_some() {
        out.push(ordo_event_store::personal::SealedSlot {
            category: StreamCategory::Order,
            stream_id: order,
            field,
            value,
        });
        return;
    }
    match value {
        Value::Object(members) => members.iter_mut().for_each(|(name, v)| sealed_slots(order, name, v, out)),
        Value::Array(items) => items.iter_mut().for_each(|v| sealed_slots(order, field, v, out)),
        _ => {}
    }
}

fn print_report(r: &DriftReport) {
    let verdict = if r.drift { "DRIFT" } else { "no drift" };
    println!(
        "{}: replayed {} events up to position {} in {} ms: {verdict}",
        r.projection, r.events, r.to_position, r.duration_ms
    );
    if !r.complete {
        println!("  warning: a long transaction held the commit-safe horizon back; some events were not replayed");
    }
    if r.replay_parked > 0 {
        println!("  the replay parked {} streams on poison events", r.replay_parked);
    }
    for t in &r.tables {
        print_table(t);
    }
}

fn print_table(t: &TableDrift) {
    let c = &t.counts;
    println!(
        "  {}: {} missing, {} extra, {} different, {} in flight (not drift)",
        t.table, c.missing, c.extra, c.different, c.in_flight
    );
    for row in &t.missing {
        println!("    missing {}", Value::Object(row.key.clone()));
    }
    for row in &t.extra {
        println!("    extra {}: {}", Value::Object(row.key.clone()), row.row);
    }
    for row in &t.different {
        println!("    different {}", Value::Object(row.key.clone()));
        for (column, d) in &row.columns {
            println!("      {column}: live {} replay {}", d.live, d.replay);
        }
    }
    let listed = (t.missing.len() + t.extra.len() + t.different.len()) as u64;
    if listed < c.missing + c.extra + c.different {
        println!(
            "    ... {} more not listed (use --json, or --keep and SQL)",
            c.missing + c.extra + c.different - listed
        );
    }
}
