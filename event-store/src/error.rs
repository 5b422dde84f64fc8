//! Errors of the event store, keeping "your expectation was wrong" apart from "storage failed".

use ordo_schemas::StreamRef;

use crate::types::IdempotencyRecord;

/// SQLSTATE codes the store reacts to, matched by code and never by message text.
pub mod sqlstate {
    /// `unique_violation`
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// `serialization_failure`
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `deadlock_detected`
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// `lock_not_available`: a lock wait ran into `lock_timeout`.
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    /// `query_canceled`: the statement ran into `statement_timeout`.
    pub const QUERY_CANCELED: &str = "57014";
    /// Raised by the trigger that keeps the event log append-only.
    pub const APPEND_ONLY: &str = "OR001";
}

/// What a stream's version was expected to be when appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the current version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 means "does not exist yet").
    Exact(i64),
    /// The stream must be at exactly this version and its last event must have this hash: a
    /// writer that trusts a cached state states both, so a cache that saw another history (a
    /// restored backup, say) is caught as a conflict.
    Head { version: i64, hash: Option<[u8; 32]> },
}

impl ExpectedVersion {
    /// The version this expectation names, if any.
    pub fn version(&self) -> Option<i64> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) | ExpectedVersion::Head { version: v, .. } => Some(*v),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) | ExpectedVersion::Head { version: v, .. } => write!(f, "{v}"),
        }
    }
}

/// An append that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream was not at the expected version (or its head hash was not the expected one).
    /// Nothing was written and no global position was used up; the caller may reload and retry.
    #[error("stream {stream} expected at version {expected}, found {actual}")]
    Conflict { stream: StreamRef, expected: ExpectedVersion, actual: i64 },
    /// A request already stored a result under this idempotency key. Nothing was written;
    /// `stored` is that result (answer with it when it belongs to the same request).
    #[error("idempotency key already used in scope {scope}")]
    IdempotencyKeyTaken { scope: String, key: String, stored: Option<Box<IdempotencyRecord>> },
    /// The request's unique claim belongs to another stream already. Nothing was written.
    #[error("{kind} {value} is already claimed")]
    ClaimTaken { kind: String, value: String },
    /// The log could not take the append in time (the writer lock was held too long by another
    /// session, or the writer is overloaded). Nothing was written; retry later.
    #[error("the event log is busy: {0}")]
    Unavailable(String),
    /// The event holds personal data of a customer whose data was erased: no new key is ever
    /// made for that customer. Nothing was written.
    #[error("the personal data of customer {0} was erased")]
    SubjectErased(uuid::Uuid),
    /// The append itself was malformed (empty, a stream named twice).
    #[error("invalid append: {0}")]
    Invalid(&'static str),
    /// Storage failed; the append may or may not be retried safely by the caller's policy.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failure of the database or of data read from it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        AppendError::Store(StoreError::Database(e))
    }
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate_of(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}
