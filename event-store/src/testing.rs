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
