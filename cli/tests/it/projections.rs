//! `ordo migrate`, `rebuild`, `retry-parked` and `replay` against read models built by the
//! real projector from a scripted workload.

use std::collections::BTreeMap;
use std::time::Duration;

use ordo_event_store::testing::TestDb;
use ordo_event_store::{EventStore, ExpectedVersion, LogCursor};
use ordo_projectors::testing::{snapshot, Workload};
use ordo_projectors::{Incoming, Projector, Target};
use ordo_schemas::StreamCategory;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{event, ordo};

pub(crate) async fn db() -> TestDb {
    let db = TestDb::new().await;
    ordo_projectors::migrate(&db.pool).await.unwrap();
    db
}

/// Applies every event of the log to the live projections, as the consumer would. The
/// commit-safe horizon is cluster-wide (another test's open transaction can hold it back), so
/// this reads until it has seen as many events as the table holds.
pub(crate) async fn project_whole_log(db: &TestDb) {
    let store = db.store();
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.pool).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut cursor, mut seen) = (LogCursor::START, 0i64);
    while seen < total {
        let (page, next) = store.read_all(cursor, 200).await.unwrap();
        if page.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the log horizon did not reach {total} events");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        seen += page.len() as i64;
        cursor = next;
        let incoming: Vec<Incoming> = page.iter().map(Incoming::from_recorded).collect();
        projector.apply_batch(&incoming, None).await.unwrap();
    }
}

