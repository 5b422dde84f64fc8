//! Set-based batches: many events of one row folded in memory and written with one statement per
//! table must give the rows that applying one event at a time gives, and the fold of the log.

use std::time::Duration;

use ordo_domain::{Order, Product};
use ordo_event_store::{EventStore, ExpectedVersion, LogCursor, NewEvent, RecordedEvent};
use ordo_projectors::testing::{diff_against_fold, exec, snapshot, Workload};
use ordo_projectors::{retry_parked, Incoming, Projector, Target};
use ordo_schemas::{
    Actor, AdjustStock, ConfirmOrder, EventMetadata, ReserveStock, StockAdjustmentReason, StreamCategory, StreamRef,
};
use serde_json::json;
use uuid::Uuid;

use crate::db;

async fn whole_log(store: &EventStore) -> Vec<RecordedEvent> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(store.pool()).await.unwrap();
    let mut all = Vec::new();
    let mut cursor = LogCursor::START;
    while (all.len() as i64) < total {
        let (events, next) = store.read_all(cursor, 1000).await.unwrap();
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        all.extend(events);
        cursor = next;
    }
    all
}

/// The workload with every event type, plus a product listed with a v1 `ProductListed` (as
/// stored before the upcast existed) that then takes reservations and a restock.
pub(crate) async fn log_with_every_event_type(store: &EventStore, orders: usize) -> Workload {
    let mut w = Workload::run(store, orders).await;
    let merchant = w.merchants[0];
    let old = Uuid::new_v4();
    let listed_v1 = NewEvent {
        event_type: "ProductListed".into(),
        schema_version: 1,
        data: json!({
            "product_id": old, "merchant_id": merchant, "sku": "OLD-1", "name": "listed long ago",
            "price_minor": 1299, "currency": "EUR", "initial_stock": 40
        }),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    };
    let stream = StreamRef::new(StreamCategory::Product, old);
    store.append(stream, ExpectedVersion::NoStream, vec![listed_v1]).await.unwrap();
    for n in 0..3 {
        exec::<Product>(store, stream, ReserveStock { order_id: Uuid::new_v4(), quantity: 2 + n }.into())
            .await
            .unwrap();
    }
    exec::<Product>(store, stream, AdjustStock { delta: 7, reason: StockAdjustmentReason::Restock }.into())
        .await
        .unwrap();
    w.products.get_mut(&merchant).unwrap().push(old);
    w
}

async fn apply_in_batches(projector: &Projector, log: &[RecordedEvent], size: usize) {
    for chunk in log.chunks(size) {
        let incoming: Vec<Incoming> = chunk.iter().map(Incoming::from_recorded).collect();
        projector.apply_batch(&incoming, None).await.unwrap();
    }
}

