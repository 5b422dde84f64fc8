//! The export memory figure (ignored: a measurement, not part of `make test`).
//!
//! ```sh
//! cargo test --release -p ordo-cli --test it -- --ignored --nocapture export_memory
//! ```
//!
//! Appends `ORDO_EXPORT_EVENTS` events (default 200,000; ten per append, one stream per append,
//! eight concurrent writers), runs `ordo export` to a file while polling the child's peak RSS
//! (`VmHWM` in `/proc/<pid>/status`), then `ordo verify-export` on the file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ordo_event_store::testing::TestDb;
use ordo_event_store::{ExpectedVersion, StreamRef};
use ordo_schemas::StreamCategory;
use uuid::Uuid;

use crate::event;

const PER_APPEND: i64 = 10;
const WRITERS: usize = 8;

/// `VmHWM` (peak resident set) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `ordo export <args>` into `file`; returns (wall time, peak RSS in KiB).
fn export_to(db: &TestDb, file: &Path, args: &[&str]) -> (Duration, u64) {
    let out = std::fs::File::create(file).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("export")
        .args(args)
        .env("ORDO_DATABASE_URL", &db.url)
        .stdout(Stdio::from(out))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        // VmHWM only grows, so the last reading before exit is the peak up to a few ms
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    assert!(status.success(), "export failed");
    (elapsed, peak)
}

async fn append_events(db: &TestDb, total: i64) -> Duration {
    let appends = total / PER_APPEND;
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS as i64 {
        let store = db.store();
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while i < appends {
                let stream = StreamRef::new(StreamCategory::Product, Uuid::new_v4());
                let events = (1..=PER_APPEND).map(event).collect();
                store.append(stream, ExpectedVersion::NoStream, events).await.unwrap();
                i += WRITERS as i64;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn export_memory_stays_flat_while_exporting_the_whole_log() {
    let total: i64 = std::env::var("ORDO_EXPORT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let db = TestDb::new().await;
    let appending = append_events(&db, total).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(count, total);
    let head: i64 = sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(&db.pool).await.unwrap();

    let dir = std::env::temp_dir().join(format!("ordo-export-memory-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = dir.join("small.jsonl");
    let whole = dir.join("whole.jsonl");
    // a 2,000-event export first: the baseline the whole export's RSS is compared with
    let positions = head.min(2_000) + 1;
    let (_, small_peak) = export_to(&db, &small, &["--to-position", &positions.to_string()]);
    let (wall, peak) = export_to(&db, &whole, &[]);
    let size = std::fs::metadata(&whole).unwrap().len();

    let verify = Command::new(env!("CARGO_BIN_EXE_ordo")).arg("verify-export").arg(&whole).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["checked"], total);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "export figure: {total} events appended in {:.1} s; export {:.2} s ({:.0} events/s), peak RSS {:.1} MiB \
         (2,000-event export: {:.1} MiB), file {:.1} MiB; verify-export ok",
        appending.as_secs_f64(),
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        mib(peak),
        mib(small_peak),
        size as f64 / (1024.0 * 1024.0),
    );
    assert!(mib(peak) < mib(small_peak) + 64.0, "export memory grows with the log: {peak} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
