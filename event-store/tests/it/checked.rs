//! Batches decided by the writer on the heads it knows and checked by the database under the
//! writer lock (ADR 0032): a head that another writer moved, a clock behind the log's, and hashes
//! computed by the writer beside hashes computed by the database.

use ordo_event_store::testing::TestDb;
use ordo_event_store::verify::verify;
use ordo_event_store::{AppendError, EventStore, ExpectedVersion, StreamAppend, WriterOptions};

use crate::{event, product};

fn deciding_in_database(pool: &sqlx::PgPool) -> EventStore {
    EventStore::with_writer_options(pool.clone(), WriterOptions { decide_in_database: true, ..Default::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_known_head_another_writer_moved_refuses_and_appends_on_the_true_head() {
    let db = TestDb::new().await;
    // Two stores are two writers, as two command APIs would be; each knows the heads it wrote.
    let a = EventStore::new(db.pool.clone());
    let b = EventStore::new(db.pool.clone());
    let s = product();

    assert_eq!(a.append(s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap().version, 1);
    assert_eq!(b.append(s, ExpectedVersion::Exact(1), vec![event(2)]).await.unwrap().version, 2);

    // `a` still knows version 1: the database says otherwise and `a` answers on the truth.
    match a.append(s, ExpectedVersion::Exact(1), vec![event(3)]).await {
        Err(AppendError::Conflict { actual, .. }) => assert_eq!(actual, 2),
        other => panic!("expected a conflict at version 2, got {other:?}"),
    }
    assert_eq!(a.append(s, ExpectedVersion::Exact(2), vec![event(3)]).await.unwrap().version, 3);
    // `Any` appends after whatever the head is, whichever writer knew it.
    assert_eq!(b.append(s, ExpectedVersion::Any, vec![event(4), event(5)]).await.unwrap().version, 5);
    assert_eq!(a.append(s, ExpectedVersion::Any, vec![event(6)]).await.unwrap().version, 6);
    // A head hash the writer states is checked too: the true hash of version 6 passes, another not.
    let head = a.read_stream(s, 6).await.unwrap().pop().unwrap().hash;
    let stated = <[u8; 32]>::try_from(head.as_slice()).unwrap();
    let appended = b.append(s, ExpectedVersion::Head { version: 6, hash: Some(stated) }, vec![event(7)]).await.unwrap();
    assert_eq!(appended.version, 7);
    match a.append(s, ExpectedVersion::Head { version: 7, hash: Some([7; 32]) }, vec![event(8)]).await {
        Err(AppendError::Conflict { actual, .. }) => assert_eq!(actual, 7),
        other => panic!("expected a conflict on the head hash, got {other:?}"),
    }

    let versions: Vec<i64> = a.read_stream(s, 1).await.unwrap().iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=7).collect::<Vec<_>>());
    let report = verify(&db.pool, None, None).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_computed_by_the_writer_and_by_the_database_chain_into_one_verifiable_stream() {
    let db = TestDb::new().await;
    let writer = EventStore::new(db.pool.clone());
    let database = deciding_in_database(&db.pool);
    let s = product();
    for round in 0..3 {
        writer.append(s, ExpectedVersion::Any, vec![event(round), event(round + 1)]).await.unwrap();
        database.append(s, ExpectedVersion::Any, vec![event(round)]).await.unwrap();
        let mut tx = db.pool.begin().await.unwrap();
        EventStore::append_in(
            &mut tx,
            vec![StreamAppend { stream: s, expected: ExpectedVersion::Any, events: vec![event(round)] }],
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let stored = writer.read_stream(s, 1).await.unwrap();
    assert_eq!(stored.len(), 12);
    let report = verify(&db.pool, Some(s.category), Some(s.id)).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_recorded_later_than_the_writers_clock_never_makes_recorded_at_go_backwards() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let s = product();
    store.append(s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    // Another writer whose clock runs an hour ahead recorded the last event of the log.
    let ahead = product();
    sqlx::query(
        "INSERT INTO events (category, stream_id, version, event_id, event_type, schema_version, data, metadata, \
         recorded_at, prev_hash, hash) \
         VALUES ('product', $1, 1, gen_random_uuid(), 'StockAdjusted', 1, '{}', '{}', now() + interval '1 hour', \
         NULL, '\\x00')",
    )
    .bind(ahead.id)
    .execute(&db.pool)
    .await
    .unwrap();
    let latest: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(recorded_at) FROM events").fetch_one(&db.pool).await.unwrap();

    let appended = store.append(s, ExpectedVersion::Exact(1), vec![event(2)]).await.unwrap();
    assert!(
        appended.recorded_at >= latest,
        "{} is earlier than the log's last event at {latest}",
        appended.recorded_at
    );
    let stored = store.read_stream(s, 2).await.unwrap().pop().unwrap();
    assert_eq!(stored.recorded_at, appended.recorded_at);
    let report = verify(&db.pool, Some(s.category), Some(s.id)).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_commit_synchronously_even_where_the_default_is_asynchronous() {
    let db = TestDb::new().await;
    // What each append's transaction had as synchronous_commit, recorded by a trigger.
    sqlx::query("CREATE TABLE commit_modes (mode TEXT NOT NULL)").execute(&db.pool).await.unwrap();
    sqlx::query(
        "CREATE FUNCTION record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         INSERT INTO commit_modes VALUES (current_setting('synchronous_commit')); RETURN NULL; END $$",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER record_commit_mode AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION record_commit_mode()",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    // An operator's default of asynchronous commits, as the pool's connections get it.
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let relaxed = sqlx::PgPool::connect_with(options.options([("synchronous_commit", "off")])).await.unwrap();
    let shown: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&relaxed).await.unwrap();
    assert_eq!(shown, "off");

    // Both the writer's decision and the database's: each append is durable when answered.
    let s = product();
    EventStore::new(relaxed.clone()).append(s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    deciding_in_database(&relaxed).append(s, ExpectedVersion::Exact(1), vec![event(2)]).await.unwrap();
    let modes: Vec<String> = sqlx::query_scalar("SELECT mode FROM commit_modes").fetch_all(&db.pool).await.unwrap();
    assert_eq!(modes, ["on", "on"]);
    relaxed.close().await;
}
