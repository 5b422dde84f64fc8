//! A harness that runs Ordo's real processes (the built binaries) against a fresh database and
//! a real broker, for end-to-end and fault tests. Each process can be SIGKILLed and restarted,
//! and extra replicas of a process can run next to the main one ([`Stack::start_extra`]).
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

/// How long the query API waits for a consistency token here. Generous: the machine running the
/// tests is shared, and a read that times out says so (`Ordo-Consistency: timeout`).
pub const CONSISTENCY_WAIT_MS: u64 = 8_000;

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

    /// The environment variable holding the address the process listens on (its API for the
    /// two HTTP services, its ops endpoints for the others).
    pub fn addr_var(self) -> &'static str {
        match self {
            Service::CommandApi => "ORDO_COMMAND_ADDR",
            Service::QueryApi => "ORDO_QUERY_ADDR",
            Service::Relay => "ORDO_RELAY_OPS_ADDR",
            Service::Saga => "ORDO_SAGA_OPS_ADDR",
            Service::Projectors => "ORDO_PROJECTORS_OPS_ADDR",
        }
    }
}

/// Where cargo put the workspace binaries: next to this test executable's `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// A replica started next to the main instance of a service, on its own address. Killed when
/// dropped.
pub struct Extra {
    pub service: Service,
    /// The address it listens on (`host:port`).
    pub addr: String,
    child: Option<Child>,
}

