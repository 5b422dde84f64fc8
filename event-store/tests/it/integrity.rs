use ordo_event_store::error::sqlstate;
use ordo_event_store::testing::TestDb;
use ordo_event_store::verify::{prove_digest, verify, LinkProblem};
use ordo_event_store::{ExpectedVersion, StreamRef};
use sqlx::PgPool;

use crate::{event, product};

async fn stream_with(db: &TestDb, n: i64) -> StreamRef {
    let s = product();
    db.store().append(s, ExpectedVersion::NoStream, (1..=n).map(event).collect()).await.unwrap();
    s
}

/// Runs `sql` with the append-only trigger disabled, as an attacker with table ownership could.
async fn tamper(pool: &PgPool, sql: &str, s: StreamRef) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    sqlx::query(sql).bind(s.id).execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn update_delete_and_truncate_of_events_are_refused_by_the_database() {
    let db = TestDb::new().await;
    stream_with(&db, 2).await;
    for sql in ["UPDATE events SET data = '{}'::jsonb", "DELETE FROM events WHERE version = 1", "TRUNCATE events"] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        let code = ordo_event_store::error::sqlstate_of(&err);
        assert_eq!(code.as_deref(), Some(sqlstate::APPEND_ONLY), "{sql}: {err}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn an_untouched_log_verifies() {
    let db = TestDb::new().await;
    stream_with(&db, 3).await;
    stream_with(&db, 1).await;
    let report = verify(&db.pool, None, None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 4);
    assert_eq!(report.streams, 2);
}

#[tokio::test]
async fn a_changed_payload_is_located_at_exactly_its_stream_and_version() {
    let db = TestDb::new().await;
    let s = stream_with(&db, 4).await;
    let other = stream_with(&db, 2).await;
    tamper(&db.pool, "UPDATE events SET data = '{\"delta\": 999}' WHERE stream_id = $1 AND version = 3", s).await;

    let report = verify(&db.pool, None, None).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.broken.len(), 1, "{:?}", report.broken);
    let b = &report.broken[0];
    assert_eq!((b.stream_id, b.version), (s.id, 3));
    assert!(matches!(b.problem, LinkProblem::HashMismatch { .. }));
    assert!(verify(&db.pool, Some(other.category), Some(other.id)).await.unwrap().ok);
}

#[tokio::test]
async fn a_deleted_event_is_reported_as_missing_versions() {
    let db = TestDb::new().await;
    let s = stream_with(&db, 4).await;
    tamper(&db.pool, "DELETE FROM events WHERE stream_id = $1 AND version = 2", s).await;
    let report = verify(&db.pool, Some(s.category), Some(s.id)).await.unwrap();
    assert_eq!(report.broken.len(), 1, "{:?}", report.broken);
    assert_eq!(report.broken[0].version, 3);
    assert_eq!(report.broken[0].problem, LinkProblem::MissingVersions { from: 2, to: 2 });
}

#[tokio::test]
async fn a_deleted_last_event_is_reported_against_the_stream_head() {
    let db = TestDb::new().await;
    let s = stream_with(&db, 3).await;
    tamper(&db.pool, "DELETE FROM events WHERE stream_id = $1 AND version = 3", s).await;
    let report = verify(&db.pool, None, None).await.unwrap();
    assert_eq!(report.broken.len(), 1, "{:?}", report.broken);
    assert_eq!(report.broken[0].problem, LinkProblem::HeadMismatch { head_version: 3, last_version: Some(2) });
}

#[tokio::test]
async fn a_stream_emptied_of_its_events_and_a_rewritten_head_are_each_reported_once_by_every_scope() {
    let db = TestDb::new().await;
    let emptied = stream_with(&db, 2).await;
    let rewritten = stream_with(&db, 3).await;
    let untouched = stream_with(&db, 2).await;
    tamper(&db.pool, "DELETE FROM events WHERE stream_id = $1", emptied).await;
    sqlx::query("UPDATE streams SET head_hash = sha256(head_hash) WHERE stream_id = $1")
        .bind(rewritten.id)
        .execute(&db.pool)
        .await
        .unwrap();

    let whole = verify(&db.pool, None, None).await.unwrap();
    let found: Vec<_> = whole.broken.iter().map(|b| (b.stream_id, b.version, b.problem.clone())).collect();
    let mut expected = vec![
        (emptied.id, 2, LinkProblem::HeadMismatch { head_version: 2, last_version: None }),
        (rewritten.id, 3, LinkProblem::HeadMismatch { head_version: 3, last_version: Some(3) }),
    ];
    expected.sort_by_key(|(id, _, _)| *id);
    assert_eq!(found, expected);
    assert_eq!(whole.checked, 5, "the emptied stream has no events left to check");

    let category = verify(&db.pool, Some(emptied.category), None).await.unwrap();
    assert_eq!(category.broken, whole.broken);
    for (s, version, last) in [(emptied, 2, None), (rewritten, 3, Some(3))] {
        let one = verify(&db.pool, Some(s.category), Some(s.id)).await.unwrap();
        assert_eq!(one.broken.len(), 1, "{:?}", one.broken);
        assert_eq!(one.broken[0].problem, LinkProblem::HeadMismatch { head_version: version, last_version: last });
    }
    assert!(verify(&db.pool, Some(untouched.category), Some(untouched.id)).await.unwrap().ok);
}

#[tokio::test]
async fn two_swapped_events_are_both_reported() {
    let db = TestDb::new().await;
    let s = stream_with(&db, 4).await;
    tamper(
        &db.pool,
        "UPDATE events e SET data = o.data FROM events o \
         WHERE e.stream_id = $1 AND o.stream_id = $1 AND e.version + o.version = 5 AND e.version IN (2, 3)",
        s,
    )
    .await;
    let report = verify(&db.pool, None, None).await.unwrap();
    let versions: Vec<i64> = report.broken.iter().map(|b| b.version).collect();
    assert_eq!(versions, vec![2, 3], "{:?}", report.broken);
}

#[tokio::test]
async fn a_saved_digest_is_extended_by_new_events_and_refuted_by_tampering_before_it() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = stream_with(&db, 3).await;
    let head = store.read_stream(s, 3).await.unwrap().remove(0);
    let digest = hex::encode(&head.hash);

    store.append(s, ExpectedVersion::Exact(3), vec![event(4), event(5)]).await.unwrap();
    let proof = prove_digest(&db.pool, s, 3, &digest).await.unwrap();
    assert!(proof.extends, "{proof:?}");
    assert_eq!(proof.current_version, 5);

    tamper(&db.pool, "UPDATE events SET data = '{\"delta\": 0}' WHERE stream_id = $1 AND version = 2", s).await;
    let proof = prove_digest(&db.pool, s, 3, &digest).await.unwrap();
    assert!(!proof.extends);
    assert_eq!(proof.broken.first().map(|b| b.version), Some(2));
}
