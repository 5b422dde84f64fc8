//! A launcher for the whole deployment: a fresh database, a nisshi broker on a free loopback
//! port and the five release binaries, each on its own loopback port. Everything it starts is
//! stopped (SIGTERM, then SIGKILL) when the [`Stack`] is stopped or dropped, and the database
//! is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

use crate::procstat::ProcSample;

/// The processes of an Ordo deployment, in start order.
pub const SERVICES: [Service; 5] =
    [Service::CommandApi, Service::Relay, Service::Saga, Service::Projectors, Service::QueryApi];

/// One Ordo process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    CommandApi,
    Relay,
    Saga,
    Projectors,
    QueryApi,
}

impl Service {
    /// The binary name under `target/release/`.
    pub fn binary(self) -> &'static str {
        match self {
            Service::CommandApi => "command-api",
            Service::Relay => "event-relay",
            Service::Saga => "order-saga",
            Service::Projectors => "projectors",
            Service::QueryApi => "query-api",
        }
    }

    /// The variable holding the address it listens on (API or ops endpoints).
    fn addr_var(self) -> &'static str {
        match self {
            Service::CommandApi => "ORDO_COMMAND_ADDR",
            Service::QueryApi => "ORDO_QUERY_ADDR",
            Service::Relay => "ORDO_RELAY_OPS_ADDR",
            Service::Saga => "ORDO_SAGA_OPS_ADDR",
            Service::Projectors => "ORDO_PROJECTORS_OPS_ADDR",
        }
    }
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Server on which the benchmark database is created.
    pub admin_url: String,
    /// Where the release binaries are.
    pub bin_dir: PathBuf,
    /// Where process logs go.
    pub log_dir: PathBuf,
    /// The JWT secret the processes share with the load generator.
    pub jwt_secret: String,
    /// `RUST_LOG` of the processes.
    pub log_level: String,
    /// A command line the command API is started under (e.g. `valgrind --tool=callgrind`).
    pub command_api_wrapper: Option<String>,
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the broker binary is: `NISSHI_BIN`, then `$CARGO_HOME/bin/nisshi`, then `PATH`.
pub fn nisshi_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NISSHI_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|_| Path::new(&home).join(".cargo"));
    let candidate = cargo_home.join("bin").join("nisshi");
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from("nisshi")
    }
}

/// A database created for one benchmark and dropped by [`BenchDb::drop_db`].
pub struct BenchDb {
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl BenchDb {
    /// Creates `ordo_bench_<suffix>` (dropping a leftover of the same name first).
    pub async fn create(admin_url: &str, suffix: &str) -> anyhow::Result<Self> {
        let db = Self::existing(admin_url, suffix);
        let mut admin = PgConnection::connect(admin_url).await.context("connect to the admin database")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name)).execute(&mut admin).await?;
        sqlx::query(&format!("CREATE DATABASE {}", db.name)).execute(&mut admin).await?;
        let _ = admin.close().await;
        Ok(db)
    }

    /// `ordo_bench_<suffix>`, which may or may not exist.
    pub fn existing(admin_url: &str, suffix: &str) -> Self {
        let name = format!("ordo_bench_{suffix}");
        let url = match admin_url.rsplit_once('/') {
            Some((base, tail)) => {
                let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
                format!("{base}/{name}{query}")
            }
            None => format!("{admin_url}/{name}"),
        };
        Self { url, name, admin_url: admin_url.to_owned() }
    }

    /// Drops the database (FORCE ends remaining connections).
    pub async fn drop_db(&self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut admin).await?;
        Ok(())
    }
}

/// A nisshi broker with in-memory storage on a free loopback port.
pub struct BrokerProcess {
    pub bootstrap: String,
    child: Child,
}

