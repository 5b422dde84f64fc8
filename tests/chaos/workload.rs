//! The command client of the workload the faults hit, and the ledger of everything it sent.
//!
//! The client does not panic when a process is down. About half the
//! commands carry an `Idempotency-Key`; a keyed command that met a connection error or a 5xx is
//! retried with the same key, body and correlation id (possibly on another command API
//! instance) until it gets an answer, and some keyed commands are deliberately sent a second
//! time after their success. Every command carries a correlation id of its own, so the log can
//! tell how often it was applied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// How long a keyed command is retried after connection errors and 5xx answers: longer than
/// any fault keeps a command API away (a 30 s broker stop does not stop the command API).
const RETRY_WINDOW: Duration = Duration::from_secs(60);

/// A small xorshift generator: the workload needs variety, not cryptography.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Self {
        Self(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// A command the workload sent, and what came of it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub correlation: Uuid,
    /// The event the command appends when applied.
    pub event_type: &'static str,
    pub category: &'static str,
    /// The principal (idempotency scope) and the key, for keyed commands.
    pub scope: Uuid,
    pub key: Option<String>,
    /// Attempts that ended in a connection error or a 5xx before the final answer.
    pub failed_attempts: u32,
    pub ack: Option<Ack>,
}

/// A 2xx answer: the stream and version the command says it wrote.
#[derive(Debug, Clone)]
pub struct Ack {
    pub stream_id: Uuid,
    pub version: i64,
    /// The command API that answered.
    pub url: String,
    /// The answer was a replay of an earlier attempt's (`Idempotent-Replayed: true`).
    pub replayed: bool,
}

/// An attempt that failed: a 5xx answer, or no answer at all.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When the attempt was sent.
    pub at: Instant,
    /// How long it took to fail.
    pub took: Duration,
    /// The HTTP status; `None` when no answer came (connection refused or reset, timeout).
    pub status: Option<u16>,
    /// The answer was `application/problem+json`.
    pub problem: bool,
    /// The answer's `Retry-After` header.
    pub retry_after: Option<String>,
    /// The problem's `code`, or the client error.
    pub code: String,
    /// The client gave up on purpose (an impatient first attempt).
    pub impatient: bool,
}

/// Everything sent, plus contract violations the clients saw themselves.
#[derive(Default)]
pub struct Ledger {
    sent: Mutex<Vec<Sent>>,
    failures: Mutex<Vec<Failure>>,
    problems: Mutex<Vec<String>>,
    repeats: AtomicUsize,
    acked: AtomicUsize,
}

impl Ledger {
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    /// Commands acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Deliberate repeats of acknowledged keyed commands (each answered as a replay).
    pub fn repeats(&self) -> usize {
        self.repeats.load(Ordering::SeqCst)
    }

    /// Failed attempts sent at or after `since`.
    pub fn failures_since(&self, since: Instant) -> Vec<Failure> {
        self.failures.lock().unwrap().iter().filter(|f| f.at >= since).cloned().collect()
    }

    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }
}

/// Figures over a slice of the ledger.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub sent: usize,
    pub acked: usize,
    pub keyed_acked: usize,
    /// Keyed commands acknowledged after at least one failed attempt.
    pub retried: usize,
    /// ... of which the answer was a replay: the failed attempt had been applied.
    pub replayed_after_error: usize,
    /// Refused with a 4xx (mostly payments tried before the saga confirmed the order).
    pub refused: usize,
    /// Unkeyed commands whose outcome is unknown (connection error or 5xx).
    pub unknown: usize,
}

pub fn tally(sent: &[Sent]) -> Tally {
    let mut t = Tally { sent: sent.len(), ..Tally::default() };
    for s in sent {
        match &s.ack {
            Some(a) => {
                t.acked += 1;
                if s.key.is_some() {
                    t.keyed_acked += 1;
                }
                if s.failed_attempts > 0 {
                    t.retried += 1;
                    if a.replayed {
                        t.replayed_after_error += 1;
                    }
                }
            }
            None if s.failed_attempts > 0 => t.unknown += 1,
            None => t.refused += 1,
        }
    }
    t
}

/// One command to send.
pub struct Cmd<'a> {
    pub path: String,
    pub token: &'a str,
    pub scope: Uuid,
    pub body: Value,
    pub event_type: &'static str,
    pub category: &'static str,
    pub keyed: bool,
    /// Send it again after its success, expecting a replay.
    pub repeat: bool,
    /// Give up on the first attempt after this long, dropping the connection while the server
    /// may still be applying it (keyed commands only: the retry must not apply it twice).
    pub impatient: Option<Duration>,
}

/// An HTTP answer, with what the fault checks look at.
struct Answer {
    status: StatusCode,
    replayed: bool,
    problem: bool,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

/// What came of a command.
#[derive(Debug)]
pub enum Outcome {
    Acked,
    /// A 4xx: nothing was written.
    Refused {
        status: u16,
        detail: String,
    },
    /// No answer (or a 5xx) and no key to retry with.
    Unknown,
}

/// The command APIs (round robin) and the ledger.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    urls: Arc<Mutex<Vec<String>>>,
    turn: Arc<AtomicUsize>,
    pub ledger: Arc<Ledger>,
}

