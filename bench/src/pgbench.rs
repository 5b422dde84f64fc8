//! PostgreSQL's own limit: pgbench running a one-row INSERT at a given concurrency.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::stats::Summary;

/// Creates the table pgbench inserts into (a bigserial key and a small JSON payload, like an event).
pub async fn prepare(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query("DROP TABLE IF EXISTS pgbench_one_row").execute(pool).await?;
    sqlx::query("CREATE TABLE pgbench_one_row (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL)")
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs pgbench with `clients` connections for `duration` and summarises its per-transaction log.
pub fn run(db_url: &str, clients: usize, duration: Duration, work_dir: &Path) -> anyhow::Result<Summary> {
    run_at(db_url, clients, duration, work_dir, None)
}

/// As [`run`], throttled to `rate` transactions per second in total when given (`pgbench -R`).
/// Latencies are pgbench's per-transaction times, which leave out the schedule lag.
pub fn run_at(
    db_url: &str,
    clients: usize,
    duration: Duration,
    work_dir: &Path,
    rate: Option<f64>,
) -> anyhow::Result<Summary> {
    let script = work_dir.join("insert.sql");
    std::fs::write(&script, "INSERT INTO pgbench_one_row (payload) VALUES ('{\"delta\": 1}');\n")?;
    let prefix = work_dir.join(format!("pgbench_c{clients}"));
    let jobs = clients.min(2).to_string();
    let mut cmd = Command::new("pgbench");
    if let Some(rate) = rate {
        cmd.args(["-R", &format!("{:.0}", rate.max(1.0))]);
    }
    let out = cmd
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", &jobs])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(&script)
        .arg("--log")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(db_url)
        .output()
        .context("run pgbench (Debian package postgresql-client)")?;
    if !out.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut micros = Vec::new();
    for entry in std::fs::read_dir(work_dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !name.starts_with(&format!("pgbench_c{clients}.")) {
            continue;
        }
        // Log lines: client_id transaction_no time script_no time_epoch time_us
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line.split_whitespace().nth(2).and_then(|t| t.parse::<u64>().ok()) {
                micros.push(us);
            }
        }
        std::fs::remove_file(&path)?;
    }
    Ok(Summary::from_micros(micros, duration))
}
