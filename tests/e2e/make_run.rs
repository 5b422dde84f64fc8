//! `make run`, `make stop` and `make reset` as a newcomer uses them, from this checkout on a fresh
//! database: the whole stack comes up with the demo data, the printed environment works for
//! `ordo`, a stop leaves nothing running, and a failure (a taken port, a process that exits)
//! exits non-zero and leaves nothing running either.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use ordo_event_store::testing::free_port;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// One `make` invocation's settings: its own state folder, database and ports.
struct Run {
    dir: PathBuf,
    db: String,
    command_addr: String,
    query_addr: String,
    ops_base: u16,
}

impl Run {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ordo-make-run-{}", Uuid::new_v4().simple()));
        // three consecutive free ops ports: probe until a base has all three free
        let ops_base = loop {
            let base = free_port() - 1;
            if (1..=3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
                break base;
            }
        };
        Self {
            dir,
            db: format!("ordo_t_run_{}", Uuid::new_v4().simple()),
            command_addr: format!("127.0.0.1:{}", free_port()),
            query_addr: format!("127.0.0.1:{}", free_port()),
            ops_base,
        }
    }

    fn make(&self, target: &str) -> Command {
        let repo = repo_root();
        let profile = if ordo_tests::bin_dir().ends_with("release") { "release" } else { "debug" };
        let mut cmd = Command::new("make");
        cmd.arg("-s")
            .arg(target)
            .current_dir(&repo)
            .env("ORDO_RUN_DIR", &self.dir)
            .env("ORDO_RUN_PROFILE", profile)
            .env("ORDO_DATABASE_URL", format!("{PG}/{}", self.db))
            .env("ORDO_COMMAND_ADDR", &self.command_addr)
            .env("ORDO_QUERY_ADDR", &self.query_addr)
            .env("ORDO_OPS_PORT_BASE", self.ops_base.to_string())
            .env_remove("KAFKA_BROKERS")
            .env_remove("ORDO_KAFKA_BROKERS")
            .env_remove("DATABASE_URL")
            .env_remove("ORDO_JWT_SECRET")
            .env_remove("ORDO_JWT_JWKS_URL")
            .env_remove("MAKEFLAGS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// Every process still running that was started for this run (they all inherit its
    /// `ORDO_RUN_DIR`).
    fn leftovers(&self) -> Vec<String> {
        let marker = format!("ORDO_RUN_DIR={}", self.dir.display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
        found
    }

    async fn database_exists(&self) -> bool {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{PG}/postgres")).await.unwrap();
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&self.db)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // a failed assertion must not leave the stack behind
        let _ = std::process::Command::new("scripts/stop.sh")
            .arg("--reset")
            .current_dir(repo_root())
            .env("ORDO_RUN_DIR", &self.dir)
            .env("ORDO_DATABASE_URL", format!("{PG}/{}", self.db))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Collects a child's stdout and stderr into one transcript, line by line.
fn transcript(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    for reader in [Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box::new(err)] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Reads the transcript until a line contains `needle`, or the child exits, or the time is up.
async fn read_until(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return true;
                }
            }
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Everything the child wrote, once it has exited (its pipes close).
async fn drain(mut lines: tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(10), lines.recv()).await {
        seen.push(line);
    }
    seen
}

async fn finish(child: &mut Child, timeout: Duration) -> ExitStatus {
    tokio::time::timeout(timeout, child.wait()).await.expect("make exits in time").expect("make's status")
}

fn plain(lines: &[String]) -> String {
    lines.iter().filter(|l| !l.starts_with('[')).cloned().collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn make_run_starts_everything_with_demo_data_and_make_stop_leaves_nothing_running() {
    let run = Run::new();
    assert!(!run.database_exists().await);
    let mut child = run.make("run").spawn().expect("make run starts");
    let mut lines = transcript(&mut child);
    let mut seen = Vec::new();
    let up = read_until(&mut lines, &mut seen, "stops everything", Duration::from_secs(300)).await;
    assert!(up, "make run did not come up:\n{}", seen.join("\n"));
    let out = plain(&seen);
    for step in 1..=9 {
        assert!(out.contains(&format!("[{step}/9]")), "the seed shows step {step}:\n{out}");
    }
    assert!(out.contains("ORDO_JWT_SECRET="), "the banner prints the dev secret:\n{out}");

    // the demo data is there, through the query API
    let http = reqwest::Client::new();
    let products: serde_json::Value =
        http.get(format!("http://{}/v1/products", run.query_addr)).send().await.unwrap().json().await.unwrap();
    let skus: Vec<&str> = products["items"].as_array().unwrap().iter().filter_map(|p| p["sku"].as_str()).collect();
    for sku in ["LAMP-01", "MUG-01", "RUG-01"] {
        assert!(skus.contains(&sku), "demo product {sku} listed: {products}");
    }

    // the environment file puts `ordo` on the PATH with the secret the APIs use
    let env_file = run.dir.join("env");
    let minted = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && command -v ordo && ordo mint-token --role admin --sub {}",
            env_file.display(),
            Uuid::new_v4()
        ))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .await
        .unwrap();
    assert!(minted.status.success(), "ordo from the env file: {}", String::from_utf8_lossy(&minted.stderr));
    let stdout = String::from_utf8(minted.stdout).unwrap();
    let token = stdout.lines().last().unwrap().trim().to_string();
    let projections =
        http.get(format!("http://{}/v1/projections", run.query_addr)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(projections.status(), 200, "a token minted with the printed environment is accepted");

    let stop = run.make("stop").output().await.unwrap();
    assert!(stop.status.success(), "make stop: {}", String::from_utf8_lossy(&stop.stderr));
    let status = finish(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "make run exits 0 when stopped: {status}");
    assert_eq!(run.leftovers(), Vec::<String>::new(), "nothing keeps running after make stop");
    assert!(std::net::TcpStream::connect(&run.command_addr).is_err(), "the command API port is free");

    let reset = run.make("reset").output().await.unwrap();
    assert!(reset.status.success(), "make reset: {}", String::from_utf8_lossy(&reset.stderr));
    assert!(!run.database_exists().await, "make reset drops the database");
}

#[tokio::test]
async fn make_run_exits_non_zero_and_leaves_nothing_running_when_a_port_is_taken_or_a_process_exits() {
    // a taken port: refused before anything starts, with the port named
    let run = Run::new();
    let taken = std::net::TcpListener::bind(&run.query_addr).unwrap();
    let mut child = run.make("run").spawn().unwrap();
    let lines = transcript(&mut child);
    let status = finish(&mut child, Duration::from_secs(120)).await;
    let seen = drain(lines).await;
    let port = run.query_addr.rsplit(':').next().unwrap();
    assert!(!status.success(), "make run fails on a taken port");
    assert!(
        seen.iter().any(|l| l.contains(&format!("port {port} is already in use")) && l.contains("ORDO_QUERY_ADDR")),
        "the message names the port and its setting:\n{}",
        seen.join("\n")
    );
    assert_eq!(run.leftovers(), Vec::<String>::new(), "nothing was left running");
    drop(taken);

    // a process that exits after the others started (an address it cannot bind): everything
    // started so far, the broker included, is stopped
    for attempt in 1..=3 {
        let run = Run::new();
        let mut child = run.make("run").env("ORDO_PROJECTORS_OPS_ADDR", "not-an-address").spawn().unwrap();
        let lines = transcript(&mut child);
        let status = finish(&mut child, Duration::from_secs(300)).await;
        let seen = drain(lines).await;
        let out = plain(&seen);
        assert!(!status.success(), "make run fails when a process exits:\n{out}");
        assert!(out.contains("starting processes"), "the failure came after the processes started:\n{out}");
        assert_eq!(run.leftovers(), Vec::<String>::new(), "nothing was left running");
        if out.contains("projectors exited with status") {
            return;
        }
        // Another process that exited first is only a race of this test when a port it was
        // given, free when the test probed it, was taken meanwhile by another test's connection.
        let other = ["command-api", "event-relay", "order-saga", "query-api"]
            .into_iter()
            .find(|p| out.contains(&format!("{p} exited with status")));
        let log =
            other.map(|p| std::fs::read_to_string(run.dir.join("logs").join(format!("{p}.log"))).unwrap_or_default());
        let raced = log.as_deref().is_some_and(|l| l.contains("in use"));
        assert!(
            raced && attempt < 3,
            "the message names the process:\n{out}\n{} log:\n{}",
            other.unwrap_or("no other process"),
            log.unwrap_or_default()
        );
    }
}
