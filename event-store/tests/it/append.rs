use ordo_event_store::testing::TestDb;
use ordo_event_store::{AppendError, EventStore, ExpectedVersion, IdempotencyRecord, StreamAppend};
use ordo_schemas::{StreamCategory, StreamRef};
use uuid::Uuid;

use crate::{event, product};

async fn max_position(store: &EventStore) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>("SELECT max(position) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .unwrap_or(0)
}

#[tokio::test]
async fn events_get_consecutive_versions_and_read_back_in_order() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = product();
    let first = store.append(s, ExpectedVersion::NoStream, vec![event(1), event(2)]).await.unwrap();
    assert_eq!(first.version, 2);
    let second = store.append(s, ExpectedVersion::Exact(2), vec![event(3)]).await.unwrap();
    assert_eq!(second.version, 3);
    assert!(second.first_position > first.last_position);

    let all = store.read_stream(s, 1).await.unwrap();
    assert_eq!(all.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[2].data["delta"], 3);
    assert_eq!(all[0].prev_hash, None);
    assert_eq!(all[1].prev_hash.as_deref(), Some(all[0].hash.as_slice()));
    let tail = store.read_stream(s, 2).await.unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(store.stream_version(s).await.unwrap(), 3);
}

#[tokio::test]
async fn a_violated_expectation_is_a_typed_conflict_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = product();
    store.append(s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();

    let err = store.append(s, ExpectedVersion::NoStream, vec![event(2)]).await.unwrap_err();
    assert!(matches!(err, AppendError::Conflict { actual: 1, .. }), "{err:?}");
    let err = store.append(s, ExpectedVersion::Exact(5), vec![event(2)]).await.unwrap_err();
    assert!(matches!(err, AppendError::Conflict { actual: 1, expected: ExpectedVersion::Exact(5), .. }));
    let err = store.append(product(), ExpectedVersion::Exact(1), vec![event(2)]).await.unwrap_err();
    assert!(matches!(err, AppendError::Conflict { actual: 0, .. }));

    assert_eq!(store.read_stream(s, 1).await.unwrap().len(), 1);
    let any = store.append(s, ExpectedVersion::Any, vec![event(2)]).await.unwrap();
    assert_eq!(any.version, 2);
}

#[tokio::test]
async fn two_writers_racing_with_the_same_expectation_one_wins_and_no_position_is_burnt() {
    let db = TestDb::new().await;
    let store = db.store();
    for round in 0..30 {
        let s = product();
        if round % 2 == 1 {
            store.append(s, ExpectedVersion::NoStream, vec![event(0)]).await.unwrap();
        }
        let expected = if round % 2 == 1 { ExpectedVersion::Exact(1) } else { ExpectedVersion::NoStream };
        let before = max_position(&store).await;
        let (a, b) = tokio::join!(store.append(s, expected, vec![event(1)]), store.append(s, expected, vec![event(2)]));
        let wins = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {a:?} {b:?}");
        let loser = match (a, b) {
            (Err(e), _) | (_, Err(e)) => e,
            _ => unreachable!("one append failed"),
        };
        assert!(matches!(loser, AppendError::Conflict { .. }), "{loser:?}");
        // The winner took exactly the next position: the loser took none.
        assert_eq!(max_position(&store).await, before + 1, "round {round}");
    }
}

