//! What goes into a command (its context) and what comes out (an outcome or an error).

use std::time::Duration;

use ordo_domain::DomainError;
use ordo_event_store::{IdempotencyRecord, StoreError};
use ordo_schemas::{Actor, ConsistencyToken, StreamRef};
use serde_json::{json, Value};
use uuid::Uuid;

/// Metadata a command carries into the events it produces, plus the caller's concurrency and
/// idempotency expectations.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Who issues the command; stored as the events' `actor` and used for ownership checks.
    pub actor: Actor,
    /// Shared by every event of one business flow.
    pub correlation_id: Uuid,
    /// The event (or request) that caused this command; the saga sets the triggering event id.
    pub causation_id: Option<Uuid>,
    /// W3C trace context written into every event's metadata.
    pub traceparent: Option<String>,
    /// W3C `tracestate` going with `traceparent`.
    pub tracestate: Option<String>,
    /// `Some(v)`: the stream must be at exactly `v` (HTTP `If-Match`), otherwise the command
    /// fails with [`CommandError::VersionConflict`]. `None`: append at whatever version the stream
    /// is at, retrying on concurrent writers.
    pub expected_version: Option<i64>,
    /// Records the response under a key in the same transaction as the events. Only commands
    /// that append record their answer: a repeated no-op is simply decided again (and again
    /// appends nothing).
    pub idempotency: Option<IdempotencyKey>,
}

impl CommandContext {
    /// A context for `actor` in the flow `correlation_id`, without expectations.
    pub fn new(actor: Actor, correlation_id: Uuid) -> Self {
        Self {
            actor,
            correlation_id,
            causation_id: None,
            traceparent: None,
            tracestate: None,
            expected_version: None,
            idempotency: None,
        }
    }

    /// The context of a saga step: the system actor, caused by the event `causation_id` of the
    /// flow `correlation_id`.
    pub fn system(correlation_id: Uuid, causation_id: Uuid) -> Self {
        Self::new(Actor::system(), correlation_id).caused_by(causation_id)
    }

    pub fn caused_by(mut self, causation_id: Uuid) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub fn with_tracestate(mut self, tracestate: Option<String>) -> Self {
        self.tracestate = tracestate;
        self
    }

    pub fn expecting(mut self, version: Option<i64>) -> Self {
        self.expected_version = version;
        self
    }

    pub fn with_idempotency(mut self, key: Option<IdempotencyKey>) -> Self {
        self.idempotency = key;
        self
    }
}

/// An idempotency key as the command side stores it: whose key, which request it belonged to and
/// what kind of success the first answer was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Whose key it is (the principal id): keys of different principals never collide.
    pub scope: String,
    pub key: String,
    /// A digest of the request (sha256 of method, path and body); the same key with another
    /// request is refused with [`CommandError::IdempotencyKeyReused`].
    pub request_hash: Vec<u8>,
    /// What a success of this command is (a creation, an accepted placement, a change).
    pub kind: ReceiptKind,
}

impl IdempotencyKey {
    /// The record stored with the events of the first success: its [`Receipt`].
    pub(crate) fn record(&self, stream: StreamRef, version: i64) -> IdempotencyRecord {
        let receipt = Receipt { stream, version, kind: self.kind };
        IdempotencyRecord {
            scope: self.scope.clone(),
            key: self.key.clone(),
            request_hash: self.request_hash.clone(),
            response_status: self.kind.code(),
            response_body: receipt.to_json(),
        }
    }
}

/// What kind of success a command's first answer was; the HTTP layer renders it as 201, 202
/// or 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// A resource was created.
    Created,
    /// Accepted for asynchronous processing (an order placement).
    Accepted,
    /// An existing resource changed.
    Done,
}

impl ReceiptKind {
    /// The code stored with a receipt (the HTTP status it was first answered with).
    pub fn code(self) -> u16 {
        match self {
            ReceiptKind::Created => 201,
            ReceiptKind::Accepted => 202,
            ReceiptKind::Done => 200,
        }
    }

    fn from_code(code: u16) -> Self {
        match code {
            201 => ReceiptKind::Created,
            202 => ReceiptKind::Accepted,
            _ => ReceiptKind::Done,
        }
    }
}

/// What a successful command left: its stream and version, and the kind of success. Stored under
/// the command's idempotency key and answered again for a repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub stream: StreamRef,
    pub version: i64,
    pub kind: ReceiptKind,
}

impl Receipt {
    fn to_json(&self) -> Value {
        json!({ "category": self.stream.category.as_str(), "id": self.stream.id, "version": self.version })
    }

