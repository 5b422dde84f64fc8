use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ordo_event_store::testing::TestDb;
use ordo_event_store::{EventStore, ExpectedVersion, LogCursor, RecordedEvent, StreamAppend};
use uuid::Uuid;

use crate::{event, product};

/// Reads everything the commit-safe reader will give right now.
async fn drain(store: &EventStore, cursor: &mut LogCursor) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    loop {
        let (batch, next) = store.read_all(*cursor, 7).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        *cursor = next;
        out.extend(batch);
    }
}

/// Reads until `want` events arrived or a deadline passes. Other tests' transactions on the same
/// server also hold the horizon back for a moment, so delivery is awaited, never assumed instant.
async fn drain_until(store: &EventStore, cursor: &mut LogCursor, want: usize) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < want && tokio::time::Instant::now() < deadline {
        out.extend(drain(store, cursor).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.extend(drain(store, cursor).await);
    out
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_an_append_is_held_open_a_later_one_waits_so_positions_follow_commit_order() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut cursor = LogCursor::START;

    // A takes its position first and stays open, holding the writer lock.
    let mut tx_a = store.pool().begin().await.unwrap();
    let a = EventStore::append_in(
        &mut tx_a,
        vec![StreamAppend { stream: product(), expected: ExpectedVersion::NoStream, events: vec![event(1)] }],
        None,
    )
    .await
    .unwrap();
    // B waits for the writer lock instead of committing in front of A.
    let b_store = store.clone();
    let b = tokio::spawn(async move { b_store.append(product(), ExpectedVersion::NoStream, vec![event(2)]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_finished(), "B appended while A held the writer lock");
    let seen = drain(&store, &mut cursor).await;
    assert!(seen.is_empty(), "nothing is visible while A is open, saw {:?}", ids(&seen));

    tx_a.commit().await.unwrap();
    let b = b.await.unwrap().unwrap();
    assert!(b.first_position > a[0].first_position);
    let seen = drain_until(&store, &mut cursor, 2).await;
    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![a[0].first_position, b.first_position], "both delivered, once, in commit order");
    assert!(drain(&store, &mut cursor).await.is_empty(), "nothing is delivered twice");
}

#[tokio::test]
async fn a_rolled_back_transaction_is_never_delivered_and_does_not_block_others() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut cursor = LogCursor::START;

    let mut tx_a = store.pool().begin().await.unwrap();
    EventStore::append_in(
        &mut tx_a,
        vec![StreamAppend { stream: product(), expected: ExpectedVersion::NoStream, events: vec![event(1)] }],
        None,
    )
    .await
    .unwrap();
    let b_store = store.clone();
    let b = tokio::spawn(async move { b_store.append(product(), ExpectedVersion::NoStream, vec![event(2)]).await });
    assert!(drain(&store, &mut cursor).await.is_empty());

    tx_a.rollback().await.unwrap();
    let b = b.await.unwrap().unwrap();
    let seen = drain_until(&store, &mut cursor, 1).await;
    assert_eq!(seen.iter().map(|e| e.position).collect::<Vec<_>>(), vec![b.first_position]);
}

/// Many writers commit and roll back in random interleavings while a reader tails the log;
/// the reader must see exactly the committed events, each once, and per stream in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_many_interleavings_the_reader_sees_every_committed_event_exactly_once() {
    let db = TestDb::new().await;
    let store = db.store();
    let writers = 12;
    let per_writer = 25;

    let reader_store = store.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        let mut cursor = LogCursor::START;
        let mut seen = Vec::new();
        loop {
            let stop = *stop_rx.borrow();
            let batch = drain(&reader_store, &mut cursor).await;
            seen.extend(batch);
            if stop {
                return (seen, cursor);
            }
            tokio::select! {
                _ = stop_rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    });

    let mut handles = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            let streams = [product(), product()];
            for i in 0..per_writer {
                let stream = streams[i % 2];
                let events = vec![event(i as i64), event(i as i64 + 1)];
                let event_ids: Vec<Uuid> = events.iter().map(|e| e.metadata.event_id).collect();
                let mut tx = store.pool().begin().await.unwrap();
                EventStore::append_in(
                    &mut tx,
                    vec![StreamAppend { stream, expected: ExpectedVersion::Any, events }],
                    None,
                )
                .await
                .unwrap();
                // Hold the transaction open for a varying time so commits overtake each other.
                let hold = ((w * 7 + i * 13) % 5) as u64;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                if (w + i) % 6 == 0 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    committed.extend(event_ids);
                }
            }
            committed
        }));
    }
    let mut committed = HashSet::new();
    for h in handles {
        committed.extend(h.await.unwrap());
    }
    // Stop the concurrent reader, then let it catch up with everything committed.
    stop_tx.send(true).unwrap();
    let (mut seen, mut cursor) = reader.await.unwrap();
    let missing = committed.len().saturating_sub(seen.len());
    seen.extend(drain_until(&store, &mut cursor, missing).await);

    let seen_ids = ids(&seen);
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "an event was delivered twice");
    assert_eq!(unique, committed, "the reader saw a different set than what committed");

    let mut last_version: HashMap<_, i64> = HashMap::new();
    for e in &seen {
        let last = last_version.entry(e.stream).or_insert(0);
        assert!(e.version > *last, "stream {} went from version {} to {}", e.stream, last, e.version);
        *last = e.version;
    }
}

