//! Kafka settings from the environment, through the real `event-relay` binary against a real
//! broker: unusable properties stop it at start, usable ones reach its clients, secrets stay
//! out of its output.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ordo_event_store::kafka::{self, TopicSettings};
use ordo_event_store::testing::{free_port, Broker, TestDb};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use tokio::process::{Child, Command};

const SECRET: &str = "hunter2-never-logged";

fn relay(db: &TestDb, broker: &Broker, ops: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_event-relay"));
    cmd.env("ORDO_DATABASE_URL", &db.url)
        .env("ORDO_KAFKA_BROKERS", broker.bootstrap())
        .env("ORDO_RELAY_OPS_ADDR", ops)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn output_of(child: Child) -> String {
    let out = child.wait_with_output().await.unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_reserved_property_stops_the_relay_at_start_naming_the_variable() {
    let (db, broker) = (TestDb::new().await, Broker::start().await);
    let cases = [
        ("ORDO_KAFKA_NO_SUCH_PROPERTY", "1", "no.such.property"),
        ("ORDO_KAFKA_SECURITY_PROTOCOL", "carrier_pigeon", "security.protocol"),
        ("ORDO_KAFKA_ENABLE_IDEMPOTENCE", "false", "must stay idempotent"),
        ("ORDO_KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092", "KAFKA_BROKERS"),
    ];
    for (var, value, says) in cases {
        let ops = format!("127.0.0.1:{}", free_port());
        let child = relay(&db, &broker, &ops, &[(var, value), ("ORDO_KAFKA_SASL_PASSWORD", SECRET)]).spawn().unwrap();
        let started = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect(var).unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{var}: a configuration error exits 2: {text}");
        assert!(started.elapsed() < Duration::from_secs(20), "{var}: refused at start, not after retrying");
        assert!(text.contains("invalid configuration") && text.contains(var) && text.contains(says), "{var}: {text}");
        assert!(!text.contains(SECRET), "{var}: the password leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_property_from_the_environment_reaches_the_relays_clients_and_its_secret_is_never_printed() {
    let (db, broker) = (TestDb::new().await, Broker::start().await);
    let plain_ops = format!("127.0.0.1:{}", free_port());
    let tls_ops = format!("127.0.0.1:{}", free_port());
    let plain = relay(&db, &broker, &plain_ops, &[("ORDO_KAFKA_CLIENT_RACK", "eu-west-1a")]).spawn().unwrap();
    // The broker speaks plaintext only: a client told to use TLS can never reach it.
    let tls = relay(
        &db,
        &broker,
        &tls_ops,
        &[("ORDO_KAFKA_SECURITY_PROTOCOL", "SSL"), ("ORDO_KAFKA_SSL_KEY_PASSWORD", SECRET)],
    )
    .spawn()
    .unwrap();
    let http = reqwest::Client::new();
    let readiness = |ops: String| {
        let http = http.clone();
        async move {
            let r = http.get(format!("http://{ops}/readyz")).send().await.ok()?;
            Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if readiness(plain_ops.clone()).await.is_some_and(|(s, _)| s == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the plaintext relay never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = readiness(tls_ops.clone()).await.expect("the TLS relay serves /readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kafka"), "{body}");

    for child in [plain, tls] {
        let pid = child.id().unwrap();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        let text = tokio::time::timeout(Duration::from_secs(30), output_of(child)).await.unwrap();
        assert!(text.contains("kafka client properties from the environment"), "{text}");
        assert!(!text.contains(SECRET), "the key password leaked: {text}");
        if text.contains("security.protocol") {
            assert!(text.contains("ssl.key.password") && text.contains("<redacted>"), "{text}");
        } else {
            assert!(text.contains("client.rack") && text.contains("eu-west-1a"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_topics_get_the_configured_min_insync_replicas() {
    let broker = Broker::start().await;
    // -1: the broker's default replication factor (one copy on this single broker).
    let settings = TopicSettings { replication_factor: -1, min_insync_replicas: Some(2) };
    kafka::ensure_topics_with(&broker.bootstrap(), 2, settings).await.unwrap();
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(&broker.bootstrap()).create().unwrap();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin.describe_configs(&[ResourceSpecifier::Topic("ordo.orders")], &options).await.unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let entry = resource.get("min.insync.replicas").map(|e| e.value.clone());
    assert_eq!(entry, Some(Some("2".to_owned())), "{:?}", resource.entries);
}
