use std::time::Duration;

use ordo_event_store::testing::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

/// Proves the broker path end to end: an idempotent producer writes keyed messages with
/// headers and a consumer-group member reads them back in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_produced_through_rdkafka_is_consumed_back_with_key_and_headers() {
    let broker = Broker::start().await;
    broker.create_topics(&["ordo.smoke"], 3).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    for i in 0..5 {
        let payload = format!("{{\"n\":{i}}}");
        let headers = OwnedHeaders::new().insert(Header { key: "ordo-event-type", value: Some("Smoke") });
        producer
            .send(
                FutureRecord::to("ordo.smoke").key("stream-1").payload(&payload).headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let bootstrap = broker.bootstrap();
    let received = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "smoke")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&["ordo.smoke"]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        while got.len() < 5 && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let header = m.headers().and_then(|h| h.iter().next()).and_then(|h| h.value).map(|v| v.to_vec());
                got.push((
                    m.key().map(|k| k.to_vec()),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    header,
                ));
            }
        }
        got
    })
    .await
    .unwrap();

    assert_eq!(received.len(), 5, "consumed {received:?}");
    for (i, (key, payload, header)) in received.iter().enumerate() {
        assert_eq!(key.as_deref(), Some(&b"stream-1"[..]));
        assert_eq!(payload, &format!("{{\"n\":{i}}}"), "same key keeps its order");
        assert_eq!(header.as_deref(), Some(&b"Smoke"[..]));
    }
}

/// A broker that lost messages (it came back empty, and the topic was filled again from the
/// start) can hold a committed offset past the end of the partition: a stale commit that reached
/// it after the loss. librdkafka resets such a position only when the broker answers
/// OFFSET_OUT_OF_RANGE, which not every broker does; the consumer must notice by itself and read
/// the partition from its beginning, or it waits forever for messages that already exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_past_the_end_of_a_partition_is_read_again_from_its_beginning() {
    use ordo_event_store::kafka::{ConsumerSettings, EventConsumer};
    use rdkafka::{Offset, TopicPartitionList};

    let broker = Broker::start().await;
    broker.create_topics(&["ordo.lost"], 1).await;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().unwrap();
    for i in 0..3 {
        let payload = format!("{{\"n\":{i}}}");
        producer
            .send(FutureRecord::to("ordo.lost").key("k").payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let bootstrap = broker.bootstrap();
    tokio::task::spawn_blocking(move || {
        let stale: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "lost").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("ordo.lost", 0, Offset::Offset(40)).unwrap();
        stale.commit(&tpl, rdkafka::consumer::CommitMode::Sync).expect("commit a stale offset");
    })
    .await
    .unwrap();

    let settings = ConsumerSettings::new(broker.bootstrap(), "lost", &["ordo.lost"]);
    let mut consumer = EventConsumer::start(settings).unwrap();
    let mut offsets = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while offsets.len() < 3 {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Some(m)) => offsets.push(m.offset()),
            Ok(None) => panic!("the consumer stopped"),
            Err(_) => panic!("only {offsets:?} of the 3 messages arrived: the consumer waits past the partition's end"),
        }
    }
    assert_eq!(offsets, [0, 1, 2]);
    consumer.shutdown().await;
}