impl Api {
    pub fn new(urls: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Self { http, urls: Arc::new(Mutex::new(urls)), turn: Arc::default(), ledger: Arc::default() }
    }

    /// Sends later commands to these command APIs only.
    pub fn set_urls(&self, urls: Vec<String>) {
        *self.urls.lock().unwrap() = urls;
    }

    fn next_url(&self) -> String {
        let urls = self.urls.lock().unwrap();
        urls[self.turn.fetch_add(1, Ordering::SeqCst) % urls.len()].clone()
    }

    async fn post(
        &self,
        base: &str,
        cmd: &Cmd<'_>,
        correlation: Uuid,
        key: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self
            .http
            .post(format!("{base}{}", cmd.path))
            .bearer_auth(cmd.token)
            .header("x-correlation-id", correlation.to_string())
            .json(&cmd.body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers();
        let replayed = headers.get("idempotent-replayed").is_some_and(|v| v == "true");
        let problem = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/problem+json"));
        let retry_after = headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, replayed, problem, retry_after, body })
    }

    /// Sends `cmd` and records it. Keyed commands are retried through connection errors and
    /// 5xx answers; any command is retried on `concurrency_conflict` (nothing was written).
    pub async fn command(&self, cmd: Cmd<'_>) -> Outcome {
        let correlation = Uuid::new_v4();
        let key = cmd.keyed.then(|| Uuid::new_v4().to_string());
        let deadline = Instant::now() + RETRY_WINDOW;
        let mut failed_attempts = 0;
        let mut contention = 0;
        let mut impatient = cmd.impatient.filter(|_| key.is_some());
        let (outcome, ack) = loop {
            let url = self.next_url();
            let (sent_at, patience) = (Instant::now(), impatient.take());
            let answer = self.post(&url, &cmd, correlation, key.as_deref(), patience).await;
            match answer {
                Ok(a) if a.is_success() => {
                    let ack = Ack {
                        stream_id: a.body["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_default(),
                        version: a.body["version"].as_i64().unwrap_or_default(),
                        url,
                        replayed: a.replayed,
                    };
                    break (Outcome::Acked, Some(ack));
                }
                Ok(a) if a.status == StatusCode::CONFLICT && a.body["code"] == "concurrency_conflict" => {
                    contention += 1;
                    if contention > 20 {
                        break (refused(a.status, &a.body), None);
                    }
                }
                Ok(a) if !a.status.is_server_error() => break (refused(a.status, &a.body), None),
                failed => {
                    self.ledger.failures.lock().unwrap().push(failure(sent_at, &failed, patience.is_some()));
                    failed_attempts += 1;
                    if key.is_none() || Instant::now() > deadline {
                        break (Outcome::Unknown, None);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        };
        if let (Some(a), true, Some(k)) = (&ack, cmd.repeat, &key) {
            self.repeat(&cmd, correlation, k, a).await;
        }
        let sent = Sent {
            correlation,
            event_type: cmd.event_type,
            category: cmd.category,
            scope: cmd.scope,
            key,
            failed_attempts,
            ack,
        };
        if sent.ack.is_some() {
            self.ledger.acked.fetch_add(1, Ordering::SeqCst);
        }
        self.ledger.sent.lock().unwrap().push(sent);
        outcome
    }

    /// Sends an acknowledged keyed command again: the answer must be the first one, replayed.
    async fn repeat(&self, cmd: &Cmd<'_>, correlation: Uuid, key: &str, first: &Ack) {
        let deadline = Instant::now() + RETRY_WINDOW;
        loop {
            match self.post(&self.next_url(), cmd, correlation, Some(key), None).await {
                Ok(Answer { status, replayed, body, .. }) if !status.is_server_error() => {
                    let same = body["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) == Some(first.stream_id)
                        && body["version"].as_i64() == Some(first.version);
                    if status.is_success() && replayed && same {
                        self.ledger.repeats.fetch_add(1, Ordering::SeqCst);
                    } else {
                        self.ledger.problem(format!(
                            "repeat of {} (key {key}) answered {status} replayed={replayed} {body}, first was v{}",
                            cmd.path, first.version
                        ));
                    }
                    return;
                }
                _ if Instant::now() > deadline => return,
                _ => tokio::time::sleep(Duration::from_millis(150)).await,
            }
        }
    }
}

fn refused(status: StatusCode, body: &Value) -> Outcome {
    Outcome::Refused { status: status.as_u16(), detail: body["detail"].as_str().unwrap_or_default().to_owned() }
}

fn failure(at: Instant, attempt: &Result<Answer, reqwest::Error>, impatient: bool) -> Failure {
    match attempt {
        Ok(a) => Failure {
            at,
            took: at.elapsed(),
            status: Some(a.status.as_u16()),
            problem: a.problem,
            retry_after: a.retry_after.clone(),
            code: a.body["code"].as_str().unwrap_or_default().to_owned(),
            impatient,
        },
        Err(e) => Failure {
            at,
            took: at.elapsed(),
            status: None,
            problem: false,
            retry_after: None,
            code: e.to_string(),
            impatient,
        },
    }
}
