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
