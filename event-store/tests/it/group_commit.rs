//! Group commit: requests queued together are appended in one statement, and each is answered
//! as if it had run alone.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ordo_event_store::search::{search, LogQuery};
use ordo_event_store::testing::TestDb;
use ordo_event_store::{
    AppendError, AppendRequest, EventStore, ExpectedVersion, IdempotencyRecord, LogCursor, StreamAppend, UniqueClaim,
};
use ordo_schemas::{StreamCategory, StreamRef};
use uuid::Uuid;

use crate::{event, product};

fn record(key: &str, hash: u8) -> IdempotencyRecord {
    IdempotencyRecord {
        scope: "tester".into(),
        key: key.into(),
        request_hash: vec![hash; 4],
        response_status: 201,
        response_body: serde_json::json!({ "key": key }),
    }
}

fn claim(value: &str) -> UniqueClaim {
    UniqueClaim { kind: "product_sku".into(), value: value.into() }
}

fn single(stream: StreamRef, expected: ExpectedVersion, n: usize) -> AppendRequest {
    AppendRequest::single(stream, expected, (0..n).map(|i| event(i as i64)).collect())
}

/// Holds the writer lock in an open transaction until the returned sender fires, and waits
/// until `store`'s writer is queued behind it (so what is submitted next lands in one batch).
async fn hold_writer_lock(store: &EventStore) -> tokio::sync::oneshot::Sender<()> {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let mut tx = store.pool().begin().await.unwrap();
    EventStore::append_in(
        &mut tx,
        vec![StreamAppend { stream: product(), expected: ExpectedVersion::Any, events: vec![event(0)] }],
        None,
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        let _ = released.await;
        tx.commit().await.unwrap();
    });
    // A first request makes the writer wait on the lock.
    let blocker = store.clone();
    tokio::spawn(async move { blocker.submit(single(product(), ExpectedVersion::NoStream, 1)).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ordo-writer' AND wait_event_type = 'Lock'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting > 0 {
            return release;
        }
        assert!(tokio::time::Instant::now() < deadline, "the writer never waited for the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_every_request_as_if_it_ran_alone() {
    let db = TestDb::new().await;
    let store = db.store();
    let existing = product();
    store.append(existing, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    let used = record("used", 1);
    store
        .append_many(
            vec![StreamAppend { stream: product(), expected: ExpectedVersion::Any, events: vec![event(1)] }],
            Some(&used),
        )
        .await
        .unwrap();
    let mut claimed = single(product(), ExpectedVersion::NoStream, 1);
    claimed.claim = Some(claim("m:taken"));
    store.submit(claimed).await.unwrap();

    let fresh = product();
    let (multi_a, multi_b) = (product(), product());
    let (atomic_new, atomic_bad) = (product(), existing);
    let mut reused_key = single(product(), ExpectedVersion::NoStream, 1);
    reused_key.idempotency = Some(record("used", 9));
    let mut taken_claim = single(product(), ExpectedVersion::NoStream, 1);
    taken_claim.claim = Some(claim("m:taken"));
    let mut new_claim = single(product(), ExpectedVersion::NoStream, 1);
    new_claim.claim = Some(claim("m:new"));
    let requests = vec![
        single(fresh, ExpectedVersion::NoStream, 2),
        single(existing, ExpectedVersion::Exact(5), 1),
        reused_key,
        taken_claim,
        AppendRequest {
            appends: vec![
                StreamAppend { stream: atomic_new, expected: ExpectedVersion::NoStream, events: vec![event(1)] },
                StreamAppend { stream: atomic_bad, expected: ExpectedVersion::NoStream, events: vec![event(1)] },
            ],
            idempotency: None,
            claim: None,
        },
        AppendRequest {
            appends: vec![
                StreamAppend { stream: multi_a, expected: ExpectedVersion::NoStream, events: vec![event(1)] },
                StreamAppend { stream: multi_b, expected: ExpectedVersion::Any, events: vec![event(1), event(2)] },
            ],
            idempotency: Some(record("new", 2)),
            claim: None,
        },
        // Expects what the first request of the batch appends.
        single(fresh, ExpectedVersion::Exact(2), 1),
        new_claim,
    ];

    let release = hold_writer_lock(&store).await;
    let batch_store = store.clone();
    let answers = tokio::spawn(async move { batch_store.submit_all(requests).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    let answers = answers.await.unwrap();

    let ok = |i: usize| answers[i].as_ref().unwrap_or_else(|e| panic!("request {i}: {e}"));
    assert_eq!(ok(0)[0].version, 2);
    assert!(matches!(answers[1], Err(AppendError::Conflict { actual: 1, .. })), "{:?}", answers[1]);
    match &answers[2] {
        Err(AppendError::IdempotencyKeyTaken { stored: Some(stored), .. }) => assert_eq!(**stored, used),
        other => panic!("a reused key answers with the stored record, got {other:?}"),
    }
    assert!(matches!(&answers[3], Err(AppendError::ClaimTaken { value, .. }) if value == "m:taken"));
    assert!(matches!(answers[4], Err(AppendError::Conflict { actual: 1, .. })), "{:?}", answers[4]);
    assert_eq!(ok(5).len(), 2);
    assert_eq!(ok(6)[0].version, 3, "a request may expect what an earlier one in the batch appended");
    assert_eq!(ok(7)[0].version, 1);

    // One statement, one clock: every accepted event of the batch carries the same recorded_at.
    let stamps: HashSet<_> = [&answers[0], &answers[5], &answers[6], &answers[7]]
        .iter()
        .flat_map(|a| a.as_ref().unwrap().iter().map(|s| s.recorded_at))
        .collect();
    assert_eq!(stamps.len(), 1, "the requests were appended in one batch");

    assert_eq!(store.stream_version(atomic_new).await.unwrap(), 0, "a refused multi-stream request wrote nothing");
    assert_eq!(store.stream_version(existing).await.unwrap(), 1);
    assert_eq!(store.stream_version(multi_b).await.unwrap(), 2);
    let stored = store.find_idempotency("tester", "new").await.unwrap();
    assert_eq!(stored, Some(record("new", 2)));
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM unique_claims").fetch_one(store.pool()).await.unwrap();
    assert_eq!(claims, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_with_one_idempotency_key_in_a_batch_append_once_and_the_second_gets_the_stored_answer() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = (product(), product());
    let mut first = single(a, ExpectedVersion::NoStream, 1);
    first.idempotency = Some(record("twice", 7));
    let mut second = single(b, ExpectedVersion::NoStream, 1);
    second.idempotency = Some(record("twice", 7));

    let release = hold_writer_lock(&store).await;
    let batch_store = store.clone();
    let answers = tokio::spawn(async move { batch_store.submit_all(vec![first, second]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    let answers = answers.await.unwrap();

    assert_eq!(answers[0].as_ref().unwrap()[0].version, 1);
    match &answers[1] {
        Err(AppendError::IdempotencyKeyTaken { stored: Some(stored), .. }) => assert_eq!(**stored, record("twice", 7)),
        other => panic!("the repeat answers with the stored record, got {other:?}"),
    }
    assert_eq!(store.stream_version(b).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_refuses_fails_alone_and_the_rest_of_its_batch_appends() {
    let db = TestDb::new().await;
    let store = db.store();
    let (good_a, bad, good_b) = (product(), product(), product());
    let mut poisoned = event(1);
    // jsonb refuses the NUL character.
    poisoned.data = serde_json::json!({ "note": "nul \u{0000} inside" });
    let requests = vec![
        single(good_a, ExpectedVersion::NoStream, 1),
        AppendRequest::single(bad, ExpectedVersion::NoStream, vec![poisoned]),
        single(good_b, ExpectedVersion::NoStream, 1),
    ];
    let release = hold_writer_lock(&store).await;
    let batch_store = store.clone();
    let answers = tokio::spawn(async move { batch_store.submit_all(requests).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    let answers = answers.await.unwrap();

    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    assert!(matches!(answers[1], Err(AppendError::Store(_))), "{:?}", answers[1]);
    assert_eq!(store.stream_version(bad).await.unwrap(), 0);
}

/// Several writers (each its own store, as separate processes are) appending to one contended
/// stream: recorded_at never goes backwards from one version to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorded_at_never_goes_backwards_within_a_contended_stream() {
    let db = TestDb::new().await;
    let s = product();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let store = EventStore::new(db.pool.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..60 {
                store.append(s, ExpectedVersion::Any, vec![event(i)]).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let events = db.store().read_stream(s, 1).await.unwrap();
    assert_eq!(events.len(), 480);
    let backwards: Vec<i64> =
        events.windows(2).filter(|w| w[1].recorded_at < w[0].recorded_at).map(|w| w[1].version).collect();
    assert!(backwards.is_empty(), "versions stamped earlier than their predecessor: {backwards:?}");
}

/// A search paged by position (the audit API and `ordo export` page this way) never skips an
/// event that was still uncommitted when an earlier page was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_by_position_never_skips_an_event_that_committed_late() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut tx_a = store.pool().begin().await.unwrap();
    let a = EventStore::append_in(
        &mut tx_a,
        vec![StreamAppend { stream: product(), expected: ExpectedVersion::NoStream, events: vec![event(1)] }],
        None,
    )
    .await
    .unwrap();
    let b_store = store.clone();
    let b = tokio::spawn(async move { b_store.append(product(), ExpectedVersion::NoStream, vec![event(2)]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let query = LogQuery::default();
    let mut seen = Vec::new();
    let mut after = 0;
    let page = search(store.pool(), &query, after, 1).await.unwrap();
    if let Some(last) = page.last() {
        after = last.position;
    }
    seen.extend(page.iter().map(|e| e.position));
    tx_a.commit().await.unwrap();
    let b = b.await.unwrap().unwrap();
    loop {
        let page = search(store.pool(), &query, after, 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        seen.extend(page.iter().map(|e| e.position));
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![a[0].first_position, b.first_position].into_iter().collect::<Vec<_>>());
}

/// The body of one writer process of the test below: appends to its own streams and to shared
/// ones, then exits. Does nothing unless started by that test.
#[tokio::test]
#[ignore = "a child process of three_processes_appending_while_a_reader_follows"]
async fn writer_process() {
    let (Ok(url), Ok(shared)) = (std::env::var("ORDO_TEST_WRITER_DB"), std::env::var("ORDO_TEST_WRITER_SHARED")) else {
        return;
    };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let store = EventStore::new(pool);
    let shared: Vec<StreamRef> =
        shared.split(',').map(|id| StreamRef::new(StreamCategory::Product, Uuid::parse_str(id).unwrap())).collect();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let own = product();
            for i in 0..100usize {
                let stream = if i % 3 == 0 { shared[(t + i) % shared.len()] } else { own };
                store.append(stream, ExpectedVersion::Any, vec![event(i as i64)]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_appending_while_a_reader_follows_see_every_event_once_in_stream_order() {
    let db = TestDb::new().await;
    let store = db.store();
    let shared: Vec<String> = (0..4).map(|_| Uuid::new_v4().to_string()).collect();
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(
            tokio::process::Command::new(&exe)
                .args(["--exact", "group_commit::writer_process", "--ignored", "--nocapture"])
                .env("ORDO_TEST_WRITER_DB", &db.url)
                .env("ORDO_TEST_WRITER_SHARED", shared.join(","))
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor = LogCursor::START;
    let mut running = children.len();
    while running > 0 {
        let (page, next) = store.read_all(cursor, 500).await.unwrap();
        cursor = next;
        seen.extend(page);
        running = 0;
        for child in &mut children {
            if child.try_wait().unwrap().is_none() {
                running += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for child in &mut children {
        assert!(child.wait().await.unwrap().success(), "a writer process failed");
    }
    loop {
        let (page, next) = store.read_all(cursor, 500).await.unwrap();
        if page.is_empty() {
            break;
        }
        cursor = next;
        seen.extend(page);
    }

    assert_eq!(seen.len(), 3 * 8 * 100, "every appended event is read");
    let unique: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(unique.len(), seen.len(), "an event was read twice");
    let mut last: HashMap<StreamRef, i64> = HashMap::new();
    for e in &seen {
        let v = last.entry(e.stream).or_insert(0);
        assert_eq!(e.version, *v + 1, "stream {} jumped from {} to {}", e.stream, v, e.version);
        *v = e.version;
    }
}

/// A chain of requests (each decided on the state the one before it leaves) is refused from the
/// first refused link on, even when a later link's expected version happens to match the log:
/// another writer appended as many events as the refused link would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_request_after_a_refused_one_is_refused_even_when_its_version_matches() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = product();
    let first = store.append(s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    // Another writer moves the stream from 1 to 2 behind the chain's back.
    EventStore::new(db.pool.clone()).append(s, ExpectedVersion::Exact(1), vec![event(2)]).await.unwrap();

    // The chain was decided on version 1: its first link expects 1 (with its head hash), its
    // second expects 2, which is what the other writer left.
    let head: [u8; 32] = first.head_hash.as_slice().try_into().unwrap();
    let chain = vec![
        AppendRequest::single(s, ExpectedVersion::Head { version: 1, hash: Some(head) }, vec![event(3)]),
        AppendRequest::single(s, ExpectedVersion::Exact(2), vec![event(4)]),
    ];
    let answers = store.submit_chain(chain).await;
    assert!(matches!(answers[0], Err(AppendError::Conflict { actual: 2, .. })), "{:?}", answers[0]);
    assert!(matches!(answers[1], Err(AppendError::Conflict { .. })), "{:?}", answers[1]);
    assert_eq!(store.stream_version(s).await.unwrap(), 2, "nothing of the chain was appended");
}
