//! The process shape, through the real binary: `--help` names every variable and no secret,
//! old variable names still work with a warning, and the schema is an explicit step.

use std::process::Command;

use ordo_event_store::testing::TestDb;
use ordo_schemas::Role;
use ordo_service::test_process::RunningProcess;
use ordo_service::JwtKeys;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::SECRET;

const BIN: &str = env!("CARGO_BIN_EXE_command-api");

#[test]
fn help_lists_every_variable_and_prints_no_secret_even_when_they_are_set() {
    let out = Command::new(BIN)
        .arg("--help")
        .env("ORDO_DATABASE_URL", "postgres://ordo:db-pa55word@db.internal/ordo")
        .env("DATABASE_URL", "postgres://ordo:old-pa55word@db.internal/ordo")
        .env("ORDO_JWT_SECRET", "jwt-s3cret-value")
        .env("ORDO_PERSONAL_DATA_KEK", "kek-s3cret-value")
        .env("ORDO_COMMAND_ADDR", "127.0.0.1:18080")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "ORDO_COMMAND_ADDR",
        "ORDO_COMMAND_DB_MAX_CONNECTIONS",
        "ORDO_COMMAND_MIGRATE",
        "ORDO_COMMAND_BODY_LIMIT_BYTES",
        "ORDO_COMMAND_APPEND_LOCK_TIMEOUT_MS",
        "ORDO_COMMAND_JWT_ISSUER",
        "ORDO_COMMAND_DATABASE_URL or ORDO_DATABASE_URL",
        "ORDO_COMMAND_JWT_SECRET or ORDO_JWT_SECRET",
        "ORDO_PERSONAL_DATA_KEK",
    ] {
        assert!(help.contains(name), "--help lacks {name}:\n{help}");
    }
    assert!(help.contains("127.0.0.1:18080"), "a non-secret value set in the environment is shown:\n{help}");
    for secret in ["db-pa55word", "old-pa55word", "jwt-s3cret-value", "kek-s3cret-value"] {
        assert!(!help.contains(secret), "--help shows a secret:\n{help}");
    }
    assert!(!help.contains("--database-url") && !help.contains("--jwt-secret"), "secrets have no flag:\n{help}");
}

#[tokio::test]
async fn without_migrate_an_unmigrated_database_stops_the_process_with_a_message() {
    let db = TestDb::new().await; // the event log's migrations only, not the command side's
    let out = Command::new(BIN)
        .env("ORDO_DATABASE_URL", &db.url)
        .env("ORDO_JWT_SECRET", "x")
        .env("ORDO_COMMAND_ADDR", "127.0.0.1:0")
        .env_remove("ORDO_MIGRATE")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ordo migrate") && text.contains("--migrate"), "{text}");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'command_snapshots'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tables, 0, "nothing was migrated");
}

#[tokio::test]
async fn names_of_the_earlier_release_still_work_with_a_warning_naming_the_new_ones() {
    let db = TestDb::new().await;
    let secret = std::str::from_utf8(SECRET).unwrap();
    let process = RunningProcess::start(
        BIN,
        &[
            ("DATABASE_URL", &db.url),
            ("ORDO_BODY_LIMIT_BYTES", "300"),
            ("ORDO_COMMAND_MIGRATE", "true"),
            ("ORDO_JWT_SECRET", secret),
            ("ORDO_COMMAND_ADDR", "127.0.0.1:0"),
        ],
    );
    let warned = |old: &str, new: &str| {
        process.wait_for(|v| v["variable"] == old && v["instead"] == new && v["level"] == "WARN").is_some()
    };
    assert!(warned("DATABASE_URL", "ORDO_DATABASE_URL"), "{:?}", process.log());
    assert!(warned("ORDO_BODY_LIMIT_BYTES", "ORDO_COMMAND_BODY_LIMIT_BYTES"), "{:?}", process.log());

    let token =
        JwtKeys::from_secret(SECRET).mint(Uuid::new_v4(), Role::Merchant, chrono::Duration::minutes(5)).unwrap();
    let http = reqwest::Client::new();
    let post =
        |body: Value| http.post(format!("{}/v1/merchants", process.base())).bearer_auth(&token).json(&body).send();
    let big = post(json!({"name": "x".repeat(400)})).await.unwrap();
    assert_eq!(big.status(), 413, "the old body-limit variable applies");
    let created = post(json!({"name": "Acme"})).await.unwrap();
    assert_eq!(created.status(), 201, "the old database variable applies (and --migrate from the environment)");
}

#[test]
fn a_malformed_key_encryption_key_stops_the_process_at_start_without_printing_it() {
    let out = Command::new(BIN)
        .env("ORDO_DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused")
        .env("ORDO_JWT_SECRET", "x")
        .env("ORDO_PERSONAL_DATA_KEK", "not-a-kek-s3cret")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("ORDO_PERSONAL_DATA_KEK") && !text.contains("not-a-kek-s3cret"), "{text}");
}
