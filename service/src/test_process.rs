//! For tests: run a process binary as an operator would (JSON logs at `RUST_LOG=info`), learn
//! the address it listens on from its log, keep its log lines (stdout, where the logs go, and
//! stderr), and check metrics with `promtool check metrics`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A running binary whose output (JSON log lines) is collected. Killed on drop.
pub struct RunningProcess {
    child: Child,
    /// The address from its `... listening` log line.
    pub addr: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl RunningProcess {
    /// Starts `binary` with `env` (plus `RUST_LOG=info` and `ORDO_LOG_FORMAT=json`) and waits up
    /// to 60 s for a log line with the message `listening` and an `addr` field.
    ///
    /// # Panics
    /// When the binary cannot start or never logs that it listens.
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        command.env("RUST_LOG", "info").env("ORDO_LOG_FORMAT", "json").env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for output in [stdout, stderr].into_iter().flatten() {
            let (kept, tx) = (lines.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        // other lines end in "listening" too (the query API's cache listener):
                        // only the one naming an address is the server's
                        let message = v["message"].as_str().unwrap_or_default();
                        if let (true, Some(addr)) = (message.ends_with("listening"), v["addr"].as_str()) {
                            let _ = tx.send(addr.to_owned());
                        }
                    }
                    kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
                }
            });
        }
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let log = lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n");
            panic!("{binary} did not start listening:\n{log}");
        };
        Self { child, addr, lines }
    }

    /// The base URL, `http://<addr>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The first parsed log line that satisfies `matches`, waiting up to 5 s for it (the output
    /// is read by another thread, so a line may arrive after the answer it logs).
    pub fn wait_for(&self, matches: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        for _ in 0..50 {
            let found = self
                .log()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| matches(v));
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on `text`: `Err` with promtool's findings when it reports any.
///
/// # Errors
/// promtool's output when it exits non-zero or prints a problem.
///
/// # Panics
/// When promtool is not installed (`scripts/install-tools.sh` installs it).
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (package prometheus, scripts/install-tools.sh): {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("writing to promtool: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("promtool: {e}"));
    let findings = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && findings.trim().is_empty() {
        Ok(())
    } else {
        Err(findings)
    }
}