impl BrokerProcess {
    /// Starts the broker, waits for its port and creates the `ordo.*` topics.
    pub async fn start(log: &Path, partitions: i32) -> anyhow::Result<Self> {
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(log)?;
        let child = Command::new(nisshi_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://nisshi/"])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("start nisshi (install it with scripts/install-broker.sh)")?;
        let broker = Self { bootstrap: format!("127.0.0.1:{port}"), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ordo_event_store::kafka::ensure_topics(&broker.bootstrap, partitions).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => bail!("broker on {} not ready: {e}", broker.bootstrap),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok(broker)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

struct Running {
    service: Service,
    addr: String,
    child: Child,
}

/// The five processes with their database and broker.
pub struct Stack {
    pub db: BenchDb,
    pub broker: BrokerProcess,
    running: Vec<Running>,
}

impl Stack {
    /// Creates the database, starts the broker and every process, and waits for each `/readyz`.
    pub async fn start(opts: &StackOptions, http: &reqwest::Client) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.log_dir)?;
        let db = BenchDb::create(&opts.admin_url, &format!("load_{}", std::process::id())).await?;
        let broker = BrokerProcess::start(&opts.log_dir.join("broker.log"), 3).await?;
        let mut addrs = Vec::new();
        for s in SERVICES {
            addrs.push((s, format!("127.0.0.1:{}", free_port()?)));
        }
        let mut stack = Self { db, broker, running: Vec::new() };
        for (s, addr) in &addrs {
            let mut cmd = match (s, &opts.command_api_wrapper) {
                (Service::CommandApi, Some(wrapper)) => {
                    let mut parts = wrapper.split_whitespace();
                    let mut cmd = Command::new(parts.next().context("empty command API wrapper")?);
                    cmd.args(parts).arg(opts.bin_dir.join(s.binary()));
                    cmd
                }
                _ => Command::new(opts.bin_dir.join(s.binary())),
            };
            for (other, other_addr) in &addrs {
                cmd.env(other.addr_var(), other_addr);
            }
            let log = std::fs::File::create(opts.log_dir.join(format!("{}.log", s.binary())))?;
            cmd.env("ORDO_DATABASE_URL", &stack.db.url)
                .env("ORDO_MIGRATE", "true")
                .env("ORDO_KAFKA_BROKERS", &stack.broker.bootstrap)
                .env("ORDO_JWT_SECRET", &opts.jwt_secret)
                .env("RUST_LOG", &opts.log_level)
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true);
            let child = cmd.spawn().with_context(|| format!("start {} from {:?}", s.binary(), opts.bin_dir))?;
            stack.running.push(Running { service: *s, addr: addr.clone(), child });
            stack.wait_ready(http, stack.running.len() - 1).await?;
        }
        Ok(stack)
    }

    async fn wait_ready(&mut self, http: &reqwest::Client, index: usize) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.running[index].addr);
        let name = self.running[index].service.binary();
        // generous: a process under valgrind starts slowly
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(2)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.running[index].child.try_wait() {
                bail!("{name} exited with {status} before it was ready");
            }
            if Instant::now() > deadline {
                bail!("{name} not ready after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://<addr>` of a process (API for the two HTTP services, ops for the others).
    pub fn url(&self, s: Service) -> String {
        let addr = self.running.iter().find(|r| r.service == s).map(|r| r.addr.as_str()).unwrap_or_default();
        format!("http://{addr}")
    }

    /// CPU time and peak RSS of every process and the broker, now.
    pub fn sample(&self) -> Vec<(String, ProcSample)> {
        let mut out: Vec<(String, ProcSample)> = self
            .running
            .iter()
            .filter_map(|r| Some((r.service.binary().to_owned(), ProcSample::read(r.child.id()?)?)))
            .collect();
        if let Some(s) = self.broker.pid().and_then(ProcSample::read) {
            out.push(("broker (nisshi)".into(), s));
        }
        out
    }

    /// Stops the processes with SIGTERM (so a profiler under the command API writes its data),
    /// SIGKILL after 20 s. The broker and the database stay until [`Stack::finish`].
    pub async fn stop_processes(&mut self) {
        for r in &self.running {
            if let Some(pid) = r.child.id() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
        }
        for r in &mut self.running {
            if tokio::time::timeout(Duration::from_secs(20), r.child.wait()).await.is_err() {
                tracing::warn!(process = r.service.binary(), "no exit after sigterm, killing");
                let _ = r.child.kill().await;
            }
        }
        self.running.clear();
    }

    /// Stops everything and drops the database.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.stop_processes().await;
        let Stack { db, broker, .. } = self;
        broker.stop().await;
        db.drop_db().await
    }
}
