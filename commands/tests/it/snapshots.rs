//! Snapshots of long streams: a cold load starts from the latest snapshot the log agrees with.

use ordo_commands::CommandService;
use ordo_domain::Product;
use ordo_schemas::{StreamCategory, StreamRef};

use crate::{adjust, World};

async fn snapshot_version(world: &World, stream: StreamRef) -> Option<i64> {
    sqlx::query_scalar("SELECT version FROM aggregate_snapshots WHERE category = $1 AND stream_id = $2")
        .bind(stream.category.as_str())
        .bind(stream.id)
        .fetch_optional(&world.db.pool)
        .await
        .unwrap()
}

async fn wait_for_snapshot(world: &World, stream: StreamRef, version: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while snapshot_version(world, stream).await != Some(version) {
        assert!(tokio::time::Instant::now() < deadline, "no snapshot at version {version}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_long_stream_leaves_a_snapshot_and_a_cold_load_from_it_equals_the_whole_fold() {
    let world = World::start().await;
    let product = world.product(10).await;
    let stream = StreamRef::new(StreamCategory::Product, product);
    let ctx = world.as_merchant();
    for _ in 0..520 {
        world.service.adjust_stock(&ctx, product, adjust(1)).await.unwrap();
    }
    wait_for_snapshot(&world, stream, 500).await;

    let cold = CommandService::new(world.db.store()).load::<Product>(stream).await.unwrap();
    assert_eq!(cold.version, 521);
    assert_eq!(cold.state.state().unwrap().on_hand, 530);
    assert_eq!(cold, world.service.load::<Product>(stream).await.unwrap());
}

#[tokio::test]
async fn a_snapshot_the_log_disagrees_with_is_ignored() {
    let world = World::start().await;
    let product = world.product(10).await;
    let stream = StreamRef::new(StreamCategory::Product, product);
    let ctx = world.as_merchant();
    for _ in 0..500 {
        world.service.adjust_stock(&ctx, product, adjust(1)).await.unwrap();
    }
    wait_for_snapshot(&world, stream, 500).await;
    // A snapshot from another history (as after restoring an older log): wrong state, wrong head.
    sqlx::query(
        "UPDATE aggregate_snapshots SET state = jsonb_set(state, '{on_hand}', '999999'), head_hash = '\\x00' \
         WHERE stream_id = $1",
    )
    .bind(product)
    .execute(&world.db.pool)
    .await
    .unwrap();

    let cold = CommandService::new(world.db.store()).load::<Product>(stream).await.unwrap();
    assert_eq!(cold.version, 501);
    assert_eq!(cold.state.state().unwrap().on_hand, 510, "folded from the start, not from the stale snapshot");
}
