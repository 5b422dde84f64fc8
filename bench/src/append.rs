//! Append throughput of the event log: each writer appends single events to its own streams
//! with an exact expected version (no contention), as command handlers do. Writers share their
//! process's group-commit writer; `--processes` spreads them over several processes (as several
//! command APIs would be), which then serialise their batches on the writer lock.

use std::time::{Duration, Instant};

use ordo_event_store::{EventStore, ExpectedVersion, NewEvent};
use ordo_schemas::{Actor, EventMetadata, StreamCategory, StreamRef};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::stats::Summary;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent writers, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    writers: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Streams each writer rotates over.
    #[arg(long, default_value_t = 16)]
    streams_per_writer: usize,
    /// Processes the writers are spread over (each with its own group-commit writer).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Measurement only: drop the writer lock from the append function, so batches of several
    /// processes are no longer serialised (positions then no longer follow commit order).
    #[arg(long)]
    no_writer_lock: bool,
    /// Let the database decide every batch (`ordo_append_batch`), as before the writer decided
    /// on the heads it knows: the baseline of ADR 0032.
    #[arg(long)]
    decide_in_database: bool,
    /// Skip pgbench (when only Ordo's figures are wanted).
    #[arg(long)]
    no_pgbench: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// The arguments of one writer process started by a multi-process run.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The benchmark database (never logged).
    #[arg(long, hide_env_values = true)]
    url: String,
    #[arg(long)]
    writers: usize,
    #[arg(long)]
    seconds: u64,
    #[arg(long)]
    streams_per_writer: usize,
    #[arg(long)]
    decide_in_database: bool,
}

