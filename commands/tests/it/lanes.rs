//! Lanes: commands of one stream decided in turn on the trusted in-memory state and appended
//! together, re-decided when an earlier one of their round did not happen.

use std::time::Duration;

use ordo_commands::{CommandError, IdempotencyKey, ReceiptKind};
use ordo_domain::Product;
use ordo_event_store::{EventStore, ExpectedVersion, StreamAppend};
use ordo_schemas::{StreamCategory, StreamRef};
use uuid::Uuid;

use crate::{adjust, World};

/// Holds the event log's writer lock until the returned sender fires.
pub async fn hold_writer_lock(store: &EventStore) -> tokio::sync::oneshot::Sender<()> {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let mut tx = store.pool().begin().await.unwrap();
    let other = StreamRef::new(StreamCategory::Merchant, Uuid::new_v4());
    let event = ordo_event_store::NewEvent {
        event_type: "MerchantRegistered".into(),
        schema_version: 1,
        data: serde_json::json!({"merchant_id": other.id, "name": "Other"}),
        metadata: ordo_schemas::EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: ordo_schemas::Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    };
    let append = StreamAppend { stream: other, expected: ExpectedVersion::NoStream, events: vec![event] };
    EventStore::append_in(&mut tx, vec![append], None).await.unwrap();
    tokio::spawn(async move {
        let _ = released.await;
        tx.commit().await.unwrap();
    });
    release
}

/// Waits until the service's writer queues behind the held lock.
async fn writer_waits(store: &EventStore) {
    writers_wait(store, 1).await;
}

/// Waits until `n` writers queue behind the held lock.
pub async fn writers_wait(store: &EventStore, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ordo-writer' AND wait_event_type = 'Lock'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the writer never waited for the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_clients_on_one_product_never_see_a_conflict_and_stock_adds_up() {
    let world = World::start().await;
    let product = world.product(100).await;
    let mut clients = Vec::new();
    for c in 0..8i64 {
        let (service, ctx) = (world.service.clone(), world.as_merchant());
        clients.push(tokio::spawn(async move {
            let mut accepted = 0i64;
            for i in 0..40i64 {
                let delta = if (c + i) % 3 == 0 { -7 } else { 2 };
                match service.adjust_stock(&ctx, product, adjust(delta)).await {
                    Ok(done) => {
                        assert_eq!(done.retries, 0, "one process never races itself on a stream");
                        accepted += delta;
                    }
                    Err(CommandError::Domain(d)) if d.code() == "insufficient_stock" => {}
                    Err(e) => panic!("client {c} command {i}: {e:?}"),
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for c in clients {
        accepted += c.await.unwrap();
    }
    let stream = StreamRef::new(StreamCategory::Product, product);
    let fresh = ordo_commands::CommandService::new(world.db.store()).load::<Product>(stream).await.unwrap();
    assert_eq!(fresh.state.state().unwrap().on_hand, 100 + accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_decided_after_one_that_did_not_happen_is_decided_again() {
    let world = World::start().await;
    let product = world.product(20).await;
    let ctx = world.as_merchant();
    let key = IdempotencyKey {
        scope: world.merchant.to_string(),
        key: "write-off-5".into(),
        request_hash: vec![5; 32],
        kind: ReceiptKind::Done,
    };
    let keyed = ctx.clone().with_idempotency(Some(key));
    world.service.adjust_stock(&keyed, product, adjust(-5)).await.unwrap(); // 15 on hand

    // A first command waits for the held writer lock; two more queue behind it in the lane.
    let release = hold_writer_lock(world.service.store()).await;
    let (s0, c0) = (world.service.clone(), ctx.clone());
    let first = tokio::spawn(async move { s0.adjust_stock(&c0, product, adjust(1)).await });
    writer_waits(world.service.store()).await;
    // The repeat of the keyed write-off would take 16 to 11, which would make the next one
    // (-12) insufficient; but the repeat appends nothing, so -12 must be decided on 16.
    let (s1, c1) = (world.service.clone(), keyed.clone());
    let repeat = tokio::spawn(async move { s1.adjust_stock(&c1, product, adjust(-5)).await });
    let (s2, c2) = (world.service.clone(), ctx.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let big = tokio::spawn(async move { s2.adjust_stock(&c2, product, adjust(-12)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();

    assert_eq!(first.await.unwrap().unwrap().version, 3);
    let repeat = repeat.await.unwrap().unwrap();
    assert!(repeat.replayed.is_some(), "the keyed repeat answers with its first receipt");
    let big = big.await.unwrap().expect("-12 is decided on 16 on hand, not on a repeat that appended nothing");
    assert_eq!(big.version, 4);
    let loaded = world.service.load::<Product>(StreamRef::new(StreamCategory::Product, product)).await.unwrap();
    assert_eq!(loaded.state.state().unwrap().on_hand, 4);
}

#[tokio::test]
async fn a_warm_stream_is_decided_on_its_trusted_state_without_reading_the_log() {
    let world = World::start().await;
    let product = world.product(10).await;
    let ctx = world.as_merchant();
    world.service.adjust_stock(&ctx, product, adjust(1)).await.unwrap();

    // Make the stored events unreadable: a service that read the stream back could not decide.
    let mut tx = world.db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
    sqlx::query("UPDATE events SET event_type = 'Unreadable' WHERE stream_id = $1")
        .bind(product)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let warm = world.service.adjust_stock(&ctx, product, adjust(2)).await.unwrap();
    assert_eq!(warm.version, 3);
    let cold = ordo_commands::CommandService::new(world.db.store());
    let err = cold.adjust_stock(&ctx, product, adjust(2)).await.unwrap_err();
    assert!(matches!(err, CommandError::Store(_)), "a cold service reads the (now unreadable) stream: {err:?}");
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_the_true_version() {
    let world = World::start().await;
    let product = world.product(10).await;
    let other = ordo_commands::CommandService::new(world.db.store());
    let ctx = world.as_merchant();
    world.service.adjust_stock(&ctx, product, adjust(1)).await.unwrap(); // v2, cached
    other.adjust_stock(&ctx, product, adjust(1)).await.unwrap(); // v3 behind its back

    // The caller says v2 (what this service's cache also says): the log is at v3.
    let err = world.service.adjust_stock(&ctx.clone().expecting(Some(2)), product, adjust(1)).await.unwrap_err();
    assert!(matches!(err, CommandError::VersionConflict { expected: 2, actual: 3 }), "{err:?}");
    // The true version is accepted.
    let ok = world.service.adjust_stock(&ctx.clone().expecting(Some(3)), product, adjust(1)).await.unwrap();
    assert_eq!(ok.version, 4);
}
