//! The relay's page pipeline against a real Postgres and a real nisshi broker, frozen to hold
//! acknowledgements back: the next pages are read and sent before the previous ones are
//! acknowledged, the checkpoint never passes an unacknowledged event, and a failure with pages
//! in flight publishes everything after the checkpoint again.

use std::collections::HashSet;
use std::time::Duration;

use ordo_event_store::relay::RelayConfig;
use ordo_event_store::testing::{Broker, TestDb};
use ordo_event_store::{EventStore, ExpectedVersion};
use uuid::Uuid;

use crate::relay::{
    append_concurrently, assert_matches_log, assert_stream_order, config, consume_until, incarnation, spawn_relay,
    wait_until,
};
use crate::{event, product};

async fn checkpoint(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = 'relay'").fetch_one(pool).await.unwrap()
}

async fn last_position(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(pool).await.unwrap()
}

/// Appends `n` events to a new product stream in one transaction, so the relay finds them all
/// at once and reads them in full pages. Returns their ids.
async fn append_at_once(store: &EventStore, n: i64) -> HashSet<Uuid> {
    let events: Vec<_> = (1..=n).map(event).collect();
    let ids = events.iter().map(|e| e.metadata.event_id).collect();
    store.append(product(), ExpectedVersion::NoStream, events).await.expect("append");
    ids
}

fn pipelined(broker: &Broker, delivery_timeout: Duration) -> RelayConfig {
    RelayConfig { pipeline_depth: 4, delivery_timeout, ..config(broker, 10) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_sends_the_next_pages_while_the_previous_ones_wait_for_acknowledgement_and_the_checkpoint_waits_for_them(
) {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), pipelined(&broker, Duration::from_secs(60)));
    let mut ids = append_concurrently(&db.store(), 10, 2, 1).await;
    wait_until("the first events are published", Duration::from_secs(60), || relay.status.published() >= 10).await;
    let saved = checkpoint(&db.pool).await;
    assert_eq!(saved, last_position(&db.pool).await, "an idle relay saved its checkpoint");

    broker.pause().await;
    ids.extend(append_at_once(&db.store(), 40).await);
    wait_until("four pages are sent while the broker acknowledges none", Duration::from_secs(20), || {
        relay.status.enqueued() >= 50
    })
    .await;
    assert_eq!(relay.status.published(), 10, "nothing is acknowledged while the broker is frozen");
    assert_eq!(checkpoint(&db.pool).await, saved, "the checkpoint does not pass unacknowledged events");
    broker.resume().await;

    wait_until("the pages are acknowledged", Duration::from_secs(60), || relay.status.published() >= 50).await;
    assert_eq!(checkpoint(&db.pool).await, last_position(&db.pool).await, "the checkpoint follows");
    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;
    assert_stream_order(&received);
    assert_matches_log(&db.store(), &received).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_with_pages_in_flight_publishes_everything_after_the_checkpoint_again_without_gaps() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let relay = spawn_relay(db.store(), pipelined(&broker, Duration::from_secs(2)));
    let mut ids = append_concurrently(&db.store(), 10, 2, 1).await;
    wait_until("the first events are published", Duration::from_secs(60), || relay.status.published() >= 10).await;
    let saved = checkpoint(&db.pool).await;

    broker.pause().await;
    ids.extend(append_at_once(&db.store(), 40).await);
    wait_until("four pages are in flight", Duration::from_secs(20), || relay.status.enqueued() >= 50).await;
    // Longer than the delivery timeout: every page in flight fails.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(relay.status.published(), 10, "failed pages are not counted as published");
    assert_eq!(checkpoint(&db.pool).await, saved, "failed pages do not move the checkpoint");
    broker.resume().await;

    wait_until("the relay caught up", Duration::from_secs(90), || relay.status.published() >= 50).await;
    let sent = relay.status.enqueued();
    assert!(sent >= 90, "all 40 events after the checkpoint were sent again, {sent} sent in all");
    assert_eq!(checkpoint(&db.pool).await, last_position(&db.pool).await, "the checkpoint reached the end");
    ids.extend(append_concurrently(&db.store(), 30, 6, 2).await);
    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;
    assert_stream_order(&received);
    assert_matches_log(&db.store(), &received).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_sent_together_into_one_partition_are_not_taken_for_a_broker_that_lost_data() {
    let db = TestDb::new().await;
    let broker = Broker::start().await;
    let cfg = RelayConfig {
        broker_check_interval: Duration::from_millis(100),
        ..pipelined(&broker, Duration::from_secs(10))
    };
    let relay = spawn_relay(db.store(), cfg);
    // One stream, so every page lands in the same partition, where the producer batches
    // messages of several pages together.
    let mut ids = HashSet::new();
    for _ in 0..5 {
        ids.extend(append_at_once(&db.store(), 200).await);
    }
    wait_until("the log is published", Duration::from_secs(60), || relay.status.published() >= 1_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // broker checks while idle
    assert_eq!(incarnation(&db.pool).await, 1, "a healthy broker is never taken for one that lost data");
    assert_eq!(relay.status.published(), 1_000, "nothing was published twice");
    let received = consume_until(&broker.bootstrap(), &ids, Duration::from_secs(60)).await;
    assert_stream_order(&received);
    relay.stop().await;
}
