//! Two command services on one log (as two API replicas): each one's in-memory states catch up
//! with what the other appended before deciding.

use ordo_commands::{CommandContext, CommandService};
use ordo_domain::Product;
use ordo_event_store::testing::TestDb;
use ordo_event_store::EventStore;
use ordo_schemas::{
    Actor, AdjustStock, Currency, ListProduct, Money, RegisterMerchant, Role, Sku, StockAdjustmentReason,
    StreamCategory, StreamRef,
};
use uuid::Uuid;

/// Two command services over one database (two replicas of the command API), a registered
/// merchant and one listed product with 5 on hand, listed through `a`.
struct Replicas {
    db: TestDb,
    a: CommandService,
    b: CommandService,
    ctx: CommandContext,
    product: Uuid,
}

impl Replicas {
    async fn with_product(sku: &str) -> Self {
        let db = TestDb::new().await;
        ordo_commands::migrate(&db.pool).await.unwrap();
        let a = CommandService::new(EventStore::new(db.pool.clone()));
        let b = CommandService::new(EventStore::new(db.pool.clone()));
        let merchant = Uuid::new_v4();
        let ctx = CommandContext::new(Actor { id: merchant, role: Role::Merchant }, Uuid::new_v4());
        a.register_merchant(&ctx, RegisterMerchant { merchant_id: merchant, name: "Shop".into() }).await.unwrap();
        let product = Uuid::new_v4();
        let listing = ListProduct {
            product_id: product,
            merchant_id: merchant,
            sku: Sku::parse(sku).unwrap(),
            name: "Lamp".into(),
            description: None,
            price: Money::new(1_000, Currency::parse("EUR").unwrap()),
            initial_stock: 5,
        };
        a.list_product(&ctx, listing).await.unwrap();
        Self { db, a, b, ctx, product }
    }
}

#[tokio::test]
async fn a_replica_sees_what_another_replica_appended_before_it_decides() {
    let Replicas { db, a, b, ctx, product } = Replicas::with_product("SKU-1").await;
    let stream = StreamRef::new(StreamCategory::Product, product);
    let adjust = |delta| AdjustStock {
        delta,
        reason: if delta > 0 { StockAdjustmentReason::Restock } else { StockAdjustmentReason::WriteOff },
    };

    // A has the product cached at version 1; B writes off 4 units behind its back.
    assert_eq!(a.load::<Product>(stream).await.unwrap().version, 1);
    b.adjust_stock(&ctx, product, adjust(-4)).await.unwrap();

    // A must not write off 3 more from a stale 5 on hand: it catches up to 1 and refuses.
    let refused = a.adjust_stock(&ctx, product, adjust(-3)).await.unwrap_err();
    assert!(refused.is_rejection(), "{refused:?}");
    let loaded = a.load::<Product>(stream).await.unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state.state().map(|p| p.on_hand), Some(1));

    // And what A appends next lands after B's event, as folded from the whole log.
    let done = a.adjust_stock(&ctx, product, adjust(2)).await.unwrap();
    assert_eq!(done.version, 3);
    let fresh = CommandService::new(EventStore::new(db.pool.clone())).load::<Product>(stream).await.unwrap();
    assert_eq!(fresh, a.load::<Product>(stream).await.unwrap());
    assert_eq!(fresh.state.state().map(|p| p.on_hand), Some(3));
}

/// A refusal decided on a cached state is checked against the log before it is answered: the
/// other replica may have made the command valid (as the saga confirms an order the command API
/// still holds as pending).
#[tokio::test]
async fn a_command_refused_on_a_stale_cached_state_is_decided_again_on_the_log() {
    let Replicas { db: _db, a, b, ctx, product } = Replicas::with_product("SKU-2").await;
    let restock = AdjustStock { delta: 10, reason: StockAdjustmentReason::Restock };
    b.adjust_stock(&ctx, product, restock).await.unwrap();

    // A still holds 5 on hand: writing off 8 looks insufficient there, but the log has 15.
    let write_off = AdjustStock { delta: -8, reason: StockAdjustmentReason::WriteOff };
    let done = a.adjust_stock(&ctx, product, write_off).await.unwrap();
    assert_eq!(done.version, 3);
    let loaded = a.load::<Product>(StreamRef::new(StreamCategory::Product, product)).await.unwrap();
    assert_eq!(loaded.state.state().map(|p| p.on_hand), Some(7));
}

/// Two commands of one round are appended as a chain. When another replica appended to the
/// stream just before, the first is refused; the second (whose expected version may then match
/// the log by chance) must be refused too and decided again, never appended on a state that did
/// not happen and then appended once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_behind_another_replica_appends_each_command_exactly_once() {
    use crate::lanes::{hold_writer_lock, writers_wait};
    let world = crate::World::start().await;
    let product = world.product(10).await;
    // The other replica lets the database decide, so its append lands right after `first`
    // whatever the head is (a writer deciding on heads it knows would first learn this stream's
    // head, and could fall behind this service's round).
    let other = EventStore::with_writer_options(
        world.db.pool.clone(),
        ordo_event_store::WriterOptions { decide_in_database: true, ..Default::default() },
    );
    let ctx = world.as_merchant();
    let stream = StreamRef::new(StreamCategory::Product, product);
    let restock = |delta| AdjustStock { delta, reason: StockAdjustmentReason::Restock };

    // This service's first command waits for the held writer lock, the other replica's behind it.
    let release = hold_writer_lock(world.service.store()).await;
    let (s0, c0) = (world.service.clone(), ctx.clone());
    let first = tokio::spawn(async move { s0.adjust_stock(&c0, product, restock(1)).await });
    writers_wait(world.service.store(), 1).await;
    // Another writer appends whatever the version is (11 on hand after `first`, then 21).
    let event = ordo_event_store::NewEvent::from_domain(
        &ordo_schemas::ProductEvent::StockAdjusted {
            delta: 10,
            reason: StockAdjustmentReason::Restock,
            on_hand_after: 21,
        },
        ordo_schemas::EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    );
    let theirs = tokio::spawn(async move {
        other.append(stream, ordo_event_store::ExpectedVersion::Any, vec![event]).await.map(|_| ())
    });
    writers_wait(world.service.store(), 2).await;
    // Two more commands queue in this service's lane: one round, decided on v2 (after `first`).
    let (s1, c1) = (world.service.clone(), ctx.clone());
    let second = tokio::spawn(async move { s1.adjust_stock(&c1, product, restock(1)).await });
    let (s2, c2) = (world.service.clone(), ctx.clone());
    let third = tokio::spawn(async move { s2.adjust_stock(&c2, product, restock(1)).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    release.send(()).unwrap();

    theirs.await.unwrap().unwrap();
    for task in [first, second, third] {
        task.await.unwrap().unwrap();
    }
    let fresh = CommandService::new(world.db.store());
    let loaded = fresh.load::<Product>(stream).await.unwrap();
    assert_eq!(loaded.version, 5, "listing and four adjustments, none twice");
    assert_eq!(loaded.state.state().map(|p| p.on_hand), Some(23));
}
