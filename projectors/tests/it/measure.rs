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
                    shipping_address: address(),
                },
                OrderEvent::OrderConfirmed {},
                OrderEvent::OrderPaid { amount: eur(1000), payment_reference: format!("p{chunk}") },
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
