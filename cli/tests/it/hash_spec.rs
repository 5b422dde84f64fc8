//! `docs/verify_export.py`, which verifies an `ordo export` with nothing but Python's standard
//! library, agrees with Ordo's hashes on a real export (awkward strings and key orders
//! included) and names what was changed in a forged one.

use std::path::{Path, PathBuf};
use std::process::Command;

use ordo_event_store::testing::TestDb;
use ordo_event_store::{ExpectedVersion, NewEvent, StreamRef};
use ordo_schemas::{Actor, EventMetadata, Role, StreamCategory};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::ordo;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/verify_export.py")
}

/// Runs the script on `text`: (exit code, report).
fn python(text: &str) -> (Option<i32>, Value) {
    let file = std::env::temp_dir().join(format!("ordo-export-{}.jsonl", Uuid::new_v4()));
    std::fs::write(&file, text).unwrap();
    let out = Command::new("python3")
        .arg(script())
        .arg(&file)
        .output()
        .expect("python3 (Debian package python3; scripts/install-tools.sh)");
    let _ = std::fs::remove_file(&file);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

fn awkward(n: i64) -> NewEvent {
    NewEvent {
        event_type: "CustomerRegistered".into(),
        schema_version: 1,
        data: json!({
            // a subject, so name and email are sealed: the export carries ciphertext beside clear text
            "customer_id": Uuid::new_v4(),
            "name": format!("Zoë \"Z\" O'Brien\\{n}"),
            "email": "zoe@example.com",
            "notes": "tab\there, newline\nthere, bell\u{7}, del\u{7f}, line sep\u{2028}, emoji 😀, ñ, 漢字, </script>",
            "z_last": {"b": [3, -2, 0, null, true, false], "a": {"y": "", "x": 9_007_199_254_740_993_i64}},
            "A_upper": n,
        }),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: (n % 2 == 0).then(Uuid::new_v4),
            actor: Actor { id: Uuid::new_v4(), role: Role::Admin },
            traceparent: (n % 2 == 1).then(|| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
            tracestate: None,
        },
    }
}

#[tokio::test]
async fn the_python_verifier_accepts_a_real_export_and_names_a_forged_line() {
    let db = TestDb::new().await;
    let store = db.store();
    let a = StreamRef::new(StreamCategory::Customer, Uuid::new_v4());
    let b = StreamRef::new(StreamCategory::Customer, Uuid::new_v4());
    store.append(a, ExpectedVersion::NoStream, (1..=3).map(awkward).collect()).await.unwrap();
    store.append(b, ExpectedVersion::NoStream, (4..=5).map(awkward).collect()).await.unwrap();
    store.append(a, ExpectedVersion::Exact(3), vec![awkward(6)]).await.unwrap();
    let out = ordo(&db, &["export"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\\u0007") && text.contains('😀'), "the export carries the awkward characters");

    let (code, report) = python(&text);
    assert_eq!((code, &report["ok"], &report["checked"]), (Some(0), &json!(true), &json!(6)), "{report}");

    // A changed payload: that line, that version.
    let lines: Vec<&str> = text.lines().collect();
    let mut forged: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    forged[1]["data"]["email"] = json!("mallory@example.com");
    let forged_text = forged.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    let (code, report) = python(&forged_text);
    assert_eq!(code, Some(1));
    assert_eq!(
        report["broken"],
        json!([{"line": 2, "category": "customer", "stream_id": a.id, "version": 2,
        "problem": "hash_mismatch"}])
    );

    // An event replaced wholesale, with a hash recomputed to match its own content: the link
    // from its successor gives it away.
    let mut replaced: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let original = replaced[1].clone();
    let mut forged_event = original.clone();
    forged_event["data"]["email"] = json!("mallory@example.com");
    forged_event["hash"] = json!(rehash(&forged_event));
    replaced[1] = forged_event;
    let (code, report) = python(&replaced.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
    assert_eq!(code, Some(1));
    assert_eq!(report["broken"][0]["version"], 3);
    assert_eq!(report["broken"][0]["problem"], "prev_hash_mismatch");

    // The script and `ordo verify-export` agree on the untouched file.
    let file = std::env::temp_dir().join(format!("ordo-export-{}.jsonl", Uuid::new_v4()));
    std::fs::write(&file, &text).unwrap();
    let cli = ordo(&db, &["verify-export", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(cli.status.success());
}

/// The hash of an envelope with Ordo's own code (what a careful forger would compute).
fn rehash(envelope: &Value) -> String {
    let env: ordo_schemas::EventEnvelope = serde_json::from_value(envelope.clone()).unwrap();
    hex::encode(ordo_event_store::verify::envelope_hash(&env).unwrap())
}
