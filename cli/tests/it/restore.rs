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
    let out = ordo(&db, &["reset-publishing"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left: i64 =
        sqlx::query_scalar("SELECT (SELECT count(*) FROM checkpoints) + (SELECT count(*) FROM projector_offsets)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
    assert_eq!(db.store().load_checkpoint("relay").await.unwrap(), ordo_event_store::LogCursor::START);
}
