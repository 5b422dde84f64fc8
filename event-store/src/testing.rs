//! Test helpers: a fresh Postgres database per test and a throwaway Kafka-compatible broker.
//!
//! Enabled with the `testing` feature; never used by the services themselves.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it holds, or panics with `what` after `timeout`.
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, timeout, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// The server tests create their databases on; override with `ORDO_TEST_DATABASE_URL`.
pub fn admin_url() -> String {
    std::env::var("ORDO_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(admin: &str, db: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, tail)) => {
            let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
            format!("{base}/{db}{query}")
        }
        None => format!("{admin}/{db}"),
    }
}

/// A database of its own for one test, migrated for the event log, dropped when this is dropped.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates `ordo_t_<random>` and applies the event log migrations.
    pub async fn new() -> Self {
        let admin = admin_url();
        let name = format!("ordo_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.expect("connect to the test Postgres server");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        let _ = conn.close().await;
        let url = url_for(&admin, &name);
        // A long acquire timeout: tests run many at once on two cores, and a slow pool under that
        // load is not what they test.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(40)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .expect("connect to the test database");
        crate::migrate(&pool).await.expect("migrate the test database");
        Self { pool, url, name }
    }

    pub fn store(&self) -> crate::EventStore {
        crate::EventStore::new(self.pool.clone())
    }

    /// A second pool on this database with one connection and a 300 ms acquire timeout: hold its
    /// connection and every other acquire times out (an exhausted pool).
    pub async fn pool_of_one(&self) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(300))
            .connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which must not block on its own pool: a short-lived
        // runtime on another thread drops the database, and FORCE ends the pool's connections.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// Where the broker binary is: `NISSHI_BIN`, then `$CARGO_HOME/bin/nisshi`, then `PATH`.
pub fn nisshi_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NISSHI_BIN") {
        return PathBuf::from(p);
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo"));
    let candidate = cargo_home.join("bin").join("nisshi");
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from("nisshi")
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A nisshi broker with in-memory storage on a free loopback port, killed when dropped.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
}

impl Broker {
    /// Starts a broker and waits until it answers metadata requests.
    pub async fn start() -> Self {
        let mut broker = Self { child: None, port: free_port() };
        broker.spawn().await;
        broker
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(nisshi_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://nisshi/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nisshi (install it with scripts/install-broker.sh)");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30)).await;
    }

    async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let bootstrap = self.bootstrap();
        loop {
            let b = bootstrap.clone();
            let ok = tokio::task::spawn_blocking(move || {
                let Ok(producer) =
                    ClientConfig::new().set("bootstrap.servers", &b).create::<rdkafka::producer::BaseProducer>()
                else {
                    return false;
                };
                use rdkafka::producer::Producer;
                producer.client().fetch_metadata(None, Duration::from_secs(2)).is_ok()
            })
            .await
            .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "broker on {bootstrap} did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the broker process (its in-memory data is lost).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts a new broker process on the same port after [`Broker::stop`].
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Freezes the broker (SIGSTOP) so clients see it unreachable while it keeps its data.
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    /// Resumes a broker frozen by [`Broker::pause`].
    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, sig: &str) {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status().await;
        }
    }

    /// Creates topics with the given partition count (nisshi does not auto-create them).
    pub async fn create_topics(&self, names: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("admin client");
        let topics: Vec<NewTopic<'_>> =
            names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
        let results = admin.create_topics(&topics, &AdminOptions::new()).await.expect("create topics");
        for r in results {
            if let Err((name, code)) = r {
                assert!(code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "create topic {name}: {code:?}");
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A message read back from a broker: partition, key, value and headers.
pub type Copied = (i32, Vec<u8>, Vec<u8>, rdkafka::message::OwnedHeaders);

/// Every message of `topic`, read to the end of each partition, and each partition's end offset
/// (counted, not asked for: the end some brokers report is the start of their last batch).
pub async fn read_all(bootstrap: &str, topic: &'static str) -> (Vec<Copied>, Vec<(i32, i64)>) {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::error::KafkaError;
        use rdkafka::{Message, Offset, TopicPartitionList};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "read-all")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let partitions = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap().topics()[0].partitions().len();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut ends: Vec<(i32, i64)> = (0..partitions as i32).map(|p| (p, 0)).collect();
        let mut at_end = std::collections::HashSet::new();
        let mut copies = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_end.len() < partitions {
            assert!(Instant::now() < deadline, "{topic} was not read to its end");
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    ends[m.partition() as usize].1 = m.offset() + 1;
                    let copy = (
                        m.partition(),
                        m.key().unwrap().to_vec(),
                        m.payload().unwrap().to_vec(),
                        m.headers().unwrap().detach(),
                    );
                    copies.push(copy);
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                _ => {}
            }
        }
        (copies, ends)
    })
    .await
    .unwrap()
}

/// Produces a copy of every message of `topic` into its own partition: the duplicates an
/// idempotent producer that was replaced while its messages were in flight leaves behind. The
/// partition's offsets then count more messages than the log has events. Answers the ends.
pub async fn duplicate_every_message(bootstrap: &str, topic: &'static str) -> Vec<(i32, i64)> {
    let (copies, mut ends) = read_all(bootstrap, topic).await;
    let producer: rdkafka::producer::FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    for (partition, key, payload, h) in copies {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic).partition(partition).key(&key).payload(&payload).headers(h),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    for (_, end) in &mut ends {
        *end *= 2;
    }
    ends
}

/// A sealed value (`{"sealed": "v2...."}`) spelled in the first stored format, the four members
/// of `v1`, with the same nonce and ciphertext: what an event written before the compact format
/// holds. `None` for a value that is not sealed.
pub fn sealed_as_v1(value: &serde_json::Value) -> Option<serde_json::Value> {
    crate::personal::seal::to_v1(&ordo_schemas::SealedField::from_value(value)?)
}
