//! Two projector replicas writing the same streams at once, as after a consumer-group rebalance
//! while the old owner still drains the messages it had buffered.

use std::time::{Duration, Instant};

use ordo_projectors::testing::{diff_against_fold, Workload};
use ordo_projectors::{Incoming, Projector, Target};
use ordo_schemas::{StreamCategory, StreamRef};

use crate::db;

/// Waits until some backend of this database waits on a lock.
async fn someone_waits_on_a_lock(pool: &sqlx::PgPool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the second replica never waited for the first");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_applying_a_streams_first_event_at_once_apply_it_once_and_park_nothing() {
    let db = db().await;
    let store = db.store();
    let mut w = Workload::setup(&store, 1, 1).await;
    let order = w.order(&store, 0).await; // pending: its stream holds only OrderPlaced
    let stream = StreamRef::new(StreamCategory::Order, order);
    let first: Vec<Incoming> =
        store.read_stream(stream, 1).await.unwrap().iter().map(Incoming::from_recorded).collect();
    assert_eq!(first.len(), 1);
    let projector = Projector::new(db.pool.clone(), Target::all_live());

    // the old owner applies the event and has not committed yet
    let mut old_owner = db.pool.begin().await.unwrap();
    let stats = projector.batch_in(&mut old_owner, &first, Some("replica")).await.unwrap();
    assert_eq!(stats.applied, 2, "orders and sales");
    // the new owner gets the same event from the committed offset
    let new_owner = {
        let (projector, first) = (projector.clone(), first.clone());
        tokio::spawn(async move { projector.apply_batch(&first, Some("replica")).await })
    };
    someone_waits_on_a_lock(&db.pool).await;
    old_owner.commit().await.unwrap();
    let stats = new_owner.await.unwrap().unwrap();

    assert_eq!((stats.applied, stats.skipped, stats.poisoned), (0, 2, 0), "a redelivery is a skip: {stats:?}");
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_streams").fetch_one(&db.pool).await.unwrap();
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&db.pool).await.unwrap();
    assert_eq!((parked, dead), (0, 0));
    let progress: Vec<(String, i64)> =
        sqlx::query_as("SELECT projection, version FROM projection_progress WHERE stream_id = $1 ORDER BY 1")
            .bind(order)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(progress, [("orders".to_owned(), 1), ("sales".to_owned(), 1)]);
    let w = Workload { orders: vec![order], products: Default::default(), ..w };
    assert_eq!(diff_against_fold(&db.pool, &w).await, Vec::<String>::new());
}