#[tokio::test]
async fn the_session_holding_the_writer_lock_is_named() {
    let db = TestDb::new().await;
    let store = db.store();
    assert_eq!(store.writer_lock_holder().await.unwrap(), None);

    let mut tx_a = store.pool().begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx_a).await.unwrap();
    EventStore::append_in(
        &mut tx_a,
        vec![StreamAppend { stream: product(), expected: ExpectedVersion::NoStream, events: vec![event(1)] }],
        None,
    )
    .await
    .unwrap();
    let holder = store.writer_lock_holder().await.unwrap().expect("a holder");
    assert_eq!(holder.pid, pid);
    assert_eq!(holder.state, "idle in transaction");
    assert!(holder.held_seconds >= 0.0);
    tx_a.commit().await.unwrap();
    assert_eq!(store.writer_lock_holder().await.unwrap(), None);
}

#[tokio::test]
async fn checkpoints_round_trip_and_start_at_the_beginning() {
    let db = TestDb::new().await;
    let store = db.store();
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), LogCursor::START);
    store.save_checkpoint("relay", LogCursor::at(7)).await.unwrap();
    store.save_checkpoint("relay", LogCursor::at(9)).await.unwrap();
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), LogCursor::at(9));
    assert_eq!("9".parse::<LogCursor>().unwrap(), LogCursor::at(9));
    assert_eq!(LogCursor::at(9).to_string(), "9");
}

/// A transaction that appends, then appends again to another stream, keeps the writer lock the
/// whole time: a writer that came in between appends after it, in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_appending_twice_keeps_the_writer_lock_and_others_follow_in_version_order() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = product();
    let x = product();
    store.append(s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    let app = |stream, e| StreamAppend { stream, expected: ExpectedVersion::Any, events: vec![e] };

    let mut tx_b = store.pool().begin().await.unwrap();
    EventStore::append_in(&mut tx_b, vec![app(x, event(1))], None).await.unwrap();
    let a_store = store.clone();
    let a = tokio::spawn(async move { a_store.append(s, ExpectedVersion::Any, vec![event(3)]).await });
    tokio::time::sleep(Duration::from_millis(200)).await; // A waits for the writer lock
    EventStore::append_in(&mut tx_b, vec![app(s, event(2))], None).await.unwrap();
    tx_b.commit().await.unwrap();
    assert_eq!(a.await.unwrap().unwrap().version, 3);

    let mut cursor = LogCursor::START;
    let seen = drain_until(&store, &mut cursor, 4).await;
    let order: Vec<i64> = seen.iter().filter(|e| e.stream == s).map(|e| e.version).collect();
    assert_eq!(order, vec![1, 2, 3]);
}

#[tokio::test]
async fn reading_from_the_head_cursor_yields_only_events_appended_after_it() {
    let db = TestDb::new().await;
    let store = db.store();
    assert_eq!(store.head_cursor().await.unwrap(), LogCursor::START);
    let s = product();
    store.append(s, ExpectedVersion::NoStream, vec![event(1), event(2)]).await.unwrap();
    let mut everything = LogCursor::START;
    assert_eq!(drain_until(&store, &mut everything, 2).await.len(), 2);

    let head = store.head_cursor().await.unwrap();
    assert_eq!(head, everything, "the head is where a reader of the whole log stands after reading it");
    assert_eq!(store.backlog(head).await.unwrap().events, 0);
    let later = store.append(s, ExpectedVersion::Exact(2), vec![event(3)]).await.unwrap();
    let backlog = store.backlog(head).await.unwrap();
    assert_eq!(backlog.events, 1);
    assert!(backlog.oldest_seconds >= 0.0);
    let mut cursor = head;
    let seen = drain_until(&store, &mut cursor, 1).await;
    assert_eq!(seen.iter().map(|e| e.position).collect::<Vec<_>>(), vec![later.first_position]);
}
