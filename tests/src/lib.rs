//! A harness that runs Ordo's real processes (the built binaries) against a fresh database and
//! a real broker, for end-to-end and fault tests. Each process can be SIGKILLed and restarted.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ordo_event_store::testing::{free_port, Broker, TestDb};
use ordo_schemas::Role;
use ordo_service::JwtKeys;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const SECRET: &str = "e2e-test-secret";

/// The processes of an Ordo deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    CommandApi,
    Relay,
    Saga,
    Projectors,
    QueryApi,
}

impl Service {
    pub const ALL: [Service; 5] =
        [Service::CommandApi, Service::Relay, Service::Saga, Service::Projectors, Service::QueryApi];

    pub fn binary(self) -> &'static str {
        match self {
            Service::CommandApi => "command-api",
            Service::Relay => "event-relay",
            Service::Saga => "order-saga",
            Service::Projectors => "projectors",
            Service::QueryApi => "query-api",
        }
    }
}

/// Where cargo put the workspace binaries: next to this test executable's `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

struct Running {
    child: Child,
}

/// One deployment: database, broker and the five processes, each on its own loopback ports.
pub struct Stack {
    pub db: TestDb,
    pub broker: Broker,
    pub command_url: String,
    pub query_url: String,
    ops: HashMap<Service, String>,
    running: HashMap<Service, Running>,
    instance: u32,
    keys: JwtKeys,
    log_dir: PathBuf,
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts every process and waits until each answers `/readyz`.
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        let broker = Broker::start().await;
        let mut ops = HashMap::new();
        for s in [Service::Relay, Service::Saga, Service::Projectors] {
            ops.insert(s, format!("127.0.0.1:{}", free_port()));
        }
        let log_dir = bin_dir().join("e2e-logs").join(Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut stack = Self {
            db,
            broker,
            command_url: format!("127.0.0.1:{}", free_port()),
            query_url: format!("127.0.0.1:{}", free_port()),
            ops,
            running: HashMap::new(),
            instance: 0,
            keys: JwtKeys::from_secret(SECRET.as_bytes()),
            log_dir,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        };
        for s in Service::ALL {
            stack.start_service(s).await;
        }
        stack
    }

    fn addr(&self, s: Service) -> String {
        match s {
            Service::CommandApi => self.command_url.clone(),
            Service::QueryApi => self.query_url.clone(),
            other => self.ops[&other].clone(),
        }
    }

    /// The base URL of the command API.
    pub fn command(&self, path: &str) -> String {
        format!("http://{}{path}", self.command_url)
    }

    /// The base URL of the query API.
    pub fn query(&self, path: &str) -> String {
        format!("http://{}{path}", self.query_url)
    }

    /// Starts (or restarts) one process and waits for its readiness.
    pub async fn start_service(&mut self, s: Service) {
        self.instance += 1;
        let log = std::fs::File::create(self.log_dir.join(format!("{}-{}.log", s.binary(), self.instance))).unwrap();
        let mut cmd = Command::new(bin_dir().join(s.binary()));
        cmd.env("DATABASE_URL", &self.db.url)
            .env("KAFKA_BROKERS", self.broker.bootstrap())
            .env("ORDO_JWT_SECRET", SECRET)
            .env("ORDO_COMMAND_ADDR", &self.command_url)
            .env("ORDO_QUERY_ADDR", &self.query_url)
            .env("ORDO_RELAY_OPS_ADDR", &self.ops[&Service::Relay])
            .env("ORDO_SAGA_OPS_ADDR", &self.ops[&Service::Saga])
            .env("ORDO_PROJECTORS_OPS_ADDR", &self.ops[&Service::Projectors])
            .env("ORDO_RELAY_POLL_INTERVAL_MS", "20")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {} from {:?}: {e}", s.binary(), bin_dir()));
        self.running.insert(s, Running { child });
        self.wait_ready(s).await;
    }

    async fn wait_ready(&mut self, s: Service) {
        let url = format!("http://{}/readyz", self.addr(s));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(r) = self.running.get_mut(&s) {
                if let Ok(Some(status)) = r.child.try_wait() {
                    panic!("{} exited with {status} before it was ready (logs in {:?})", s.binary(), self.log_dir);
                }
            }
            assert!(Instant::now() < deadline, "{} not ready (logs in {:?})", s.binary(), self.log_dir);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs one process: no shutdown hooks run.
    pub async fn kill(&mut self, s: Service) {
        if let Some(mut r) = self.running.remove(&s) {
            let _ = r.child.start_kill();
            let _ = r.child.wait().await;
        }
    }

    /// A token for `sub` in `role`, valid for an hour.
    pub fn token(&self, sub: Uuid, role: Role) -> String {
        self.keys.mint(sub, role, chrono::Duration::hours(1)).unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for r in self.running.values_mut() {
            let _ = r.child.start_kill();
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
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
