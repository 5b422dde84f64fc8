use std::collections::HashSet;
use std::time::Duration;

use ordo_domain::OrderStatus;
use ordo_event_store::LogCursor;
use ordo_schemas::StreamCategory;

use crate::{wait_until, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_killed_mid_run_restarted_and_fed_every_event_again_makes_no_duplicate_reservation() {
    let world = World::start().await;
    let products = [world.product(20).await, world.product(20).await];
    let (saga, status) = world.saga("saga");

    let mut orders = Vec::new();
    for i in 0..30u32 {
        orders.push(world.place(&[(products[0], 1), (products[1], 1 + i % 2)]).await);
    }
    // Kill it mid-run: some orders decided, others not, offsets of the last ones uncommitted.
    wait_until("the saga handled some orders", Duration::from_secs(60), || status.handled() >= 5).await;
    saga.kill().await;

    let (saga, _) = world.saga("saga");
    for order in &orders {
        world.decided(*order, Duration::from_secs(60)).await;
    }
    saga.stop().await;

    // A replica in a fresh group re-reads every order event from the start.
    let (log, _) = world.db.store().read_all(LogCursor::START, 100_000).await.unwrap();
    let order_events = log.iter().filter(|e| e.stream.category == StreamCategory::Order).count() as u64;
    let (replay, replayed) = world.saga("replay");
    wait_until("every order event was redelivered", Duration::from_secs(60), || replayed.handled() >= order_events)
        .await;
    replay.stop().await;

    let mut confirmed = HashSet::new();
    for order in &orders {
        let state = world.order(*order).await;
        if state.status == OrderStatus::Confirmed {
            confirmed.insert(*order);
        }
        for product in products {
            let reserved = world.product_events_for(product, "StockReserved", *order).await;
            assert!(reserved <= 1, "order {order} reserved product {product} {reserved} times");
        }
    }
    for product in products {
        let p = world.stock(product).await;
        let mut expected = 0i64;
        for order in confirmed.iter() {
            let state = world.order(*order).await;
            let line = state.lines.iter().find(|l| l.product_id == product).unwrap();
            expected += i64::from(line.quantity);
            assert_eq!(p.reservation(*order), Some(line.quantity), "confirmed order {order} holds its line");
        }
        assert_eq!(p.reserved, expected, "product {product}: reserved equals what confirmed orders hold");
        assert!(p.reserved <= p.on_hand, "never oversold");
        assert!(p.reservations.keys().all(|o| confirmed.contains(o)), "only confirmed orders hold stock");
    }
    world.shutdown().await;
}
