//! The saga handling orders concurrently: competing orders never oversell, the commands of
//! concurrent orders share the writer's batches, redelivering the whole topic changes nothing,
//! and a saga stopped with events in hand commits none it did not handle.

use std::time::Duration;

use ordo_domain::OrderStatus;
use ordo_schemas::StreamCategory;
use uuid::Uuid;

use crate::{wait_until, World};

const DECIDE: Duration = Duration::from_secs(60);

/// The value of a histogram's `_sum` or `_count` series in the process' Prometheus text.
fn series(name: &str) -> f64 {
    let text = ordo_service::ops::metrics_handle().render();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Order events in the log.
async fn order_events(world: &World) -> u64 {
    let (log, _) = world.db.store().read_all(ordo_event_store::LogCursor::START, 1_000_000).await.unwrap();
    log.iter().filter(|e| e.stream.category == StreamCategory::Order).count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orders_competing_for_the_last_units_of_a_product_never_oversell() {
    let world = World::start().await;
    let contested = world.product(5).await;
    let (other_a, other_b) = (world.product(10).await, world.product(10).await);
    // Both placed before the saga runs, so it receives them together and handles them at once.
    let first = world.place(&[(other_a, 1), (contested, 3)]).await;
    let second = world.place(&[(contested, 3), (other_b, 2)]).await;
    let (saga, _) = world.saga("saga");

    let (a, b) = (world.decided(first, DECIDE).await, world.decided(second, DECIDE).await);
    let mut statuses = [a.status, b.status];
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(statuses, [OrderStatus::Confirmed, OrderStatus::Rejected], "exactly one of the two gets the units");
    let (winner, loser, loser_state) =
        if a.status == OrderStatus::Confirmed { (first, second, b) } else { (second, first, a) };
    assert_eq!(loser_state.failed_lines.len(), 1);
    let line = &loser_state.failed_lines[0];
    assert_eq!(
        (line.product_id, line.requested, line.available, line.reason.as_str()),
        (contested, 3, 2, "out_of_stock")
    );

    let p = world.stock(contested).await;
    assert_eq!((p.on_hand, p.reserved, p.available()), (5, 3, 2), "reserved is the confirmed quantity");
    assert_eq!((p.reservation(winner), p.reservation(loser)), (Some(3), None));
    // the loser's other line was reserved and released again, the winner's is held
    for (product, order, held) in [(other_a, first, 1u32), (other_b, second, 2)] {
        let p = world.stock(product).await;
        let expected = if order == winner { (i64::from(held), Some(held)) } else { (0, None) };
        assert_eq!((p.reserved, p.reservation(order)), expected, "product {product} of order {order}");
    }
    saga.stop().await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_are_handled_concurrently_and_their_commands_share_the_writers_batches() {
    ordo_service::ops::metrics_handle(); // the recorder, before anything is recorded
    let world = World::start().await;
    let products = [world.product(15).await, world.product(15).await, world.product(15).await];
    let mut orders = Vec::new();
    for i in 0..60usize {
        orders.push(world.place(&[(products[i % 3], 1)]).await);
    }
    let (sum, count) = (series("ordo_append_batch_requests_sum"), series("ordo_append_batch_requests_count"));

    let (saga, status) = world.saga_with("saga", 16);
    let mut confirmed = 0;
    for order in &orders {
        if world.decided(*order, DECIDE).await.status == OrderStatus::Confirmed {
            confirmed += 1;
        }
    }
    let appends = series("ordo_append_batch_requests_sum") - sum;
    let batches = series("ordo_append_batch_requests_count") - count;
    eprintln!("saga: {appends} appends in {batches} batches, {} events at once at most", status.peak_in_flight());

    assert!(status.peak_in_flight() > 1, "more than one event was handled at a time");
    assert!(status.peak_in_flight() <= 16, "never more than the configured concurrency");
    assert_eq!(confirmed, 45, "each product's 15 units went to 15 of its 20 orders");
    for product in products {
        let p = world.stock(product).await;
        assert_eq!((p.on_hand, p.reserved), (15, 15), "product {product} sold out, never oversold");
    }
    assert!(appends >= 60.0, "every order was decided by an append: {appends}");
    assert!(batches < appends, "commands of concurrent orders were appended in shared batches");
    saga.stop().await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivering_the_whole_topic_to_a_concurrent_saga_adds_nothing_to_the_log() {
    let world = World::start().await;
    let scarce = world.product(4).await;
    let plenty = world.product(100).await;
    let (saga, _) = world.saga("saga");
    let mut orders = Vec::new();
    for i in 0..12u32 {
        orders.push(world.place(&[(plenty, 1 + i % 3), (scarce, 1)]).await);
    }
    let mut confirmed = Vec::new();
    for order in &orders {
        if world.decided(*order, DECIDE).await.status == OrderStatus::Confirmed {
            confirmed.push(*order);
        }
    }
    assert_eq!(confirmed.len(), 4);
    // cancel two confirmed orders: their releases are part of what is redelivered
    for order in &confirmed[..2] {
        world.service.cancel_order(&world.as_customer(), *order, "changed my mind".into()).await.unwrap();
    }
    world.wait_for_stock(scarce, "the cancelled orders' units are released", |p| p.reserved == 2).await;
    saga.stop().await;
    let log = world.log().await;
    let (scarce_before, plenty_before) = (world.stock(scarce).await, world.stock(plenty).await);

    // a saga in a new group reads ordo.orders from its beginning
    let expected = order_events(&world).await;
    let (replay, replayed) = world.saga_with("replay", 32);
    wait_until("every order event was redelivered", DECIDE, || replayed.handled() >= expected).await;
    replay.stop().await;

    assert_eq!(world.log().await, log, "the redelivery appended nothing");
    assert_eq!(world.stock(scarce).await, scarce_before);
    assert_eq!(world.stock(plenty).await, plenty_before);
    assert!(replayed.peak_in_flight() > 1, "the redelivery was handled concurrently");
    world.shutdown().await;
}

/// With no grace period, stopping abandons every event in flight at once: none of them may be
/// committed (a saga that committed on receipt, or at the highest finished offset, would leave
/// their orders pending for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_stopped_with_events_in_flight_commits_none_it_did_not_handle_and_its_successor_decides_every_order() {
    let world = World::start().await;
    let products: Vec<Uuid> = vec![world.product(50).await, world.product(50).await];
    let mut orders = Vec::new();
    for i in 0..40usize {
        orders.push(world.place(&[(products[i % 2], 1)]).await);
    }
    let (saga, status) = world.saga_config("saga", |c| {
        c.concurrency = 8;
        c.shutdown_grace = Duration::ZERO;
    });
    wait_until("the saga handled some orders", DECIDE, || status.handled() >= 4).await;
    saga.stop().await;
    let handled_first = status.handled();

    // the same group again starts at the committed offsets
    let (saga, _) = world.saga_with("saga", 8);
    for order in &orders {
        assert_eq!(world.decided(*order, DECIDE).await.status, OrderStatus::Confirmed, "order {order}");
    }
    saga.stop().await;
    eprintln!("saga: {handled_first} of 40 orders handled before the stop");
    for product in products {
        let p = world.stock(product).await;
        assert_eq!(p.reserved, 20, "product {product}: every order holds exactly its one unit");
    }
    world.shutdown().await;
}
