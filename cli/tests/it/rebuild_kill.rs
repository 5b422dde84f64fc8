//! `ordo rebuild` killed in the middle of its pass, and run again.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ordo_event_store::testing::TestDb;
use ordo_projectors::testing::{snapshot, Workload};

use crate::projections::{db, project_whole_log};

/// Polls until `sql` (a boolean query) is true.
async fn until(db: &TestDb, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if sqlx::query_scalar::<_, bool>(sql).fetch_one(&db.pool).await.unwrap() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index names of the read-model tables, as the query API's plans see them.
async fn index_names(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename || '.' || indexname FROM pg_indexes WHERE tablename LIKE 'rm\\_%' ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_during_its_pass_leaves_the_live_tables_untouched_and_a_rerun_finishes() {
    let db = db().await;
    Workload::run(&db.store(), 40).await;
    project_whole_log(&db).await;
    let before = snapshot(&db.pool).await;
    let indexes = index_names(&db).await;

    // the pass stops at its first read of the log while this lock is held ...
    let mut log_lock = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE").execute(&mut *log_lock).await.unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["rebuild"])
        .env("ORDO_DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(
        &db,
        "SELECT to_regclass('rm_orders_shadow') IS NOT NULL AND to_regclass('rm_products_shadow') IS NOT NULL \
        AND to_regclass('rm_merchant_daily_sales_shadow') IS NOT NULL \
        AND to_regclass('projection_progress_sales_shadow') IS NOT NULL",
        "the shadow tables",
    )
    .await;
    until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM events%')",
        "the rebuild to wait for the log",
    )
    .await;
    // ... and its load stops at the progress rows while this one is: the shadow tables fill
    let mut progress_lock = db.pool.begin().await.unwrap();
    sqlx::query(
        "LOCK TABLE projection_progress_orders_shadow, projection_progress_catalog_shadow, \
         projection_progress_sales_shadow IN SHARE MODE",
    )
    .execute(&mut *progress_lock)
    .await
    .unwrap();
    log_lock.commit().await.unwrap();
    until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
         AND query LIKE 'COPY projection_progress%')",
        "the rebuild to load its progress rows",
    )
    .await;
    let loaded: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_orders_shadow").fetch_one(&db.pool).await.unwrap();
    assert!(loaded > 0, "the pass had loaded rows before it was killed");
    child.kill().unwrap();
    child.wait().unwrap();
    progress_lock.commit().await.unwrap();

    assert_eq!(snapshot(&db.pool).await, before, "the live tables are untouched");
    assert_eq!(index_names(&db).await, indexes);

    let out = crate::ordo(&db, &["rebuild"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rerun: {} {stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("rebuild: ") && stderr.contains("events/s"), "progress lines: {stderr}");
    assert_eq!(snapshot(&db.pool).await, before, "the rerun rebuilds the same rows");
    assert_eq!(index_names(&db).await, indexes, "the swapped tables carry the live index names");
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_shadow') \
              + (SELECT count(*) FROM projection_progress WHERE projection LIKE '%#rebuild') \
              + (SELECT count(*) FROM projection_state WHERE projection LIKE '%#rebuild' OR rebuilding_since IS NOT NULL)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
}
