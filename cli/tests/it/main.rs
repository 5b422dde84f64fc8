//! The operator CLI run as a real process against a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod export_memory;
mod hash_spec;
mod projections;
mod rebuild_kill;
mod restore;

use std::process::Output;

use ordo_event_store::testing::TestDb;
use ordo_event_store::{ExpectedVersion, NewEvent, StreamRef};
use ordo_schemas::{Actor, EventMetadata, StreamCategory};
use uuid::Uuid;

pub fn ordo(db: &TestDb, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .env("ORDO_DATABASE_URL", &db.url)
        .env("ORDO_JWT_SECRET", "test-secret")
        .output()
        .unwrap()
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_type: "StockAdjusted".into(),
        schema_version: 1,
        data: serde_json::json!({"delta": n, "note": "caf\u{e9} \"quoted\""}),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: Some(Uuid::new_v4()),
            actor: Actor::system(),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: None,
        },
    }
}

async fn seed(db: &TestDb, streams: usize, per_stream: i64) -> Vec<StreamRef> {
    let store = db.store();
    let mut out = Vec::new();
    for _ in 0..streams {
        let s = StreamRef::new(StreamCategory::Product, Uuid::new_v4());
        store.append(s, ExpectedVersion::NoStream, (1..=per_stream).map(event).collect()).await.unwrap();
        out.push(s);
    }
    out
}

async fn tamper(db: &TestDb, sql: &str) {
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn verify_exits_zero_on_an_intact_log_and_one_naming_the_broken_event_after_tampering() {
    let db = TestDb::new().await;
    let streams = seed(&db, 3, 4).await;
    let out = ordo(&db, &["verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], 12);

    let target = streams[1];
    tamper(
        &db,
        &format!("UPDATE events SET data = '{{\"delta\": 7}}' WHERE stream_id = '{}' AND version = 2", target.id),
    )
    .await;
    let out = ordo(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let broken = report["broken"].as_array().unwrap();
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0]["stream_id"], target.id.to_string());
    assert_eq!(broken[0]["version"], 2);
    assert_eq!(broken[0]["problem"], "hash_mismatch");

    let other = ordo(&db, &["verify", "--category", "product", "--id", &streams[0].id.to_string()]);
    assert!(other.status.success());
}

#[tokio::test]
async fn an_export_re_verifies_offline_and_a_changed_line_is_caught() {
    let db = TestDb::new().await;
    seed(&db, 5, 3).await;
    let out = ordo(&db, &["export", "--batch", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 15);
    let positions: Vec<i64> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "log order");

    let dir = std::env::temp_dir().join(format!("ordo-export-{}", Uuid::new_v4()));
    std::fs::write(&dir, &text).unwrap();
    let ok = ordo(&db, &["verify-export", dir.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    let forged = text.replacen("\"delta\":2", "\"delta\":20", 1);
    assert_ne!(forged, text);
    std::fs::write(&dir, &forged).unwrap();
    let bad = ordo(&db, &["verify-export", dir.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let _ = std::fs::remove_file(&dir);

    let ranged = ordo(
        &db,
        &["export", "--from-position", &positions[3].to_string(), "--to-position", &positions[6].to_string()],
    );
    assert_eq!(String::from_utf8(ranged.stdout).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn a_saved_digest_proves_until_the_history_behind_it_changes() {
    let db = TestDb::new().await;
    let s = seed(&db, 1, 3).await[0];
    let id = s.id.to_string();
    let out = ordo(&db, &["digest", "--category", "product", "--id", &id]);
    let digest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = digest["head_hash"].as_str().unwrap().to_owned();
    assert_eq!(digest["version"], 3);

    db.store().append(s, ExpectedVersion::Exact(3), vec![event(4)]).await.unwrap();
    let proof = ordo(&db, &["prove-digest", "--category", "product", "--id", &id, "--version", "3", "--hash", &hash]);
    assert!(proof.status.success(), "{}", String::from_utf8_lossy(&proof.stdout));

    tamper(&db, &format!("UPDATE events SET data = '{{}}' WHERE stream_id = '{id}' AND version = 1")).await;
    let proof = ordo(&db, &["prove-digest", "--category", "product", "--id", &id, "--version", "3", "--hash", &hash]);
    assert_eq!(proof.status.code(), Some(1));
}

#[tokio::test]
async fn a_minted_token_carries_the_requested_subject_and_role() {
    let db = TestDb::new().await;
    let sub = Uuid::new_v4();
    let out = ordo(&db, &["mint-token", "--sub", &sub.to_string(), "--role", "auditor"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let principal = ordo_service::JwtKeys::from_secret(b"test-secret").verify(token.trim()).unwrap();
    assert_eq!(principal.id, sub);
    assert_eq!(principal.role, ordo_schemas::Role::Auditor);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("test-secret"), "the secret is never printed");
    let bad = ordo(&db, &["mint-token", "--role", "system"]);
    assert!(!bad.status.success());
}