fn json_out(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: stdout {} stderr {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// The table reports of a `replay --json` answer, by table name.
fn tables(reports: &Value) -> BTreeMap<String, Value> {
    reports
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["tables"].as_array().unwrap().iter())
        .map(|t| (t["table"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

async fn replay_leftovers(db: &TestDb) -> (i64, i64) {
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_replay'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let bookkeeping: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM projection_progress WHERE projection LIKE '%#replay') \
              + (SELECT count(*) FROM projection_state WHERE projection LIKE '%#replay')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (tables, bookkeeping)
}

#[tokio::test]
async fn replay_after_a_normal_workload_reports_no_drift_and_leaves_the_live_tables_alone() {
    let db = db().await;
    Workload::run(&db.store(), 28).await;
    project_whole_log(&db).await;
    let before = snapshot(&db.pool).await;

    let out = ordo(&db, &["replay", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let reports = json_out(&out);
    let names: Vec<&str> = reports.as_array().unwrap().iter().map(|r| r["projection"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "catalog", "sales"]);
    for r in reports.as_array().unwrap() {
        assert_eq!(r["drift"], false, "{r:#}");
        assert_eq!(r["complete"], true);
        assert!(r["events"].as_u64().unwrap() > 0);
    }
    let tables = tables(&reports);
    assert_eq!(tables.len(), 4);
    for t in tables.values() {
        assert_eq!(t["counts"], json!({"missing": 0, "extra": 0, "different": 0, "in_flight": 0}), "{t:#}");
    }
    assert_eq!(snapshot(&db.pool).await, before, "the replay wrote nothing into the live tables");
    assert_eq!(replay_leftovers(&db).await, (0, 0), "replay tables and bookkeeping are dropped");

    let kept = ordo(&db, &["replay", "--projection", "catalog", "--keep"]);
    assert_eq!(kept.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&kept.stdout).contains("catalog: replayed"));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_products_replay").fetch_one(&db.pool).await.unwrap();
    assert_eq!(rows, 8, "--keep leaves the replayed catalog for inspection");
}

#[tokio::test]
async fn replay_names_exactly_the_corrupted_rows_and_a_rebuild_repairs_them() {
    let db = db().await;
    let w = Workload::run(&db.store(), 35).await;
    project_whole_log(&db).await;

    let paid: Uuid =
        sqlx::query_scalar("SELECT order_id FROM rm_orders WHERE status = 'paid' ORDER BY order_id LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE rm_orders SET status = 'cancelled' WHERE order_id = $1")
        .bind(paid)
        .execute(&db.pool)
        .await
        .unwrap();
    let deleted = w.all_products()[1];
    sqlx::query("DELETE FROM rm_products WHERE product_id = $1").bind(deleted).execute(&db.pool).await.unwrap();
    let bogus = Uuid::new_v4();
    sqlx::query("INSERT INTO rm_sales_orders (order_id, merchant_id, paid, version) VALUES ($1, $2, true, 4)")
        .bind(bogus)
        .bind(w.merchants[0])
        .execute(&db.pool)
        .await
        .unwrap();

    let out = ordo(&db, &["replay", "--json"]);
    assert_eq!(out.status.code(), Some(1), "drift exits 1");
    let reports = json_out(&out);
    let drifted: Vec<(&str, bool)> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["projection"].as_str().unwrap(), r["drift"].as_bool().unwrap()))
        .collect();
    assert_eq!(drifted, [("orders", true), ("catalog", true), ("sales", true)]);
    let t = tables(&reports);
    let counts = |table: &str| t[table]["counts"].clone();
    assert_eq!(counts("rm_orders"), json!({"missing": 0, "extra": 0, "different": 1, "in_flight": 0}));
    assert_eq!(
        t["rm_orders"]["different"],
        json!([{"key": {"order_id": paid}, "columns": {"status": {"live": "cancelled", "replay": "paid"}}}])
    );
    assert_eq!(counts("rm_products"), json!({"missing": 1, "extra": 0, "different": 0, "in_flight": 0}));
    assert_eq!(t["rm_products"]["missing"][0]["key"], json!({"product_id": deleted}));
    assert_eq!(t["rm_products"]["missing"][0]["row"]["product_id"], json!(deleted));
    assert_eq!(counts("rm_sales_orders"), json!({"missing": 0, "extra": 1, "different": 0, "in_flight": 0}));
    assert_eq!(t["rm_sales_orders"]["extra"][0]["key"], json!({"order_id": bogus}));
    assert_eq!(t["rm_sales_orders"]["key_columns"], json!(["order_id"]));
    assert_eq!(counts("rm_merchant_daily_sales"), json!({"missing": 0, "extra": 0, "different": 0, "in_flight": 0}));
    assert_eq!(t["rm_merchant_daily_sales"]["key_columns"], json!(["merchant_id", "day", "currency"]));

    let text = ordo(&db, &["replay", "--projection", "orders"]);
    assert_eq!(text.status.code(), Some(1), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("orders: replayed") && text.contains("DRIFT"), "{text}");
    assert!(text.contains(&paid.to_string()) && text.contains("status: live \"cancelled\" replay \"paid\""), "{text}");

    let rebuilt = ordo(&db, &["rebuild"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    let text = String::from_utf8(rebuilt.stdout).unwrap();
    for p in ["orders", "catalog", "sales"] {
        assert!(text.contains(&format!("{p}: rebuilt from ")), "{text}");
    }
    let clean = ordo(&db, &["replay"]);
    assert_eq!(clean.status.code(), Some(0), "{}", String::from_utf8_lossy(&clean.stdout));

    let json = ordo(&db, &["rebuild", "--projection", "sales", "--json"]);
    let reports = json_out(&json);
    assert_eq!(reports.as_array().unwrap().len(), 1);
    assert_eq!(reports[0]["projection"], "sales");
    assert!(reports[0]["events"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_live_projection_that_is_merely_behind_or_a_replay_that_stops_early_is_not_drift() {
    let db = db().await;
    let store = db.store();
    let mut w = Workload::run(&store, 14).await;
    project_whole_log(&db).await;
    let middle: i64 = sqlx::query_scalar("SELECT max(position) / 2 FROM events").fetch_one(&db.pool).await.unwrap();

    // a replay of the first half: the live rows of every stream touched later are ahead of it
    let out = ordo(&db, &["replay", "--to-position", &middle.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let reports = json_out(&out);
    assert!(reports.as_array().unwrap().iter().all(|r| r["to_position"] == middle));
    let t = tables(&reports);
    assert!(t["rm_orders"]["counts"]["in_flight"].as_u64().unwrap() > 0, "{:#}", t["rm_orders"]);
    assert!(t["rm_products"]["counts"]["in_flight"].as_u64().unwrap() > 0);

    // new orders the live projection has not applied yet
    for n in 100..107 {
        w.order(&store, n).await;
    }
    let out = ordo(&db, &["replay", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let t = tables(&json_out(&out));
    assert!(t["rm_orders"]["counts"]["in_flight"].as_u64().unwrap() >= 7, "{:#}", t["rm_orders"]);
    assert_eq!(t["rm_orders"]["counts"]["missing"], 0);
}

#[tokio::test]
async fn migrate_twice_is_harmless_and_creates_every_crates_tables() {
    let db = TestDb::new().await;
    for _ in 0..2 {
        let out = ordo(&db, &["migrate"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for table in ["events", "unique_claims", "aggregate_snapshots", "rm_orders", "projection_progress", "saga_offsets"]
    {
        let found: Option<String> =
            sqlx::query_scalar("SELECT to_regclass($1)::text").bind(table).fetch_one(&db.pool).await.unwrap();
        assert_eq!(found.as_deref(), Some(table));
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&db.pool).await.unwrap();
    let known = ordo_event_store::MIGRATOR.iter().count()
        + ordo_commands::MIGRATOR.iter().count()
        + ordo_projectors::MIGRATOR.iter().count()
        + ordo_saga::MIGRATOR.iter().count();
    assert_eq!(applied, known as i64, "each migration recorded once");
}

#[tokio::test]
async fn retry_parked_exits_zero_without_parked_streams_and_one_while_a_stream_stays_poisoned() {
    let db = db().await;
    let out = ordo(&db, &["retry-parked"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "no parked streams");

    // an event the catalog cannot decode parks its stream
    let stream = ordo_schemas::StreamRef::new(StreamCategory::Product, Uuid::new_v4());
    EventStore::new(db.pool.clone()).append(stream, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    project_whole_log(&db).await;
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_streams").fetch_one(&db.pool).await.unwrap();
    assert_eq!(parked, 1);

    let out = ordo(&db, &["retry-parked", "--projection", "catalog"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("catalog {stream}: still parked")), "{text}");
    let id = stream.id.to_string();
    let out = ordo(&db, &["retry-parked", "--category", "product", "--id", &id, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let outcomes = json_out(&out);
    assert_eq!(outcomes[0]["unparked"], false);
    assert_eq!(outcomes[0]["stream_id"], id);
    let out = ordo(&db, &["retry-parked", "--projection", "orders"]);
    assert_eq!(out.status.code(), Some(0), "no parked order streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_while_orders_keep_coming_and_the_live_projector_follows_reports_no_drift() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let db = db().await;
    let store = db.store();
    let w = Workload::run(&store, 14).await;
    let shutdown = ordo_service::shutdown::Shutdown::new();
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    let follower = tokio::spawn(ordo_projectors::follow::follow_log(
        projector,
        "test-follower",
        20,
        Duration::from_millis(1),
        shutdown.clone(),
    ));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, writing, mut w) = (store.clone(), writing.clone(), w.clone());
        tokio::spawn(async move {
            let mut n = 100;
            while writing.load(Ordering::SeqCst) {
                w.order(&store, n).await;
                n += 1;
            }
            n - 100
        })
    };
    let mut in_flight = 0;
    for _ in 0..3 {
        let out = {
            let (url, args) = (db.url.clone(), ["replay", "--json"]);
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
                    .args(args)
                    .env("ORDO_DATABASE_URL", url)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        };
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
        let t = tables(&json_out(&out));
        in_flight += t.values().map(|t| t["counts"]["in_flight"].as_u64().unwrap()).sum::<u64>();
    }
    writing.store(false, Ordering::SeqCst);
    let placed = writer.await.unwrap();
    assert!(placed > 0, "orders were placed during the replays");
    shutdown.trigger();
    follower.await.unwrap().unwrap();
    println!("orders placed during the replays: {placed}, rows in flight seen: {in_flight}");
}

#[tokio::test]
async fn replay_shows_a_drifted_personal_field_in_clear_until_the_erasure_and_as_null_after() {
    use ordo_event_store::{NewEvent, StreamRef};
    use ordo_schemas::{Actor, EventMetadata, Role};
    let db = db().await;
    let (customer, order) = (Uuid::new_v4(), Uuid::new_v4());
    let line1 = format!("{} Replay Road", Uuid::new_v4().simple());
    let placed = NewEvent {
        event_type: "OrderPlaced".into(),
        schema_version: 1,
        data: json!({"order_id": order, "customer_id": customer, "merchant_id": Uuid::new_v4(),
            "lines": [{"product_id": Uuid::new_v4(), "sku": "SKU-1", "name": "thing", "quantity": 1,
                "unit_price": {"amount_minor": 500, "currency": "EUR"},
                "line_total": {"amount_minor": 500, "currency": "EUR"}}],
            "total": {"amount_minor": 500, "currency": "EUR"},
            "shipping_address": {"line1": line1, "city": "Berlin", "postal_code": "10115", "country": "DE"}}),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor { id: customer, role: Role::Customer },
            traceparent: None,
            tracestate: None,
        },
    };
    let stream = StreamRef::new(StreamCategory::Order, order);
    db.store().append(stream, ExpectedVersion::NoStream, vec![placed]).await.unwrap();
    project_whole_log(&db).await;
    // the live row lost its address: the replayed one (sealed in the read model) differs
    sqlx::query("UPDATE rm_orders SET shipping_address = 'null'::jsonb WHERE order_id = $1")
        .bind(order)
        .execute(&db.pool)
        .await
        .unwrap();

    let out = ordo(&db, &["replay", "--projection", "orders", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let t = tables(&json_out(&out));
    let column = &t["rm_orders"]["different"][0]["columns"]["shipping_address"];
    assert_eq!(column["live"], Value::Null, "{column}");
    assert_eq!(column["replay"]["line1"], json!(line1), "revealed while the key exists: {column}");
    let text = ordo(&db, &["replay", "--projection", "orders"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&line1), "{}", String::from_utf8_lossy(&text.stdout));

    db.store().personal().erase(customer).await.unwrap();

    for args in [&["replay", "--projection", "orders", "--json"][..], &["replay", "--projection", "orders"]] {
        let out = ordo(&db, args);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!printed.contains(&line1), "{printed}");
        assert!(!printed.contains("\"sealed\""), "erased, not shown sealed: {printed}");
    }
    let t = tables(&json_out(&ordo(&db, &["replay", "--projection", "orders", "--json"])));
    assert_eq!(t["rm_orders"]["different"][0]["columns"]["shipping_address"]["replay"], Value::Null);
}