    /// The receipt of a stored record; `stream` fills in what records of older versions (which
    /// stored the HTTP body) do not say.
    pub(crate) fn from_record(stream: StreamRef, record: &IdempotencyRecord) -> Self {
        let body = &record.response_body;
        let category = body
            .get("category")
            .and_then(Value::as_str)
            .and_then(ordo_schemas::StreamCategory::parse)
            .unwrap_or(stream.category);
        let id = body.get("id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()).unwrap_or(stream.id);
        Receipt {
            stream: StreamRef::new(category, id),
            version: body.get("version").and_then(Value::as_i64).unwrap_or(0),
            kind: ReceiptKind::from_code(record.response_status),
        }
    }
}

/// A command that was accepted (or recognised as a repeat).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// The stream the command acted on.
    pub stream: StreamRef,
    /// The stream's version after the command (unchanged when it produced no events).
    pub version: i64,
    /// How many events were appended (0 for idempotent no-ops and replays).
    pub events: usize,
    /// How many times the append was retried after losing a race to a concurrent writer.
    pub retries: u32,
    /// Set when an idempotency key matched an earlier request: the receipt of its first answer.
    pub replayed: Option<Receipt>,
}

impl CommandOutcome {
    /// The read-your-writes token of the command's stream and version.
    pub fn consistency_token(&self) -> ConsistencyToken {
        ConsistencyToken::new(self.stream, self.version)
    }
}

/// Why a command did not take effect.
///
/// [`CommandError::is_rejection`] separates "the command was refused" (nothing to retry as is)
/// from "the command could not be recorded" (infrastructure).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The aggregate refused the command (409 or 422 at the HTTP edge, by
    /// [`DomainError::kind`]).
    #[error("command rejected: {0}")]
    Domain(DomainError),
    /// The caller expected another stream version (HTTP `If-Match`).
    #[error("version conflict: expected {expected}, found {actual}")]
    VersionConflict { expected: i64, actual: i64 },
    /// The aggregate does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The actor may not issue this command on this aggregate (not its owner, or its role never
    /// may).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The idempotency key was first used for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// Every retry lost the race to a concurrent writer of the same stream; nothing was written.
    #[error("stream busy: gave up after {retries} retries")]
    Contention { retries: u32 },
    /// The event log could not take the append in time (its writer lock was held too long by
    /// another session). Nothing was written; retry later (503 with `Retry-After`).
    #[error("event log busy: {0}")]
    Unavailable(String),
    /// The event store failed. Appends are atomic, so nothing was written, unless the commit
    /// itself failed in a way that leaves its outcome unknown.
    #[error("failed to record: {0}")]
    Store(#[from] StoreError),
}

impl CommandError {
    /// True when the command itself was refused, false when recording it failed.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, CommandError::Store(_) | CommandError::Contention { .. } | CommandError::Unavailable(_))
    }

    /// A short label for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            CommandError::Domain(_) => "rejected",
            CommandError::VersionConflict { .. } => "version_conflict",
            CommandError::NotFound(_) => "not_found",
            CommandError::Forbidden(_) => "forbidden",
            CommandError::IdempotencyKeyReused => "idempotency_key_reused",
            CommandError::Contention { .. } => "contention",
            CommandError::Unavailable(_) => "unavailable",
            CommandError::Store(_) => "error",
        }
    }
}

impl From<DomainError> for CommandError {
    /// `not_found` from an aggregate becomes [`CommandError::NotFound`]; every other rejection
    /// stays a [`CommandError::Domain`].
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(what) => CommandError::NotFound(what),
            other => CommandError::Domain(other),
        }
    }
}

/// How often and how patiently a command without an expected version is retried when a
/// concurrent writer appended to its stream first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubles per retry up to `max_delay`, with full jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 10 retries, 2 ms doubling to at most 100 ms, jittered.
    fn default() -> Self {
        Self { max_retries: 10, base_delay: Duration::from_millis(2), max_delay: Duration::from_millis(100) }
    }
}

impl RetryPolicy {
    /// The jittered delay before retry number `retry` (1-based): uniform in `[0, cap]` with
    /// `cap = min(max_delay, base_delay * 2^(retry-1))`, so racing writers spread out.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        let cap = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let cap_micros = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX).max(1);
        // uuid v4 carries 122 random bits; enough entropy for jitter without another dependency
        let random = (Uuid::new_v4().as_u128() & u128::from(u64::MAX)) as u64;
        Duration::from_micros(random % (cap_micros + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_stay_within_the_growing_cap() {
        let policy = RetryPolicy::default();
        for retry in 1..=12 {
            let cap = policy.base_delay.saturating_mul(1 << (retry - 1)).min(policy.max_delay);
            for _ in 0..50 {
                assert!(policy.delay(retry) <= cap, "retry {retry}");
            }
        }
    }

    #[test]
    fn not_found_from_the_domain_is_its_own_error() {
        assert!(matches!(CommandError::from(DomainError::NotFound("x".into())), CommandError::NotFound(_)));
        assert!(matches!(CommandError::from(DomainError::InvalidState("x".into())), CommandError::Domain(_)));
        assert!(CommandError::IdempotencyKeyReused.is_rejection());
        assert!(!CommandError::Contention { retries: 3 }.is_rejection());
    }
}
