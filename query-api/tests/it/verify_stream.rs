//! Whole-log verification over HTTP outlasting the request timeout.

use std::time::Duration;

use ordo_projectors::testing::Workload;
use ordo_schemas::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::App;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_log_verification_slower_than_the_request_timeout_streams_progress_then_its_report() {
    let app = App::spawn_with(|c| {
        c.limits.timeout = std::time::Duration::from_millis(1_000);
        c.consistency_wait_ms = 500;
    })
    .await;
    Workload::run(&app.db.store(), 6).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();

    // every read of the log waits behind this lock for well over the request timeout
    let mut blocker = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let auditor = Some((Role::Auditor, Uuid::new_v4()));
    let mut resp = app.get("/v1/audit/verify", auditor).header("accept", "application/x-ndjson").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        blocker.commit().await.unwrap();
    });
    let mut body = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), resp.chunk()).await.unwrap().unwrap() {
        body.extend_from_slice(&chunk);
    }
    release.await.unwrap();
    let lines: Vec<Value> =
        String::from_utf8(body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (last, progress) = lines.split_last().unwrap();
    assert!(progress.len() >= 2, "progress lines while the log was locked: {lines:?}");
    assert!(progress.iter().all(|l| l["progress"]["checked"].is_u64()), "{lines:?}");
    assert_eq!(last["report"]["ok"], true, "{last}");
    assert_eq!(last["report"]["checked"], events);

    // the plain JSON answer is the report itself after white space
    let plain: Value = app.get("/v1/audit/verify", auditor).send().await.unwrap().json().await.unwrap();
    assert_eq!(plain["ok"], true);
    assert_eq!(plain["checked"], events);
    app.stop().await;
}