/// A broker that came back empty can receive a late commit of the old log (one in flight or
/// deferred when the broker went away) after the topic was created again. When that offset is
/// exactly the end of the new partition, nothing lies past the end and no message of the new
/// incarnation arrives at the position, so neither shows the partition was re-created. The
/// consumer knows the broker was (another partition brought a newer incarnation) and that it read
/// this partition in the older one, so it reads the partition again from its beginning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_of_the_old_log_at_the_end_of_a_re_created_partition_does_not_hide_it() {
    use ordo_event_store::kafka::{ConsumerSettings, EventConsumer};
    use ordo_schemas::envelope::headers;
    async fn publish(bootstrap: &str, partition: i32, incarnation: i64, count: usize) {
        let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
        let stamp = incarnation.to_string();
        for i in 0..count {
            let payload = format!("{{\"incarnation\":{incarnation},\"n\":{i}}}");
            let h = OwnedHeaders::new().insert(Header { key: headers::INCARNATION, value: Some(stamp.as_str()) });
            producer
                .send(
                    FutureRecord::to("ordo.reborn").partition(partition).key("k").payload(&payload).headers(h),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }

    /// Receives until `done` holds for what arrived: (partition, offset, incarnation).
    async fn receive(
        consumer: &mut EventConsumer,
        arrived: &mut Vec<(i32, i64, Option<i64>)>,
        done: impl Fn(&[(i32, i64, Option<i64>)]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done(arrived) {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Some(m)) => {
                    arrived.push((m.partition(), m.offset(), ordo_event_store::kafka::incarnation(&m)));
                    consumer.commit(&m);
                }
                Ok(None) => panic!("the consumer stopped"),
                Err(_) => panic!("what arrived, {arrived:?}, is not all of the re-created partitions"),
            }
        }
    }

    let mut broker = Broker::start().await;
    broker.create_topics(&["ordo.reborn"], 2).await;
    publish(&broker.bootstrap(), 0, 1, 2).await;
    publish(&broker.bootstrap(), 1, 1, 3).await;
    let mut consumer =
        EventConsumer::start(ConsumerSettings::new(broker.bootstrap(), "reborn", &["ordo.reborn"])).unwrap();
    let mut arrived = Vec::new();
    receive(&mut consumer, &mut arrived, |a| a.len() == 5).await;

    // The broker loses everything and the topic is created again. A commit of the old partition
    // 1 (3, its end then), handled late, reaches the new broker before the consumer is given the
    // partition there (it finds the topic at its next metadata refresh).
    broker.restart().await;
    broker.create_topics(&["ordo.reborn"], 2).await;
    consumer.commit_offset("ordo.reborn", 1, 3);
    // The relay publishes the log again: partition 1 gets as many messages as it had, partition
    // 0 more (events written since).
    publish(&broker.bootstrap(), 1, 2, 3).await;
    publish(&broker.bootstrap(), 0, 2, 4).await;

    let new = |a: &[(i32, i64, Option<i64>)], partition: i32, count: i64| {
        (0..count).all(|offset| a.contains(&(partition, offset, Some(2))))
    };
    receive(&mut consumer, &mut arrived, |a| new(a, 0, 4) && new(a, 1, 3)).await;
    consumer.shutdown().await;
}

/// A consumer process started after the broker came back empty has no memory of the old
/// partitions; the group's committed offset may be a late commit of the old log, here exactly at
/// the end of the re-created partition, so no message arrives to show it. The owner's stored
/// progress (the partition was read in incarnation 1) and the current incarnation (2, the relay's
/// record) show it: the partition is read from its beginning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_after_the_loss_reads_a_partition_stored_in_an_older_incarnation_from_its_beginning() {
    use ordo_event_store::kafka::{ConsumerSettings, EventConsumer, Progress};
    use ordo_schemas::envelope::headers;
    use rdkafka::{Offset, TopicPartitionList};

    let broker = Broker::start().await;
    broker.create_topics(&["ordo.again"], 1).await;
    // The re-created partition, republished in incarnation 2.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().unwrap();
    for i in 0..3 {
        let payload = format!("{{\"n\":{i}}}");
        let h = OwnedHeaders::new().insert(Header { key: headers::INCARNATION, value: Some("2") });
        producer
            .send(FutureRecord::to("ordo.again").key("k").payload(&payload).headers(h), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    // A late commit of the old partition, which held 3 messages too.
    let bootstrap = broker.bootstrap();
    tokio::task::spawn_blocking(move || {
        let stale: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "again").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("ordo.again", 0, Offset::Offset(3)).unwrap();
        stale.commit(&tpl, rdkafka::consumer::CommitMode::Sync).expect("commit a stale offset");
    })
    .await
    .unwrap();

    let progress = Progress::default();
    progress.record("ordo.again", 0, 1, 3);
    progress.set_current(2);
    let mut settings = ConsumerSettings::new(broker.bootstrap(), "again", &["ordo.again"]);
    settings.progress = Some(progress);
    let mut consumer = EventConsumer::start(settings).unwrap();
    let mut offsets = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while offsets.len() < 3 {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Some(m)) => offsets.push(m.offset()),
            Ok(None) => panic!("the consumer stopped"),
            Err(_) => panic!("only {offsets:?} of the 3 messages arrived: the stale commit hid the partition"),
        }
    }
    assert_eq!(offsets, [0, 1, 2]);
    consumer.shutdown().await;
}
