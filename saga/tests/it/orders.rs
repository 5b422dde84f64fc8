use std::time::Duration;

use ordo_commands::CommandContext;
use ordo_domain::OrderStatus;
use ordo_schemas::{Actor, EventMetadata, PayOrder, Role, ShipOrder, StreamCategory, StreamRef};
use uuid::Uuid;

use crate::World;

const DECIDE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_for_available_stock_becomes_confirmed_and_holds_its_reservation() {
    let world = World::start().await;
    let (saga, _) = world.saga("saga");
    let a = world.product(10).await;
    let b = world.product(5).await;

    let order = world.place(&[(a, 3), (b, 5)]).await;
    let decided = world.decided(order, DECIDE).await;

    assert_eq!(decided.status, OrderStatus::Confirmed);
    let (pa, pb) = (world.stock(a).await, world.stock(b).await);
    assert_eq!((pa.on_hand, pa.reserved, pa.reservation(order)), (10, 3, Some(3)));
    assert_eq!((pb.on_hand, pb.reserved, pb.reservation(order)), (5, 5, Some(5)));
    saga.stop().await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_exceeding_stock_is_rejected_with_the_failing_lines_and_leaves_no_reservation() {
    let world = World::start().await;
    let (saga, _) = world.saga("saga");
    let plenty = world.product(10).await;
    let scarce = world.product(2).await;

    let order = world.place(&[(plenty, 4), (scarce, 3)]).await;
    let decided = world.decided(order, DECIDE).await;

    assert_eq!(decided.status, OrderStatus::Rejected);
    assert_eq!(decided.failed_lines.len(), 1, "only the scarce line failed: {:?}", decided.failed_lines);
    let line = &decided.failed_lines[0];
    assert_eq!((line.product_id, line.requested, line.available), (scarce, 3, 2));
    assert_eq!(line.reason, "out_of_stock");
    for product in [plenty, scarce] {
        let p = world.stock(product).await;
        assert_eq!((p.reserved, p.reservation(order)), (0, None), "product {product} holds nothing");
    }
    assert_eq!(world.product_events_for(plenty, "StockReserved", order).await, 1);
    assert_eq!(world.product_events_for(plenty, "StockReservationReleased", order).await, 1);
    saga.stop().await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_orders_for_thirty_units_confirm_exactly_thirty_and_never_oversell() {
    let world = std::sync::Arc::new(World::start().await);
    let (saga, _) = world.saga("saga");
    let product = world.product(30).await;

    let started = std::time::Instant::now();
    let mut placing = Vec::new();
    for _ in 0..100 {
        let w = world.clone();
        placing.push(tokio::spawn(async move { w.place(&[(product, 1)]).await }));
    }
    let mut orders = Vec::new();
    for p in placing {
        orders.push(p.await.unwrap());
    }
    let mut confirmed = Vec::new();
    for order in &orders {
        let state = world.decided(*order, DECIDE).await;
        match state.status {
            OrderStatus::Confirmed => confirmed.push(*order),
            OrderStatus::Rejected => {
                assert_eq!(state.failed_lines[0].reason, "out_of_stock");
                assert_eq!(state.failed_lines[0].available, 0);
            }
            other => panic!("order {order} ended {other:?}"),
        }
    }
    eprintln!("saga: 100 orders placed and decided in {:?}", started.elapsed());

    assert_eq!(confirmed.len(), 30, "exactly the stock is sold");
    let p = world.stock(product).await;
    assert_eq!((p.on_hand, p.reserved, p.available()), (30, 30, 0), "never oversold");
    assert!(confirmed.iter().all(|o| p.reservation(*o) == Some(1)));
    saga.stop().await;
    if let Ok(world) = std::sync::Arc::try_unwrap(world) {
        world.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_confirmed_order_releases_its_stock() {
    let world = World::start().await;
    let (saga, _) = world.saga("saga");
    let product = world.product(5).await;
    let order = world.place(&[(product, 4)]).await;
    assert_eq!(world.decided(order, DECIDE).await.status, OrderStatus::Confirmed);
    assert_eq!(world.stock(product).await.reserved, 4);

    world.service.cancel_order(&world.as_customer(), order, "changed my mind".into()).await.unwrap();

    let p = world.wait_for_stock(product, "the reservation is released", |p| p.reserved == 0).await;
    assert_eq!((p.on_hand, p.available(), p.reservation(order)), (5, 5, None));
    saga.stop().await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipping_a_paid_order_commits_its_reservation_and_saga_commands_carry_the_flow_ids() {
    let world = World::start().await;
    let (saga, _) = world.saga("saga");
    let product = world.product(5).await;
    let order = world.place(&[(product, 2)]).await;
    let confirmed = world.decided(order, DECIDE).await;
    assert_eq!(confirmed.status, OrderStatus::Confirmed);

    let pay = PayOrder { amount: confirmed.total, payment_reference: "pay-1".into() };
    world.service.pay_order(&world.as_customer(), order, pay).await.unwrap();
    let merchant = CommandContext::new(Actor { id: world.merchant, role: Role::Merchant }, Uuid::new_v4());
    let ship = ShipOrder { carrier: "DHL".into(), tracking_number: "T-1".into() };
    world.service.ship_order(&merchant, order, ship).await.unwrap();

    let p = world.wait_for_stock(product, "the reservation is committed", |p| p.on_hand == 3).await;
    assert_eq!((p.reserved, p.reservation(order)), (0, None));

    // The reservation was caused by OrderPlaced and shares its correlation id.
    let store = world.db.store();
    let order_events = store.read_stream(StreamRef::new(StreamCategory::Order, order), 1).await.unwrap();
    let placed = order_events.iter().find(|e| e.event_type == "OrderPlaced").unwrap();
    let placed_meta: EventMetadata = placed.typed_metadata().unwrap();
    let product_events = store.read_stream(StreamRef::new(StreamCategory::Product, product), 1).await.unwrap();
    let reserved = product_events.iter().find(|e| e.event_type == "StockReserved").unwrap();
    let meta = reserved.typed_metadata().unwrap();
    assert_eq!(meta.causation_id, Some(placed.event_id));
    assert_eq!(meta.correlation_id, placed_meta.correlation_id);
    assert_eq!(meta.actor, Actor::system());
    saga.stop().await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_cancelled_while_pending_never_holds_stock() {
    let world = World::start().await;
    let product = world.product(5).await;
    let order = world.place(&[(product, 2)]).await;
    world.service.cancel_order(&world.as_customer(), order, "too slow".into()).await.unwrap();

    // The saga sees OrderPlaced only now, for an order that is already cancelled.
    let (saga, status) = world.saga("saga");
    crate::wait_until("both order events were handled", DECIDE, || status.handled() >= 2).await;
    assert_eq!(world.order(order).await.status, OrderStatus::Cancelled);
    let p = world.stock(product).await;
    assert_eq!((p.reserved, p.reservation(order)), (0, None));
    assert_eq!(world.product_events_for(product, "StockReserved", order).await, 0);
    saga.stop().await;
    world.shutdown().await;
}

/// The saga acts on the order as the log has it: a forged message that contradicts the log
/// (a cancellation or shipment of an order that is merely confirmed) moves no stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_cancellation_or_shipment_that_contradicts_the_log_moves_no_stock() {
    let world = World::start().await;
    let (saga, _) = world.saga("saga");
    let product = world.product(10).await;
    let order = world.place(&[(product, 4)]).await;
    assert_eq!(world.decided(order, DECIDE).await.status, OrderStatus::Confirmed);
    saga.stop().await;

    let direct = ordo_saga::OrderSaga::new(world.service.clone());
    let forged = |event_type: &str, data: serde_json::Value| ordo_schemas::EventEnvelope {
        position: 999_999,
        category: StreamCategory::Order,
        stream_id: order,
        version: 3,
        event_type: event_type.to_owned(),
        schema_version: 1,
        data,
        metadata: ordo_schemas::RecordedMetadata {
            metadata: EventMetadata {
                event_id: Uuid::new_v4(),
                correlation_id: Uuid::new_v4(),
                causation_id: None,
                actor: Actor { id: Uuid::new_v4(), role: Role::Admin },
                traceparent: None,
                tracestate: None,
            },
            recorded_at: chrono::Utc::now(),
        },
        hash: "00".repeat(32),
        prev_hash: None,
    };
    let cancel = forged(
        "OrderCancelled",
        serde_json::json!({"reason": "forged", "cancelled_by": {"id": Uuid::new_v4(), "role": "admin"}}),
    );
    let ship = forged("OrderShipped", serde_json::json!({"carrier": "X", "tracking_number": "1"}));
    for envelope in [cancel, ship] {
        let outcome = direct.handle(&envelope).await.unwrap();
        assert_eq!(outcome, ordo_saga::Outcome::Ignored, "{}", envelope.event_type);
    }
    let stock = world.stock(product).await;
    assert_eq!((stock.on_hand, stock.reserved, stock.reservation(order)), (10, 4, Some(4)));
    world.shutdown().await;
}

/// An earlier saga reserved line 1, failed line 2, released line 1 and died before rejecting the
/// order; the second line was restocked meanwhile. Handling the placement again must not confirm
/// an order that holds no stock for line 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_handled_again_after_an_interrupted_rejection_ends_rejected_or_holds_every_line() {
    let world = World::start().await;
    let in_stock = world.product(5).await;
    let sold_out = world.product(0).await;
    let order = world.place(&[(in_stock, 1), (sold_out, 1)]).await;

    let system = CommandContext::system(Uuid::new_v4(), Uuid::new_v4());
    world.service.reserve_stock(&system, in_stock, order, 1).await.unwrap();
    assert!(world.service.reserve_stock(&system, sold_out, order, 1).await.is_err());
    world.service.release_reservation(&system, in_stock, order).await.unwrap();
    let merchant = CommandContext::new(Actor { id: world.merchant, role: Role::Merchant }, Uuid::new_v4());
    let restock = ordo_schemas::AdjustStock { delta: 5, reason: ordo_schemas::StockAdjustmentReason::Restock };
    world.service.adjust_stock(&merchant, sold_out, restock).await.unwrap();

    let placed = world.db.store().read_stream(StreamRef::new(StreamCategory::Order, order), 1).await.unwrap();
    let envelope = placed[0].to_envelope().unwrap();
    let saga = ordo_saga::OrderSaga::new(world.service.clone());
    saga.handle(&envelope).await.unwrap();

    let decided = world.order(order).await;
    let holds = |p: ordo_domain::ProductState| p.reservation(order).is_some();
    let (first, second) = (holds(world.stock(in_stock).await), holds(world.stock(sold_out).await));
    match decided.status {
        OrderStatus::Rejected => assert!(!first && !second, "a rejected order holds nothing"),
        OrderStatus::Confirmed => assert!(first && second, "a confirmed order holds every line"),
        other => panic!("the order is {other:?}"),
    }
    world.shutdown().await;
}
