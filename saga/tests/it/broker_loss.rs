//! The broker comes back empty (ADR 0021): a saga process started afterwards must not be misled
//! by a late commit of the old log.

use std::time::Duration;

use ordo_domain::OrderStatus;
use ordo_event_store::kafka;
use ordo_event_store::testing::{duplicate_every_message, read_all, until};
use ordo_schemas::{StreamCategory, StreamRef};
use uuid::Uuid;

use crate::World;

/// The saga's stored offsets of `group` in `ordo.orders`: (partition, next offset, incarnation).
async fn stored(world: &World, group: &str) -> Vec<(i32, i64, i64)> {
    sqlx::query_as(
        "SELECT partition, next_offset, incarnation FROM saga_offsets WHERE group_id = $1 AND topic = $2 ORDER BY 1",
    )
    .bind(group)
    .bind(StreamCategory::Order.topic())
    .fetch_all(&world.db.pool)
    .await
    .unwrap()
}

/// Waits until the relay published every event of the log in incarnation `incarnation` or later.
async fn relay_caught_up(world: &World, incarnation: i64) {
    let last: i64 = sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(&world.db.pool).await.unwrap();
    until("the relay to publish the whole log", Duration::from_secs(90), move || async move {
        let (i, at): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT max(incarnation) FROM relay_incarnations), \
                    (SELECT position FROM checkpoints WHERE name = 'relay')",
        )
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
        i >= Some(incarnation) && at >= Some(last)
    })
    .await;
}

/// How many of the order's events are the saga's decision (confirmed or rejected).
async fn decisions(world: &World, order: Uuid) -> usize {
    let events = world.db.store().read_stream(StreamRef::new(StreamCategory::Order, order), 1).await.unwrap();
    events.iter().filter(|e| e.event_type == "OrderConfirmed" || e.event_type == "OrderRejected").count()
}

/// A saga process that starts after the broker came back empty, whose group holds a commit of
/// the old log on the new broker (a late commit: it counts messages of a partition that no longer
/// exists), must not start reading the re-created partition there. The old log held duplicates,
/// so the stale offsets lie inside the republished partitions, past orders placed after the loss
/// that the saga never saw: read from the stale offset, those orders stay pending for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_started_after_the_broker_came_back_empty_decides_every_order_despite_a_stale_commit_of_the_old_log() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let mut world = World::start().await;
    let orders_topic = StreamCategory::Order.topic();
    let products = [world.product(1_000).await, world.product(1_000).await];
    let (saga, _) = world.saga("saga");
    let mut orders = Vec::new();
    for i in 0..12u32 {
        orders.push(world.place(&[(products[0], 1), (products[1], 1 + i % 2)]).await);
    }
    for order in &orders {
        world.decided(*order, Duration::from_secs(60)).await;
    }
    relay_caught_up(&world, 1).await;
    // The old log holds every message twice; the saga reads the copies (changing nothing) and
    // its watermarks reach the doubled ends.
    let ends = duplicate_every_message(&world.broker.bootstrap(), orders_topic).await;
    let expected: Vec<(i32, i64, i64)> = ends.iter().filter(|(_, e)| *e > 0).map(|(p, e)| (*p, *e, 1)).collect();
    let (w, want) = (&world, &expected);
    until("the saga to read the duplicates", Duration::from_secs(60), move || async move {
        stored(w, "saga").await == *want
    })
    .await;
    // The saga process ends; what it committed last is the old log's offsets.
    saga.stop().await;
    let stale = stored(&world, "saga").await;

    // The broker loses everything; orders go on; the relay gives the broker the whole log again
    // under a new incarnation, without the duplicates.
    world.broker.restart().await;
    world.broker.create_topics(&kafka::topics(), 3).await;
    for i in 0..36u32 {
        orders.push(world.place(&[(products[0], 1), (products[1], 1 + i % 2)]).await);
    }
    relay_caught_up(&world, 2).await;
    let (_, new_ends) = read_all(&world.broker.bootstrap(), orders_topic).await;
    let inside = stale.iter().filter(|(p, c, _)| *c > 0 && new_ends.iter().any(|e| e.0 == *p && e.1 >= *c));
    assert!(inside.count() > 0, "no stale offset {stale:?} lies inside a re-created partition {new_ends:?}");

    // A late commit of the old log reaches the new broker.
    let bootstrap = world.broker.bootstrap();
    let commit = stale.clone();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "saga").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for (partition, offset, _) in &commit {
            tpl.add_partition_offset(orders_topic, *partition, Offset::Offset(*offset)).unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).expect("commit the old log's offsets");
    })
    .await
    .unwrap();

    // A new saga process starts: every order is decided.
    let (saga, status) = world.saga("saga");
    for order in &orders {
        world.decided(*order, Duration::from_secs(90)).await;
    }
    // Its decisions are published too; it reads the partitions to their ends (the old orders
    // again, from the beginning), and what it read again changed nothing.
    relay_caught_up(&world, 2).await;
    let (_, final_ends) = read_all(&world.broker.bootstrap(), orders_topic).await;
    let (w, ends) = (&world, &final_ends);
    until("the saga to read every partition to its end", Duration::from_secs(60), move || async move {
        let now = stored(w, "saga").await;
        ends.iter().filter(|(_, e)| *e > 0).all(|(p, e)| now.iter().any(|s| s.0 == *p && s.1 >= *e && s.2 == 2))
    })
    .await;
    let messages: i64 = final_ends.iter().map(|(_, e)| e).sum();
    assert!(
        status.handled() >= messages as u64,
        "the new process handled {} messages, the re-created partitions hold {messages}",
        status.handled()
    );
    saga.stop().await;

    let mut confirmed = 0;
    for order in &orders {
        assert_eq!(decisions(&world, *order).await, 1, "order {order} is decided exactly once");
        let state = world.order(*order).await;
        assert_ne!(state.status, OrderStatus::Pending, "order {order}");
        if state.status == OrderStatus::Confirmed {
            confirmed += 1;
            for product in products {
                let reserved = world.product_events_for(product, "StockReserved", *order).await;
                assert_eq!(reserved, 1, "order {order} reserved product {product} {reserved} times");
            }
        }
    }
    assert_eq!(confirmed, orders.len(), "every order fits the stock, so every one is confirmed");
    world.shutdown().await;
}