impl Extra {
    /// `http://<addr><path>`, e.g. `extra.url("/metrics")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILLs the replica: no shutdown hooks run.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Whether the replica is still running (false once killed or exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The replica's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// Sends `signal` (a name such as `STOP` or `CONT`) to process `pid` with `kill(1)`. A process
/// stopped with `STOP` keeps its sockets and Postgres sessions open but answers nothing: a
/// frozen process, unlike a killed one.
pub async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().await.expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// The role [`Stack::start_as_app_role`] runs the processes as.
pub const APP_ROLE: &str = "ordo_app_test";

/// Creates [`APP_ROLE`] (once per server) and gives it, on `db`, exactly the rights
/// docs/runbook.md gives the services' role: data, not schema.
async fn grant_app_role(db: &TestDb) {
    let create = format!(
        "DO $$ BEGIN CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    );
    let name = db.url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    for sql in [
        create,
        format!("GRANT CONNECT ON DATABASE {name} TO {APP_ROLE}"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT USAGE ON SCHEMA public TO {APP_ROLE}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}"),
        format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}"),
    ] {
        sqlx::query(&sql).execute(&db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// One deployment: database, broker and the five processes, each on its own loopback ports.
pub struct Stack {
    pub db: TestDb,
    pub broker: Broker,
    pub command_url: String,
    pub query_url: String,
    ops: HashMap<Service, String>,
    running: HashMap<Service, Child>,
    instance: u32,
    keys: JwtKeys,
    log_dir: PathBuf,
    /// Extra environment of every process, applied over the stack's own.
    env: Vec<(String, String)>,
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts every process and waits until each answers `/readyz`.
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// [`Stack::start`] with extra environment variables for every process (over the stack's).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::start_inner(env, false).await
    }

    /// [`Stack::start`] with every process connected as [`APP_ROLE`], a role with the data rights
    /// of docs/runbook.md ("Database roles") and no right to change the schema: `ordo migrate`
    /// runs as the database's owner first, as in a deployment.
    pub async fn start_as_app_role() -> Self {
        Self::start_inner(&[], true).await
    }

    async fn start_inner(env: &[(&str, &str)], app_role: bool) -> Self {
        let db = TestDb::new().await;
        // Migrations are an explicit step, as in a deployment: the services only check them.
        let migrated = Command::new(bin_dir().join("ordo"))
            .arg("migrate")
            .env("ORDO_DATABASE_URL", &db.url)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run ordo migrate from {:?}: {e}", bin_dir()));
        assert!(migrated.status.success(), "ordo migrate: {}", String::from_utf8_lossy(&migrated.stderr));
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        if app_role {
            grant_app_role(&db).await;
            env.push(("ORDO_DATABASE_URL".into(), db.url.replacen("postgres@", &format!("{APP_ROLE}@"), 1)));
        }
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
            env,
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

    /// A URL on the main instance of `s` (its ops endpoints, e.g. `/metrics`).
    pub fn ops(&self, s: Service, path: &str) -> String {
        format!("http://{}{path}", self.addr(s))
    }

    /// Where the process logs of this stack go.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    /// Spawns `s` listening on `addr`; every other setting is the stack's.
    fn spawn(&mut self, s: Service, addr: &str) -> Child {
        self.instance += 1;
        let log = std::fs::File::create(self.log_dir.join(format!("{}-{}.log", s.binary(), self.instance))).unwrap();
        let mut cmd = Command::new(bin_dir().join(s.binary()));
        cmd.env("ORDO_DATABASE_URL", &self.db.url)
            .env("ORDO_KAFKA_BROKERS", self.broker.bootstrap())
            .env("ORDO_JWT_SECRET", SECRET)
            .env("ORDO_COMMAND_ADDR", &self.command_url)
            .env("ORDO_QUERY_ADDR", &self.query_url)
            .env("ORDO_RELAY_OPS_ADDR", &self.ops[&Service::Relay])
            .env("ORDO_SAGA_OPS_ADDR", &self.ops[&Service::Saga])
            .env("ORDO_PROJECTORS_OPS_ADDR", &self.ops[&Service::Projectors])
            .env(s.addr_var(), addr)
            .env("ORDO_RELAY_POLL_INTERVAL_MS", "20")
            .env("ORDO_QUERY_CONSISTENCY_WAIT_MS", CONSISTENCY_WAIT_MS.to_string())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        cmd.spawn().unwrap_or_else(|e| panic!("start {} from {:?}: {e}", s.binary(), bin_dir()))
    }

    /// Starts (or restarts) the main instance of one process and waits for its readiness. A
    /// process that exits because its address was taken meanwhile (the port was probed free,
    /// then another test's listener or connection took it) starts again on a new free port, up
    /// to three times.
    pub async fn start_service(&mut self, s: Service) {
        for attempt in 1..=3 {
            let addr = self.addr(s);
            let mut child = self.spawn(s, &addr);
            match self.wait_ready(s, &addr, &mut child).await {
                Ready::Yes => {
                    self.running.insert(s, child);
                    return;
                }
                Ready::AddressTaken if attempt < 3 => self.move_to_free_port(s),
                Ready::AddressTaken => panic!("{} found its address taken three times", s.binary()),
            }
        }
    }

    fn move_to_free_port(&mut self, s: Service) {
        let addr = format!("127.0.0.1:{}", free_port());
        match s {
            Service::CommandApi => self.command_url = addr,
            Service::QueryApi => self.query_url = addr,
            other => {
                self.ops.insert(other, addr);
            }
        }
    }

    /// Starts another replica of `s` on a free address of its own (same database, broker,
    /// consumer group and relay name as the main instance) and waits for its readiness.
    pub async fn start_extra(&mut self, s: Service) -> Extra {
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut child = self.spawn(s, &addr);
            if self.wait_ready(s, &addr, &mut child).await == Ready::Yes {
                return Extra { service: s, addr, child: Some(child) };
            }
        }
        panic!("{} found its address taken three times", s.binary())
    }

    /// Waits until the process answers `/readyz` and is still running a moment later: another
    /// server that holds the address could answer for a process that fails to bind it and
    /// exits. Answers [`Ready::AddressTaken`] when the process exited saying its address is in
    /// use; panics on any other exit, or after 60 s.
    async fn wait_ready(&self, s: Service, addr: &str, child: &mut Child) -> Ready {
        let url = format!("http://{addr}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.log_dir.join(format!("{}-{}.log", s.binary(), self.instance)))
                    .unwrap_or_default();
                if log.contains("Address already in use") {
                    return Ready::AddressTaken;
                }
                panic!("{} exited with {status} before it was ready (logs in {:?}):\n{log}", s.binary(), self.log_dir);
            }
            if self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                // A process that cannot bind exits within milliseconds of trying.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if child.try_wait().is_ok_and(|exited| exited.is_none()) {
                    return Ready::Yes;
                }
                continue;
            }
            assert!(Instant::now() < deadline, "{} not ready (logs in {:?})", s.binary(), self.log_dir);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id of the main instance of `s`, while it runs.
    pub fn pid(&self, s: Service) -> Option<u32> {
        self.running.get(&s).and_then(Child::id)
    }

    /// SIGKILLs the main instance of one process: no shutdown hooks run.
    pub async fn kill(&mut self, s: Service) {
        if let Some(mut child) = self.running.remove(&s) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGKILLs the main instance of every process.
    pub async fn kill_all(&mut self) {
        for s in Service::ALL {
            self.kill(s).await;
        }
    }

    /// Main instances that exited by themselves (not killed through [`Stack::kill`]), with
    /// their exit status. A process that gives up when Postgres or the broker goes away shows
    /// up here.
    pub fn exited(&mut self) -> Vec<(Service, std::process::ExitStatus)> {
        let mut gone = Vec::new();
        for (s, child) in &mut self.running {
            if let Ok(Some(status)) = child.try_wait() {
                gone.push((*s, status));
            }
        }
        gone
    }

    /// The name of the stack's database (the last segment of its URL).
    pub fn db_name(&self) -> String {
        let tail = self.db.url.rsplit('/').next().unwrap_or_default();
        tail.split('?').next().unwrap_or_default().to_owned()
    }

    /// Runs the operator CLI (`target/<profile>/ordo`) against the stack's database and
    /// returns its output; it must finish within `timeout`.
    pub async fn ordo(&self, args: &[&str], timeout: Duration) -> std::process::Output {
        let run = Command::new(bin_dir().join("ordo"))
            .args(args)
            .env("ORDO_DATABASE_URL", &self.db.url)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(timeout, run).await {
            Ok(out) => out.unwrap_or_else(|e| panic!("run ordo {args:?} from {:?}: {e}", bin_dir())),
            Err(_) => panic!("ordo {args:?} did not finish within {timeout:?}"),
        }
    }

    /// A token for `sub` in `role`, valid for an hour.
    pub fn token(&self, sub: Uuid, role: Role) -> String {
        self.token_for(sub, role, chrono::Duration::hours(1))
    }

    /// A token for `sub` in `role` valid for `ttl` (negative: expired that long ago).
    pub fn token_for(&self, sub: Uuid, role: Role, ttl: chrono::Duration) -> String {
        self.keys.mint(sub, role, ttl).unwrap()
    }

    /// The Prometheus text of `url` (a `/metrics` endpoint).
    pub async fn metrics(&self, url: &str) -> String {
        let resp = self.http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.text().await.unwrap()
    }

    /// How many events of order and product streams the read models have not applied yet: for
    /// each projection (`orders`, `sales`: order streams; `catalog`: product streams) and each
    /// stream, the stream's head version in the log minus the version the projection reached.
    pub async fn unprojected_events(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT coalesce(sum(s.version - coalesce(p.version, 0)), 0)::bigint FROM streams s \
             JOIN (VALUES ('orders', 'order'), ('sales', 'order'), ('catalog', 'product')) AS m(projection, category) \
               ON m.category = s.category \
             LEFT JOIN projection_progress p \
               ON p.projection = m.projection AND p.category = s.category AND p.stream_id = s.stream_id",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Whether the relay whose ops endpoints are behind `metrics_url` (its `/metrics`) says it
    /// leads. A standby that never led exports no gauge, and a frozen or gone relay does not
    /// answer within a second: both count as not leading.
    pub async fn relay_leads(&self, metrics_url: &str) -> bool {
        let text = match self.http.get(metrics_url).timeout(Duration::from_secs(1)).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        metric_value(&text, "ordo_relay_is_leader") == Some(1.0)
    }

    /// Which of the relays behind `metrics_urls` leads, once exactly one does (within 30 s).
    pub async fn sole_relay_leader(&self, metrics_urls: &[String]) -> usize {
        eventually("exactly one relay to lead", Duration::from_secs(30), || async {
            let mut leaders = Vec::new();
            for (i, url) in metrics_urls.iter().enumerate() {
                if self.relay_leads(url).await {
                    leaders.push(i);
                }
            }
            (leaders.len() == 1).then(|| leaders[0])
        })
        .await
    }

    /// How many events the log holds.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.db.pool).await.unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in self.running.values_mut() {
            let _ = child.start_kill();
        }
    }
}

/// The value of an unlabelled metric in a Prometheus text, if the process exports it.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every series of a metric (all label sets) in a Prometheus text; 0 when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') { rest.rsplit_once('}')?.1 } else { rest };
            value.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Restarts the local PostgreSQL cluster (`pg_ctlcluster --skip-systemctl-redirect <version>
/// main restart`, the newest version under `/etc/postgresql`) and waits until it accepts
/// connections again. Every database on the server goes away for a moment: only for suites run
/// alone (`make chaos`), never next to other tests. Returns how long the server was away.
pub async fn restart_postgres() -> Duration {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql (a Debian PostgreSQL cluster)")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .max()
        .expect("a PostgreSQL version under /etc/postgresql");
    let started = Instant::now();
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version.to_string(), "main", "restart"])
        .status()
        .await
        .expect("run pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster restart: {status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new("pg_isready").args(["-h", "127.0.0.1", "-p", "5432", "-q"]).status().await;
        if ready.is_ok_and(|s| s.success()) {
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "postgres did not come back within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a process started by [`Stack`] came up.
#[derive(Debug, PartialEq, Eq)]
enum Ready {
    /// It answers `/readyz` and keeps running.
    Yes,
    /// It exited because its address was in use.
    AddressTaken,
}

pub use ordo_event_store::testing::eventually;
