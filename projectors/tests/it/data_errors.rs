//! Events whose data one projection's tables cannot take (SQLSTATE classes 22 and 23), while the
//! other projections reading the same category can.

use ordo_event_store::{ExpectedVersion, NewEvent, StreamAppend};
use ordo_projectors::testing::{address, eur};
use ordo_projectors::{Incoming, Projector, Target};
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

fn placed(order_id: Uuid, merchant_id: Uuid, amount: i64) -> OrderEvent {
    let line = OrderLine {
        product_id: Uuid::new_v4(),
        sku: Sku::parse("SKU-1").unwrap(),
        name: "thing".into(),
        quantity: 1,
        unit_price: eur(amount),
        line_total: eur(amount),
    };
    OrderEvent::OrderPlaced {
        order_id,
        customer_id: Uuid::new_v4(),
        merchant_id,
        lines: vec![line],
        total: eur(amount),
        shipping_address: address().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_error_in_one_projection_parks_the_stream_there_only_and_the_others_apply_the_event() {
    let db = db().await;
    let store = db.store();
    let merchant = Uuid::new_v4();
    let (rich, poor) = (Uuid::new_v4(), Uuid::new_v4());
    let appends = [(rich, i64::MAX), (poor, 1)]
        .into_iter()
        .map(|(id, amount)| {
            let events = [
                placed(id, merchant, amount),
                OrderEvent::OrderPaid { amount: eur(amount), payment_reference: format!("pay-{id}").into() },
            ];
            StreamAppend {
                stream: StreamRef::new(StreamCategory::Order, id),
                expected: ExpectedVersion::NoStream,
                events: events.iter().map(|e| NewEvent::from_domain(e, meta())).collect(),
            }
        })
        .collect();
    // one append: both payments fall on the same day, so the merchant's daily revenue overflows
    store.append_many(appends, None).await.unwrap();
    let mut log = Vec::new();
    for id in [rich, poor] {
        log.extend(store.read_stream(StreamRef::new(StreamCategory::Order, id), 1).await.unwrap());
    }
    log.sort_by_key(|e| e.position);
    let incoming: Vec<Incoming> = log.iter().map(Incoming::from_recorded).collect();
    // the payment counted second overflows the sum
    let victim = log.iter().rev().find(|e| e.event_type == "OrderPaid").unwrap().stream.id;
    let other = if victim == rich { poor } else { rich };

    let projector = Projector::new(db.pool.clone(), Target::all_live());
    let stats = projector.apply_batch(&incoming, None).await.unwrap();
    assert_eq!((stats.applied, stats.poisoned), (7, 1), "{stats:?}");

    let parked: Vec<(String, Uuid)> = sqlx::query_as("SELECT projection, stream_id FROM parked_streams ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(parked, [("sales".to_owned(), victim)], "only the projection whose write failed parks the stream");
    let dead: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT projection, kind, version FROM dead_letters ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(dead, [("sales".to_owned(), "poison".to_owned(), 2)]);
    let orders: Vec<(Uuid, String, i64)> =
        sqlx::query_as("SELECT order_id, status, version FROM rm_orders ORDER BY order_id = $1")
            .bind(victim)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        orders,
        [(other, "paid".to_owned(), 2), (victim, "paid".to_owned(), 2)],
        "the orders projection applied both"
    );
    let sales: Vec<(Uuid, bool, i64)> =
        sqlx::query_as("SELECT order_id, paid, version FROM rm_sales_orders ORDER BY order_id = $1")
            .bind(victim)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(sales, [(other, true, 2), (victim, false, 1)]);
    let daily: Vec<(i64, i64)> =
        sqlx::query_as("SELECT orders, revenue_minor FROM rm_merchant_daily_sales").fetch_all(&db.pool).await.unwrap();
    let counted = if other == rich { i64::MAX } else { 1 };
    assert_eq!(daily, [(1, counted)]);
}