pub async fn run(admin_url: &str, args: Args) -> anyhow::Result<()> {
    // One database per run: two runs on one server (from two checkouts) must not drop each
    // other's.
    let db = format!("ordo_bench_append_{}", std::process::id());
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{admin_url}/{db}"),
    };
    let max = args.writers.iter().copied().max().unwrap_or(1) as u32 + 2;
    let pool = ordo_event_store::connect(&url, max).await?;
    ordo_event_store::migrate(&pool).await?;
    if args.no_writer_lock {
        drop_writer_lock(&pool).await?;
    }
    crate::pgbench::prepare(&pool).await?;
    let store = EventStore::with_writer_options(pool.clone(), writer_options(args.decide_in_database));
    let work_dir = std::env::temp_dir().join(format!("ordo-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work_dir)?;
    let duration = Duration::from_secs(args.seconds);

    println!(
        "single-event appends vs pgbench one-row INSERT, {}s per run, {} process(es){}",
        args.seconds,
        args.processes,
        if args.no_writer_lock { ", WITHOUT the writer lock (measurement only)" } else { "" }
    );
    if args.decide_in_database {
        println!("every batch decided in the database (ordo_append_batch), the baseline of ADR 0032");
    }
    println!(
        "{:>7} | {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>7} {:>13} | {:>9} {:>13}",
        "writers",
        "ordo ev/s",
        "p50 ms",
        "p99 ms",
        "pgbench tx/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "target",
        "p99 ratio",
        "target"
    );
    let mut results = Vec::new();
    for &writers in &args.writers {
        let ordo = if args.processes > 1 {
            let spread = Spread {
                processes: args.processes,
                streams: args.streams_per_writer,
                decide_in_database: args.decide_in_database,
            };
            multi_process_run(&url, writers, &spread, duration).await?
        } else {
            let micros = append_run(&store, writers, args.streams_per_writer, duration).await?;
            Summary::from_micros(micros, duration)
        };
        let pg = if args.no_pgbench { None } else { Some(crate::pgbench::run(&url, writers, duration, &work_dir)?) };
        let ratio =
            pg.as_ref().map_or(0.0, |pg| if pg.per_second > 0.0 { ordo.per_second / pg.per_second } else { 0.0 });
        let p99_ratio = pg.as_ref().map_or(0.0, |pg| if pg.p99_ms > 0.0 { ordo.p99_ms / pg.p99_ms } else { 0.0 });
        let (pt, p50, p99) = pg.as_ref().map_or((0.0, 0.0, 0.0), |pg| (pg.per_second, pg.p50_ms, pg.p99_ms));
        // the targets hold for one process with the writer lock, beside pgbench
        let judged = pg.is_some() && args.processes == 1 && !args.no_writer_lock;
        let throughput = throughput_target(writers).filter(|_| judged);
        let p99_target = p99_target(writers).filter(|_| judged);
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        // without pgbench its columns and the ratios are "-"
        let num = |v: f64, decimals: usize, suffix: &str| {
            if pg.is_some() {
                format!("{v:.decimals$}{suffix}")
            } else {
                "-".to_owned()
            }
        };
        println!(
            "{:>7} | {:>12.0} {:>9.2} {:>9.2} | {:>12} {:>9} {:>9} | {:>7} {:>13} | {:>9} {:>13}",
            writers,
            ordo.per_second,
            ordo.p50_ms,
            ordo.p99_ms,
            num(pt, 0, ""),
            num(p50, 2, ""),
            num(p99, 2, ""),
            num(ratio, 2, "x"),
            throughput.map_or("-".into(), |t| format!(">= {t:.1}x {}", verdict(ratio >= t))),
            num(p99_ratio, 2, "x"),
            p99_target.map_or("-".into(), |t| format!("<= {t:.1}x {}", verdict(p99_ratio <= t))),
        );
        results.push(serde_json::json!({
            "writers": writers, "processes": args.processes, "writer_lock": !args.no_writer_lock,
            "ordo": ordo, "pgbench": pg, "ratio": ratio, "p99_ratio": p99_ratio,
            "target_ratio": throughput, "target_p99_ratio": p99_target,
        }));
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

/// The goal for appends/s against pgbench's tx/s at this many writers.
pub fn throughput_target(writers: usize) -> Option<f64> {
    match writers {
        1 => Some(0.6),
        8 => Some(1.0),
        32 => Some(1.5),
        _ => None,
    }
}

/// The goal for the append p99 against pgbench's p99 at this many writers.
pub fn p99_target(writers: usize) -> Option<f64> {
    (writers == 32).then_some(2.0)
}

/// Runs as one of the processes of a multi-process run: appends for the given time, then prints
/// every latency in microseconds as one JSON array.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let pool = ordo_event_store::connect(&args.url, args.writers as u32 + 2).await?;
    let store = EventStore::with_writer_options(pool, writer_options(args.decide_in_database));
    let micros = append_run(&store, args.writers, args.streams_per_writer, Duration::from_secs(args.seconds)).await?;
    println!("{}", serde_json::to_string(&micros)?);
    Ok(())
}

fn writer_options(decide_in_database: bool) -> ordo_event_store::WriterOptions {
    ordo_event_store::WriterOptions { decide_in_database, ..Default::default() }
}

/// How a multi-process run spreads its writers.
struct Spread {
    processes: usize,
    streams: usize,
    decide_in_database: bool,
}

/// `writers` spread over child processes of this binary, started together.
async fn multi_process_run(url: &str, writers: usize, spread: &Spread, duration: Duration) -> anyhow::Result<Summary> {
    let Spread { processes, streams, decide_in_database } = *spread;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for p in 0..processes {
        let share = writers / processes + usize::from(p < writers % processes);
        if share == 0 {
            continue;
        }
        children.push(
            tokio::process::Command::new(&exe)
                .args(["append-worker", "--url", url, "--writers", &share.to_string()])
                .args(["--seconds", &duration.as_secs().to_string(), "--streams-per-writer", &streams.to_string()])
                .args(decide_in_database.then_some("--decide-in-database"))
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    let mut micros = Vec::new();
    for child in children {
        let out = child.wait_with_output().await?;
        anyhow::ensure!(out.status.success(), "an append worker failed");
        micros.extend(serde_json::from_slice::<Vec<u64>>(&out.stdout)?);
    }
    Ok(Summary::from_micros(micros, duration))
}

/// Measurement only: both append functions without their first statement (the writer lock).
async fn drop_writer_lock(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    for function in ["ordo_append_batch", "ordo_append_checked"] {
        let def: String =
            sqlx::query_scalar("SELECT pg_get_functiondef($1::regproc)").bind(function).fetch_one(pool).await?;
        let unlocked = def.replace("PERFORM pg_advisory_xact_lock(ordo_writer_lock_key());", "");
        anyhow::ensure!(unlocked != def, "{function} no longer takes the writer lock as expected");
        sqlx::query(&unlocked).execute(pool).await?;
    }
    Ok(())
}

async fn append_run(
    store: &EventStore,
    writers: usize,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<Vec<u64>> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    let payload = Payload::from_env()?;
    for _ in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut own: Vec<(StreamRef, i64)> =
                (0..streams).map(|_| (StreamRef::new(payload.category(), Uuid::new_v4()), 0)).collect();
            let mut micros = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let slot = i % own.len();
                let (stream, version) = own[slot];
                let t = Instant::now();
                let out = store.append(stream, ExpectedVersion::Exact(version), vec![payload.event(i, stream)]).await?;
                micros.push(t.elapsed().as_micros() as u64);
                own[slot].1 = out.version;
                i += 1;
            }
            anyhow::Ok(micros)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// What each append writes, from `ORDO_BENCH_APPEND_PAYLOAD` (inherited by worker processes):
/// `stock` (default) a `StockAdjusted`; `personal` a `CustomerRegistered` on a customer stream,
/// whose name, email and address are sealed; `personal-clear` the same payload under an event
/// type without personal fields, so it is stored in clear; `padded-clear` that one with 420
/// more bytes, about the size sealing adds. They measure the cost of sealing back to back, and
/// how much of it is size.
#[derive(Clone, Copy)]
enum Payload {
    Stock,
    Personal,
    PersonalClear,
    PaddedClear,
}

impl Payload {
    fn from_env() -> anyhow::Result<Self> {
        match std::env::var("ORDO_BENCH_APPEND_PAYLOAD").as_deref() {
            Err(_) | Ok("" | "stock") => Ok(Payload::Stock),
            Ok("personal") => Ok(Payload::Personal),
            Ok("personal-clear") => Ok(Payload::PersonalClear),
            Ok("padded-clear") => Ok(Payload::PaddedClear),
            Ok(other) => anyhow::bail!("ORDO_BENCH_APPEND_PAYLOAD: unknown payload {other}"),
        }
    }

    fn category(self) -> StreamCategory {
        match self {
            Payload::Stock => StreamCategory::Product,
            Payload::Personal | Payload::PersonalClear | Payload::PaddedClear => StreamCategory::Customer,
        }
    }

    fn event(self, i: usize, stream: StreamRef) -> NewEvent {
        let personal = || {
            serde_json::json!({
                "customer_id": stream.id, "name": "Ada Lovelace", "email": format!("ada{i}@example.com"),
                "shipping_address": {"line1": "Invalidenstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}
            })
        };
        let (event_type, data) = match self {
            Payload::Stock => {
                ("StockAdjusted", serde_json::json!({"delta": 1, "reason": "restock", "on_hand_after": i}))
            }
            Payload::Personal => ("CustomerRegistered", personal()),
            Payload::PersonalClear => ("CustomerProfileInClear", personal()),
            Payload::PaddedClear => {
                let mut data = personal();
                data["padding"] = serde_json::Value::String("x".repeat(420));
                ("CustomerProfileInClear", data)
            }
        };
        NewEvent { event_type: event_type.into(), ..event(data) }
    }
}

fn event(data: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: "StockAdjusted".into(),
        schema_version: 1,
        data,
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    }
}
