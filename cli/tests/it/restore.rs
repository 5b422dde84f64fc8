//! Restores: a log from another cluster reads in full, and `ordo reset-publishing`.

use ordo_event_store::testing::TestDb;

use crate::{ordo, seed};

#[tokio::test]
async fn a_restored_log_with_transaction_ids_this_cluster_has_not_reached_is_read_in_full() {
    let db = TestDb::new().await;
    seed(&db, 1, 2).await;
    // As after restoring a dump from a cluster whose transaction ids were far ahead: readers page
    // by position, so nothing depends on this cluster's transaction ids.
    sqlx::query(
        "INSERT INTO events (tx_id, category, stream_id, version, event_id, event_type, schema_version, data, \
         metadata, recorded_at, hash) \
         VALUES ((1::bigint << 40), 'product', gen_random_uuid(), 1, gen_random_uuid(), 'StockAdjusted', 1, '{}', \
         '{}', now(), '\\x00')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(ordo(&db, &["migrate"]).status.success());
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.pool).await.unwrap();
    let (read, _) = db.store().read_all(ordo_event_store::LogCursor::START, 1_000).await.unwrap();
    assert_eq!(read.len() as i64, total);
}

#[tokio::test]
async fn reset_publishing_forgets_relay_checkpoints_and_projector_offsets() {
    let db = TestDb::new().await;
    assert!(ordo(&db, &["migrate"]).status.success());
    db.store().save_checkpoint("relay", ordo_event_store::LogCursor::at(9)).await.unwrap();
    sqlx::query(
        "INSERT INTO projector_offsets (group_id, topic, partition, next_offset) VALUES ('g', 'ordo.orders', 0, 42)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO saga_offsets (group_id, topic, partition, next_offset, incarnation) \
         VALUES ('g', 'ordo.orders', 0, 42, 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let out = ordo(&db, &["reset-publishing"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM checkpoints) + (SELECT count(*) FROM projector_offsets) \
             + (SELECT count(*) FROM saga_offsets)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    assert_eq!(db.store().load_checkpoint("relay").await.unwrap(), ordo_event_store::LogCursor::START);
}

/// `CustomerRegistered` of a new customer with `email`, appended to the log.
async fn registered_customer(db: &TestDb, email: &str) -> ordo_event_store::StreamRef {
    use ordo_event_store::{ExpectedVersion, NewEvent, StreamRef};
    use ordo_schemas::{Actor, EventMetadata, StreamCategory};
    let customer = StreamRef::new(StreamCategory::Customer, uuid::Uuid::new_v4());
    let data = serde_json::json!({
        "customer_id": customer.id, "name": "Ada Lovelace", "email": email,
        "shipping_address": {"line1": "Invalidenstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    });
    let metadata = EventMetadata {
        event_id: uuid::Uuid::new_v4(),
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: None,
        actor: Actor::system(),
        traceparent: None,
        tracestate: None,
    };
    let event = NewEvent { event_type: "CustomerRegistered".into(), schema_version: 1, data, metadata };
    db.store().append(customer, ExpectedVersion::NoStream, vec![event]).await.unwrap();
    customer
}

async fn revealed_name(db: &TestDb, customer: ordo_event_store::StreamRef) -> serde_json::Value {
    let mut events = db.store().read_stream(customer, 1).await.unwrap();
    db.store().personal().reveal_recorded(&mut events).await.unwrap();
    events[0].data["name"].clone()
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_backup_taken_before_an_erasure_restored_as_the_runbook_says_ends_erased_again() {
    let live = TestDb::new().await;
    assert!(ordo(&live, &["migrate"]).status.success());
    let email = format!("restore-{}@example.com", uuid::Uuid::new_v4().simple());
    let customer = registered_customer(&live, &email).await;
    let dir = std::env::temp_dir().join(format!("ordo-restore-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("ordo.dump");
    run("pg_dump", &["--format=custom", &format!("--file={}", dump.display()), &live.url]);

    // The erasure, after the backup, on the live system; an export taken later is the register.
    let erased = ordo_event_store::NewEvent {
        event_type: "PersonalDataErased".into(),
        schema_version: 1,
        data: serde_json::json!({"customer_id": customer.id, "reason": "ticket 9", "erased_by": ordo_schemas::Actor::system()}),
        metadata: ordo_schemas::EventMetadata {
            event_id: uuid::Uuid::new_v4(),
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: None,
            actor: ordo_schemas::Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    };
    live.store().append(customer, ordo_event_store::ExpectedVersion::Exact(1), vec![erased]).await.unwrap();
    live.store().personal().erase(customer.id).await.unwrap();
    let export = ordo(&live, &["export"]);
    assert!(export.status.success());
    let register = dir.join("register.jsonl");
    std::fs::write(&register, &export.stdout).unwrap();

    // Disaster: the backup restored into a fresh database brings the key back.
    let restored = TestDb::new().await;
    run(
        "pg_restore",
        &["--clean", "--if-exists", "--no-owner", &format!("--dbname={}", restored.url), &dump.to_string_lossy()],
    );
    assert_eq!(revealed_name(&restored, customer).await, "Ada Lovelace", "the backup still holds the key");

    // Runbook step 3: migrate, with the register.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("migrate")
        .env("DATABASE_URL", &restored.url)
        .env("ORDO_ERASURE_REGISTER", &register)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(revealed_name(&restored, customer).await, serde_json::Value::Null);
    let events = restored.store().read_stream(customer, 1).await.unwrap();
    assert_eq!(events.last().map(|e| e.event_type.as_str()), Some("PersonalDataErased"));
    let report = ordo_event_store::verify::verify(&restored.pool, None, None).await.unwrap();
    assert!(report.ok, "{report:?}");
    // a second run changes nothing
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("migrate")
        .env("DATABASE_URL", &restored.url)
        .env("ORDO_ERASURE_REGISTER", &register)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("erasures re-applied from the register: 0"));
    assert_eq!(restored.store().read_stream(customer, 1).await.unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_export_holds_ciphertext_that_verify_export_accepts_and_decrypt_reveals() {
    let db = TestDb::new().await;
    assert!(ordo(&db, &["migrate"]).status.success());
    let email = format!("export-{}@example.com", uuid::Uuid::new_v4().simple());
    registered_customer(&db, &email).await;
    let plain = ordo(&db, &["export"]);
    assert!(plain.status.success());
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(!text.contains(&email) && text.contains("{\"sealed\":\"v2."), "{text}");
    let file = std::env::temp_dir().join(format!("ordo-export-{}.jsonl", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, &plain.stdout).unwrap();
    let checked = ordo(&db, &["verify-export", &file.to_string_lossy()]);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));
    let python = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/verify_export.py"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(python.status.success(), "{}", String::from_utf8_lossy(&python.stdout));
    let decrypted = ordo(&db, &["export", "--decrypt"]);
    assert!(String::from_utf8_lossy(&decrypted.stdout).contains(&email));
    let _ = std::fs::remove_file(&file);
}
