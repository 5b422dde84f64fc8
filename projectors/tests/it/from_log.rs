//! Projections fed from the Postgres log: the apply logic, rebuilds and their swap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_domain::Product;

use ordo_event_store::{EventStore, LogCursor, RecordedEvent};
use ordo_projectors::testing::{diff_against_fold, exec, snapshot, wait_caught_up, Workload};
use ordo_projectors::{follow::follow_log, rebuild, Incoming, Projection, Projector, Target};
use ordo_schemas::{AdjustStock, StockAdjustmentReason, StreamCategory, StreamRef};
use ordo_service::shutdown::Shutdown;

use crate::db;

/// Every event of the log. The commit-safe horizon is cluster-wide, so an open transaction of
/// another test's database can hold it back: read until the count matches.
async fn whole_log(store: &EventStore) -> Vec<RecordedEvent> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(store.pool()).await.unwrap();
    let mut all = Vec::new();
    let mut cursor = LogCursor::START;
    while (all.len() as i64) < total {
        let (events, next) = store.read_all(cursor, 500).await.unwrap();
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        all.extend(events);
        cursor = next;
    }
    all
}

async fn apply_whole_log(projector: &Projector, store: &EventStore) {
    for chunk in whole_log(store).await.chunks(100) {
        let incoming: Vec<Incoming> = chunk.iter().map(Incoming::from_recorded).collect();
        projector.apply_batch(&incoming, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_model_equals_the_fold_of_the_log_and_a_rebuild_reproduces_it_row_for_row() {
    let db = db().await;
    let store = db.store();
    let w = Workload::run(&store, 42).await;
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    apply_whole_log(&projector, &store).await;

    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT status FROM rm_orders ORDER BY 1").fetch_all(&db.pool).await.unwrap();
    assert_eq!(statuses, ["cancelled", "confirmed", "delivered", "paid", "pending", "rejected", "shipped"]);

    let before = snapshot(&db.pool).await;
    for p in Projection::ALL {
        let report = rebuild(&db.pool, p).await.unwrap();
        assert!(report.events > 0, "{report:?}");
    }
    assert_eq!(snapshot(&db.pool).await, before, "a rebuild from the log reproduces the live rows");
    let status = ordo_projectors::projection_status(&db.pool).await.unwrap();
    assert!(status.iter().all(|s| s.status == "ok" && s.rebuilt_at.is_some()), "{status:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_same_events_again_changes_nothing() {
    let db = db().await;
    let store = db.store();
    let w = Workload::run(&store, 14).await;
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    apply_whole_log(&projector, &store).await;
    let before = snapshot(&db.pool).await;

    let events = whole_log(&store).await;
    let incoming: Vec<Incoming> = events.iter().map(Incoming::from_recorded).collect();
    let stats = projector.apply_batch(&incoming, None).await.unwrap();
    assert_eq!(stats.applied, 0);
    assert!(stats.skipped > 0);
    assert_eq!(snapshot(&db.pool).await, before);
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_delivery_is_filled_from_the_log() {
    let db = db().await;
    let store = db.store();
    let w = Workload::run(&store, 7).await;
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    // deliver only the newest event of each stream: everything before it must come from the log
    let events = whole_log(&store).await;
    let mut newest = std::collections::HashMap::new();
    for e in &events {
        newest.insert(e.stream, e.clone());
    }
    let incoming: Vec<Incoming> = newest.values().map(Incoming::from_recorded).collect();
    projector.apply_batch(&incoming, None).await.unwrap();
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_live_projector_applies_new_writes_loses_no_event() {
    let db = db().await;
    let store = db.store();
    let w = Workload::run(&store, 21).await;
    let shutdown = Shutdown::new();
    let follower = tokio::spawn(follow_log(
        Projector::new(db.pool.clone(), Target::all_live()),
        "test-follower",
        50,
        Duration::from_millis(1),
        shutdown.clone(),
    ));
    // a steady stream of small writes to every product and new orders while rebuilding
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, writing, mut w) = (store.clone(), writing.clone(), w.clone());
        tokio::spawn(async move {
            let mut n = 100;
            while writing.load(Ordering::SeqCst) {
                for pid in w.all_products() {
                    let cmd = AdjustStock { delta: 1, reason: StockAdjustmentReason::Restock };
                    exec::<Product>(&store, StreamRef::new(StreamCategory::Product, pid), cmd.into()).await.unwrap();
                }
                w.order(&store, n).await;
                n += 1;
            }
            w
        })
    };
    for _ in 0..5 {
        for p in Projection::ALL {
            rebuild(&db.pool, p).await.unwrap();
        }
    }
    writing.store(false, Ordering::SeqCst);
    let w = writer.await.unwrap();
    wait_caught_up(&db.pool, Duration::from_secs(30)).await;
    shutdown.trigger();
    follower.await.unwrap().unwrap();
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
}

/// Parked streams and open poison dead letters per projection.
async fn parked_and_poison(pool: &sqlx::PgPool) -> (Vec<(String, uuid::Uuid)>, Vec<(String, uuid::Uuid, i64)>) {
    let parked =
        sqlx::query_as("SELECT projection, stream_id FROM parked_streams ORDER BY 1, 2").fetch_all(pool).await.unwrap();
    let poison = sqlx::query_as(
        "SELECT projection, stream_id, version FROM dead_letters WHERE resolved_at IS NULL AND kind = 'poison' \
         ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (parked, poison)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_rebuilding_every_projection_equals_the_live_ones_with_upcast_v1_events_and_a_poisoned_stream() {
    let db = db().await;
    let store = db.store();
    let w = crate::set_based::log_with_every_event_type(&store, 30).await;
    // an event no code knows, in the middle of an order's stream, followed by a valid one
    let poisoned = StreamRef::new(StreamCategory::Order, w.orders[3]);
    let version = store.stream_version(poisoned).await.unwrap();
    let unknown = ordo_event_store::NewEvent {
        event_type: "OrderTeleported".into(),
        schema_version: 1,
        data: serde_json::json!({"to": "the moon"}),
        metadata: ordo_schemas::EventMetadata {
            event_id: uuid::Uuid::new_v4(),
            correlation_id: uuid::Uuid::new_v4(),
            causation_id: None,
            actor: ordo_schemas::Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    };
    store.append(poisoned, ordo_event_store::ExpectedVersion::Exact(version), vec![unknown]).await.unwrap();
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    apply_whole_log(&projector, &store).await;
    let before = snapshot(&db.pool).await;
    let bookkeeping = parked_and_poison(&db.pool).await;
    let lag = |s: Vec<ordo_projectors::ProjectionStatus>| -> Vec<(String, String, i64)> {
        s.into_iter().map(|s| (s.name, s.status, s.lag_events)).collect()
    };
    let lag_before = lag(ordo_projectors::projection_status(&db.pool).await.unwrap());
    assert_eq!(bookkeeping.0.len(), 2, "the live projections parked the stream in orders and sales: {bookkeeping:?}");
    let v1: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE schema_version = 1 AND event_type = 'ProductListed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(v1, 1);

    let progress = ordo_event_store::progress::Progress::new();
    let reports = ordo_projectors::rebuild::rebuild_with(&db.pool, &Projection::ALL, &progress).await.unwrap();
    assert_eq!(reports.len(), 3);
    let relevant: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE category IN ('order', 'product')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((progress.done(), progress.total()), (relevant as u64, relevant as u64));
    assert_eq!(snapshot(&db.pool).await, before, "the one pass reproduces every live row");
    assert_eq!(parked_and_poison(&db.pool).await, bookkeeping, "and parks the poisoned stream as live did");
    let status = ordo_projectors::projection_status(&db.pool).await.unwrap();
    assert!(status.iter().all(|s| s.rebuilt_at.is_some()), "{status:#?}");
    assert_eq!(lag(status), lag_before);
}

/// Per-stream progress of every projection, and the table each row is stored in.
async fn stored_progress(pool: &sqlx::PgPool) -> Vec<(String, String, String, uuid::Uuid, i64, i64)> {
    sqlx::query_as(
        "SELECT tableoid::regclass::text, projection, category, stream_id, version, position \
         FROM projection_progress ORDER BY 2, 3, 4",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_attaches_its_progress_as_the_live_partition_and_live_batches_after_it_apply_each_event_once() {
    let db = db().await;
    let store = db.store();
    let w = Workload::run(&store, 12).await;
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    apply_whole_log(&projector, &store).await;
    let before = snapshot(&db.pool).await;
    let progress_before = stored_progress(&db.pool).await;
    assert!(progress_before.iter().any(|r| r.0 == "projection_progress_orders"), "live rows sit in their partition");
    let partition_oids = "SELECT array_agg(c.oid::bigint ORDER BY c.relname) FROM pg_inherits i \
                          JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'projection_progress'::regclass";
    let oids_before: Vec<i64> = sqlx::query_scalar(partition_oids).fetch_one(&db.pool).await.unwrap();

    let progress = ordo_event_store::progress::Progress::new();
    ordo_projectors::rebuild::rebuild_with(&db.pool, &Projection::ALL, &progress).await.unwrap();

    assert_eq!(stored_progress(&db.pool).await, progress_before, "the same progress, in the same partitions");
    let oids_after: Vec<i64> = sqlx::query_scalar(partition_oids).fetch_one(&db.pool).await.unwrap();
    assert_eq!(oids_after.len(), 4);
    let kept: Vec<bool> = oids_after.iter().zip(&oids_before).map(|(a, b)| a == b).collect();
    // catalog, orders, other, sales: every live partition is the rebuild's table, the other stays
    assert_eq!(kept, [false, false, true, false]);
    let names: Vec<String> =
        sqlx::query_scalar("SELECT indexname FROM pg_indexes WHERE tablename LIKE 'projection\\_progress%' ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        names,
        [
            "projection_progress_catalog_pkey",
            "projection_progress_orders_pkey",
            "projection_progress_other_pkey",
            "projection_progress_pkey",
            "projection_progress_sales_pkey"
        ]
    );
    let shadows: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_shadow'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(shadows, 0);

    // the whole log delivered again after the swap: every event is skipped by its stream's version
    let incoming: Vec<Incoming> = whole_log(&store).await.iter().map(Incoming::from_recorded).collect();
    let stats = projector.apply_batch(&incoming, None).await.unwrap();
    assert_eq!((stats.applied, stats.poisoned), (0, 0));
    assert_eq!(snapshot(&db.pool).await, before);
    // and a new event is applied once
    let product = w.all_products()[0];
    let stream = StreamRef::new(StreamCategory::Product, product);
    let version = store.stream_version(stream).await.unwrap();
    let cmd = AdjustStock { delta: 5, reason: StockAdjustmentReason::Restock };
    exec::<Product>(&store, stream, cmd.into()).await.unwrap();
    let new: Vec<Incoming> = whole_log(&store)
        .await
        .iter()
        .filter(|e| e.stream == stream && e.version > version)
        .map(Incoming::from_recorded)
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(projector.apply_batch(&new, None).await.unwrap().applied, 1);
    assert_eq!(projector.apply_batch(&new, None).await.unwrap().applied, 0);
    let stored: i64 =
        sqlx::query_scalar("SELECT version FROM projection_progress WHERE projection = 'catalog' AND stream_id = $1")
            .bind(product)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, version + 1);
}