#[tokio::test]
async fn a_multi_stream_append_is_all_or_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let order = StreamRef::new(StreamCategory::Order, Uuid::new_v4());
    let p1 = product();
    let p2 = product();
    store.append(p2, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();

    let err = store
        .append_many(
            vec![
                StreamAppend { stream: order, expected: ExpectedVersion::NoStream, events: vec![event(1)] },
                StreamAppend { stream: p1, expected: ExpectedVersion::NoStream, events: vec![event(1)] },
                StreamAppend { stream: p2, expected: ExpectedVersion::NoStream, events: vec![event(2)] },
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { stream, .. } if stream == p2), "{err:?}");
    assert_eq!(store.stream_version(order).await.unwrap(), 0);
    assert_eq!(store.stream_version(p1).await.unwrap(), 0);

    let ok = store
        .append_many(
            vec![
                StreamAppend { stream: order, expected: ExpectedVersion::NoStream, events: vec![event(1), event(2)] },
                StreamAppend { stream: p2, expected: ExpectedVersion::Exact(1), events: vec![event(3)] },
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(store.stream_version(order).await.unwrap(), 2);
    assert_eq!(store.stream_version(p2).await.unwrap(), 2);
}

#[tokio::test]
async fn an_idempotency_key_is_stored_with_the_events_and_cannot_be_stored_twice() {
    let db = TestDb::new().await;
    let store = db.store();
    let record = IdempotencyRecord {
        scope: "customer:1".into(),
        key: "k-1".into(),
        request_hash: vec![1, 2, 3],
        response_status: 201,
        response_body: serde_json::json!({"id": "x", "version": 1}),
    };
    let s = product();
    let append = |stream| StreamAppend { stream, expected: ExpectedVersion::Any, events: vec![event(1)] };
    store.append_many(vec![append(s)], Some(&record)).await.unwrap();
    assert_eq!(store.find_idempotency("customer:1", "k-1").await.unwrap(), Some(record.clone()));
    assert_eq!(store.find_idempotency("customer:2", "k-1").await.unwrap(), None);

    let err = store.append_many(vec![append(s)], Some(&record)).await.unwrap_err();
    assert!(matches!(err, AppendError::IdempotencyKeyTaken { .. }), "{err:?}");
    assert_eq!(store.read_stream(s, 1).await.unwrap().len(), 1, "the repeat appended nothing");

    // A failed append stores no idempotency record either.
    let other = IdempotencyRecord { key: "k-2".into(), ..record };
    let conflict = StreamAppend { stream: s, expected: ExpectedVersion::NoStream, events: vec![event(1)] };
    assert!(store.append_many(vec![conflict], Some(&other)).await.is_err());
    assert_eq!(store.find_idempotency("customer:1", "k-2").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_any_appends_to_one_stream_all_land_with_distinct_versions() {
    let db = TestDb::new().await;
    let store = db.store();
    // Several rounds: writers queueing on one stream must never be refused for the order in
    // which they took their transaction ids.
    for _ in 0..10 {
        let s = product();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.append(s, ExpectedVersion::Any, vec![event(i)]).await })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap().unwrap().version);
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    }
}

/// A transaction that wrote something else first and then appends with an expectation that
/// holds is not refused as a conflict (a conflict naming the same expected and actual version
/// is neither retryable nor true).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_whose_expectation_holds_is_never_refused_for_its_transactions_age() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = product();
    store.append(s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    let app = |stream, expected, e| StreamAppend { stream, expected, events: vec![e] };

    let mut tx_b = store.pool().begin().await.unwrap();
    EventStore::append_in(&mut tx_b, vec![app(product(), ExpectedVersion::Any, event(1))], None).await.unwrap();
    let a_store = store.clone();
    let a = tokio::spawn(async move { a_store.append(s, ExpectedVersion::Any, vec![event(2)]).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let current: i64 = sqlx::query_scalar("SELECT version FROM streams WHERE category = $1 AND stream_id = $2")
        .bind(s.category.as_str())
        .bind(s.id)
        .fetch_one(&mut *tx_b)
        .await
        .unwrap();
    let appended =
        EventStore::append_in(&mut tx_b, vec![app(s, ExpectedVersion::Exact(current), event(3))], None).await;
    if let Err(AppendError::Conflict { expected, actual, .. }) = &appended {
        assert_ne!(expected.version(), Some(*actual), "refused although the stream was at the expected version");
    }
    assert!(appended.is_ok(), "{appended:?}");
    tx_b.commit().await.unwrap();
    a.await.unwrap().unwrap();
    assert_eq!(store.stream_version(s).await.unwrap(), 3);
}