async fn clear_read_models(pool: &sqlx::PgPool) {
    sqlx::query(
        "TRUNCATE rm_orders, rm_products, rm_sales_orders, rm_merchant_daily_sales, projection_progress, \
         projection_state",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_log_in_one_batch_gives_the_rows_of_one_event_per_batch_and_the_fold_upcasts_included() {
    let db = db().await;
    let store = db.store();
    let w = log_with_every_event_type(&store, 21).await;
    let log = whole_log(&store).await;
    let v1: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE schema_version = 1 AND event_type = 'ProductListed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(v1, 1);
    let projector = Projector::new(db.pool.clone(), Target::all_live());

    apply_in_batches(&projector, &log, 1).await;
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
    let one_by_one = snapshot(&db.pool).await;

    clear_read_models(&db.pool).await;
    let stats =
        projector.apply_batch(&log.iter().map(Incoming::from_recorded).collect::<Vec<_>>(), None).await.unwrap();
    assert_eq!((stats.skipped, stats.poisoned, stats.parked), (0, 0, 0), "{stats:?}");
    assert_eq!(snapshot(&db.pool).await, one_by_one, "one batch folds to the same rows as one event per batch");
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
    let old = w.products[&w.merchants[0]].last().unwrap();
    let (on_hand, reserved, version): (i64, i64, i64) =
        sqlx::query_as("SELECT on_hand, reserved, version FROM rm_products WHERE product_id = $1")
            .bind(old)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((on_hand, reserved, version), (47, 9, 5), "the v1 listing was upcast and folded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_redelivered_windows_of_the_log_change_nothing_after_the_first_delivery() {
    let db = db().await;
    let store = db.store();
    let w = log_with_every_event_type(&store, 14).await;
    let log = whole_log(&store).await;
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    // each batch delivers the last 30 events again and 37 new ones
    let mut start = 0;
    while start < log.len() {
        let end = (start + 37).min(log.len());
        let window: Vec<Incoming> = log[start.saturating_sub(30)..end].iter().map(Incoming::from_recorded).collect();
        projector.apply_batch(&window, None).await.unwrap();
        start = end;
    }
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
    let before = snapshot(&db.pool).await;
    let again: Vec<Incoming> = log.iter().rev().map(Incoming::from_recorded).collect();
    let stats = projector.apply_batch(&again, None).await.unwrap();
    assert_eq!(stats.applied, 0);
    assert_eq!(snapshot(&db.pool).await, before);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&db.pool).await.unwrap();
    assert_eq!(dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_not_at_its_streams_version_parks_that_stream_in_that_projection_only_and_a_retry_applies_it() {
    let db = db().await;
    let store = db.store();
    let mut w = Workload::setup(&store, 2, 1).await;
    for n in 0..6 {
        w.order(&store, n * 7).await; // pending orders
    }
    let projector = Projector::new(db.pool.clone(), Target::all_live());
    apply_in_batches(&projector, &whole_log(&store).await, 1000).await;
    let seen = whole_log(&store).await.len();

    // the orders row of one order drifts from its stream (as a hand edit would do)
    let victim = w.orders[2];
    sqlx::query("UPDATE rm_orders SET version = 7 WHERE order_id = $1").bind(victim).execute(&db.pool).await.unwrap();
    for id in w.orders.clone() {
        exec::<Order>(&store, StreamRef::new(StreamCategory::Order, id), ConfirmOrder {}.into()).await.unwrap();
    }
    // and an undecodable message for another order sits in the middle of the batch
    let garbled = w.orders[4];
    let log = whole_log(&store).await;
    let mut batch: Vec<Incoming> = log[seen..].iter().map(Incoming::from_recorded).collect();
    let junk =
        Incoming::from_kafka("ordo.orders", 0, 1, Some(garbled.to_string().as_bytes()), b"{\"not\": \"an envelope\"}");
    batch.insert(2, junk);
    let stats = projector.apply_batch(&batch, None).await.unwrap();
    // victim: poison in orders only; garbled: poison in orders and sales, its confirmation held
    assert_eq!((stats.poisoned, stats.parked), (3, 2), "{stats:?}");

    let parked: Vec<(String, Uuid)> = sqlx::query_as("SELECT projection, stream_id FROM parked_streams ORDER BY 1, 2")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut expected =
        vec![("orders".to_owned(), victim), ("orders".to_owned(), garbled), ("sales".to_owned(), garbled)];
    expected.sort();
    assert_eq!(parked, expected);
    let versions: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT order_id, version FROM rm_sales_orders WHERE order_id = ANY($1)")
            .bind([victim, garbled])
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(versions.contains(&(victim, 2)), "sales applied the victim's confirmation: {versions:?}");
    assert!(versions.contains(&(garbled, 1)), "the garbled stream is held in sales: {versions:?}");
    let others =
        Workload { orders: w.orders.iter().copied().filter(|o| *o != victim && *o != garbled).collect(), ..w.clone() };
    assert_eq!(diff_against_fold(&db.pool, &others).await, Vec::<String>::new());

    // once the row is put right, a retry applies the parked streams from the log
    sqlx::query("UPDATE rm_orders SET version = 1 WHERE order_id = $1").bind(victim).execute(&db.pool).await.unwrap();
    let outcomes = retry_parked(&db.pool, None, None).await.unwrap();
    assert!(outcomes.iter().all(|o| o.unparked), "{outcomes:?}");
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
}
