//! The shared log reader behind `/v1/log/events`, driven directly: one reader serves many
//! subscribers, and a subscriber that falls out of the broadcast ring catches up from the
//! database on its own cursor without gap or duplicate.

use std::time::Duration;

use futures::StreamExt;
use ordo_event_store::testing::TestDb;
use ordo_event_store::ExpectedVersion;
use ordo_query_api::log_feed::{FeedOptions, Filter, Item, LogFeed, Start};
use ordo_schemas::StreamCategory;
use ordo_service::shutdown::Shutdown;
use tokio::time::timeout;

use crate::log_stream::{event, stream};

fn options(buffer: usize) -> FeedOptions {
    FeedOptions { poll: Duration::from_millis(5), page: 50, buffer, ..FeedOptions::default() }
}

async fn versions(items: &mut (impl futures::Stream<Item = Item> + Unpin), n: usize) -> Vec<i64> {
    let mut out = Vec::new();
    while out.len() < n {
        match timeout(Duration::from_secs(30), items.next()).await {
            Ok(Some(Item::Event(e))) => {
                let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                out.push(v["version"].as_i64().unwrap());
            }
            Ok(Some(Item::Progress(_))) => {}
            other => panic!("after {} events: {other:?}", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_out_of_the_ring_catches_up_from_the_database_without_gap_or_duplicate() {
    let db = TestDb::new().await;
    let store = db.store();
    let stop = Shutdown::new();
    let feed = LogFeed::start(store.clone(), options(2), stop.clone()).await.unwrap();
    let s = stream(StreamCategory::Order);
    let mut slow = Box::pin(feed.subscribe(Start::Now, Filter::default()).unwrap());
    assert!(matches!(slow.next().await, Some(Item::Progress(_))));
    let other = Box::pin(feed.subscribe(Start::Now, Filter::default()).unwrap());

    // 60 commits while `slow` takes nothing: the shared reader broadcasts far more batches than
    // the ring of 2 keeps.
    for v in 0..60 {
        let expected = if v == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(v) };
        store.append(s, expected, vec![event(v)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = feed.stats();
    assert!(before.shared_reads >= 3, "{before:?}");
    assert_eq!(before.catch_up_reads, 0, "{before:?}");
    assert_eq!(versions(&mut slow, 60).await, (1..=60).collect::<Vec<_>>());
    let after = feed.stats();
    assert!(after.catch_up_reads > 0, "the slow subscriber read the database: {after:?}");
    assert_eq!(after.subscribers, 2);
    drop(other);
    assert_eq!(feed.stats().subscribers, 1, "a dropped subscription frees its slot");
    stop.trigger();
    assert!(timeout(Duration::from_secs(5), slow.next()).await.unwrap().is_none(), "subscriptions end on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_live_subscribers_share_one_reader_instead_of_each_polling_the_database() {
    let db = TestDb::new().await;
    let store = db.store();
    let stop = Shutdown::new();
    let feed = LogFeed::start(store.clone(), options(64), stop.clone()).await.unwrap();
    let mut subs: Vec<_> = (0..20)
        .map(|_| {
            Box::pin(
                feed.subscribe(
                    Start::Now,
                    Filter { types: Some(vec!["CustomerRegistered".into()]), ..Filter::default() },
                )
                .unwrap(),
            )
        })
        .collect();
    let s = stream(StreamCategory::Customer);
    for v in 0..10 {
        let expected = if v == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(v) };
        store.append(s, expected, vec![event(v)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for sub in &mut subs {
        assert_eq!(versions(sub, 10).await, (1..=10).collect::<Vec<_>>());
    }
    let stats = feed.stats();
    // Each live subscriber joined at the head: none had anything to read on its own cursor.
    assert_eq!(stats.catch_up_reads, 0, "{stats:?}");
    assert!(stats.shared_reads > 0);
    stop.trigger();
}
