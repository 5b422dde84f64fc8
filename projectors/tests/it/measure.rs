//! Figures, not assertions of speed: run with `cargo test -p ordo-projectors --test it measure --
//! --ignored --nocapture`.

use std::time::Instant;

use ordo_event_store::{ExpectedVersion, LogCursor, NewEvent, StreamAppend};
use ordo_projectors::testing::{address, eur};
use ordo_projectors::{rebuild, Incoming, Projection, Projector, Target};
use ordo_schemas::{Actor, EventMetadata, OrderEvent, OrderLine, Sku, StreamCategory, StreamRef};
use uuid::Uuid;

use crate::db;

fn meta() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::new_v4(),
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::system(),
        traceparent: None,
        tracestate: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints throughput figures"]
async fn measure_batch_apply_and_rebuild_throughput() {
    let db = db().await;
    let store = db.store();
    let (customer, merchant) = (Uuid::new_v4(), Uuid::new_v4());
    let orders = 5000;
    for chunk in 0..orders / 100 {
        let mut appends = Vec::new();
        for _ in 0..100 {
            let id = Uuid::new_v4();
            let line = OrderLine {
                product_id: Uuid::new_v4(),
                sku: Sku::parse("SKU-1").unwrap(),
                name: "thing".into(),
                quantity: 2,
                unit_price: eur(500),
                line_total: eur(1000),
            };
            let events = [
                OrderEvent::OrderPlaced {
                    order_id: id,
                    customer_id: customer,
                    merchant_id: merchant,
                    lines: vec![line],
                    total: eur(1000),
                    shipping_address: address().into(),
                },
                OrderEvent::OrderConfirmed {},
                OrderEvent::OrderPaid { amount: eur(1000), payment_reference: format!("p{chunk}").into() },
            ];
            appends.push(StreamAppend {
                stream: StreamRef::new(StreamCategory::Order, id),
                expected: ExpectedVersion::NoStream,
                events: events.iter().map(|e| NewEvent::from_domain(e, meta())).collect(),
            });
        }
        store.append_many(appends, None).await.unwrap();
    }
    let total = orders * 3;
    for batch in [50, 500] {
        sqlx::query("TRUNCATE rm_orders, rm_sales_orders, rm_merchant_daily_sales, projection_progress")
            .execute(&db.pool)
            .await
            .unwrap();
        let projector = Projector::new(db.pool.clone(), Target::all_live());
        let started = Instant::now();
        let mut cursor = LogCursor::START;
        loop {
            let (events, next) = store.read_all(cursor, batch).await.unwrap();
            if events.is_empty() {
                break;
            }
            let incoming: Vec<Incoming> = events.iter().map(Incoming::from_recorded).collect();
            projector.apply_batch(&incoming, None).await.unwrap();
            cursor = next;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!("batch {batch}: {total} events x 2 projections in {secs:.2}s = {:.0} events/s", total as f64 / secs);
    }
    for p in [Projection::Orders, Projection::Sales] {
        let report = rebuild(&db.pool, p).await.unwrap();
        eprintln!(
            "rebuild {p}: {} events in {:?}, swap held the lock {:?}",
            report.events, report.duration, report.swap
        );
    }
}

/// A log of about 50,000 order and product events, appended in interleaved chunks as a busy
/// marketplace would write them: listings, then orders that reserve and commit stock, with price
/// changes and stock adjustments now and then.
async fn marketplace_log(store: &ordo_event_store::EventStore) -> u64 {
    use ordo_schemas::{ProductEvent, StockAdjustmentReason};
    let merchant = Uuid::new_v4();
    let products: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let mut total = 0u64;
    for chunk in products.chunks(100) {
        let appends = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let listed = ProductEvent::ProductListed {
                    product_id: *id,
                    merchant_id: merchant,
                    sku: Sku::parse(&format!("SKU-{id}")).unwrap(),
                    name: format!("thing {i}"),
                    description: None,
                    price: eur(500),
                    initial_stock: 1_000_000,
                };
                StreamAppend {
                    stream: StreamRef::new(StreamCategory::Product, *id),
                    expected: ExpectedVersion::NoStream,
                    events: vec![NewEvent::from_domain(&listed, meta())],
                }
            })
            .collect::<Vec<_>>();
        total += appends.len() as u64;
        store.append_many(appends, None).await.unwrap();
    }
    for chunk in 0..80usize {
        let mut appends = Vec::new();
        for i in 0..100usize {
            let n = chunk * 100 + i;
            let (id, product) = (Uuid::new_v4(), products[n % products.len()]);
            let line = OrderLine {
                product_id: product,
                sku: Sku::parse(&format!("SKU-{product}")).unwrap(),
                name: "thing".into(),
                quantity: 2,
                unit_price: eur(500),
                line_total: eur(1000),
            };
            let order = [
                OrderEvent::OrderPlaced {
                    order_id: id,
                    customer_id: Uuid::new_v4(),
                    merchant_id: merchant,
                    lines: vec![line],
                    total: eur(1000),
                    shipping_address: address().into(),
                },
                OrderEvent::OrderConfirmed {},
                OrderEvent::OrderPaid { amount: eur(1000), payment_reference: format!("p{n}").into() },
                OrderEvent::OrderShipped { carrier: "DHL".into(), tracking_number: format!("t{n}") },
            ];
            let mut stock = vec![
                ProductEvent::StockReserved { order_id: id, quantity: 2 },
                ProductEvent::ReservedStockCommitted { order_id: id, quantity: 2 },
            ];
            if n % 10 == 0 {
                stock.push(ProductEvent::ProductPriceChanged { old_price: eur(500), new_price: eur(510) });
                stock.push(ProductEvent::StockAdjusted {
                    delta: 5,
                    reason: StockAdjustmentReason::Restock,
                    on_hand_after: 2_000_000,
                });
            }
            total += (order.len() + stock.len()) as u64;
            appends.push(StreamAppend {
                stream: StreamRef::new(StreamCategory::Order, id),
                expected: ExpectedVersion::NoStream,
                events: order.iter().map(|e| NewEvent::from_domain(e, meta())).collect(),
            });
            appends.push(StreamAppend {
                stream: StreamRef::new(StreamCategory::Product, product),
                expected: ExpectedVersion::Any,
                events: stock.iter().map(|e| NewEvent::from_domain(e, meta())).collect(),
            });
        }
        store.append_many(appends, None).await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints throughput figures"]
async fn measure_applying_50000_order_and_product_events_in_batches() {
    let db = db().await;
    let store = db.store();
    let total = marketplace_log(&store).await;
    let mut log = Vec::new();
    let mut cursor = LogCursor::START;
    while (log.len() as u64) < total {
        let (events, next) = store.read_all(cursor, 5000).await.unwrap();
        if events.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        log.extend(events.iter().map(Incoming::from_recorded));
        cursor = next;
    }
    for batch in [100, 500] {
        sqlx::query("TRUNCATE rm_orders, rm_products, rm_sales_orders, rm_merchant_daily_sales, projection_progress")
            .execute(&db.pool)
            .await
            .unwrap();
        let projector = Projector::new(db.pool.clone(), Target::all_live());
        let started = Instant::now();
        for chunk in log.chunks(batch) {
            projector.apply_batch(chunk, None).await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "apply_batch, batches of {batch}: {total} events in {secs:.2}s = {:.0} events/s",
            total as f64 / secs
        );
    }
}
