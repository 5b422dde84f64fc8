//! Errors of the event store, keeping "your expectation was wrong" apart from "storage failed".

use ordo_schemas::StreamRef;

/// SQLSTATE codes the store reacts to, matched by code and never by message text.
pub mod sqlstate {
    /// `unique_violation`
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// `serialization_failure`
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `deadlock_detected`
    pub const DEADLOCK_DETECTED: &str = "40P01";
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
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// An append that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream was not at the expected version. Nothing was written and no global position
    /// was used up; the caller may reload and retry.
    #[error("stream {stream} expected at version {expected}, found {actual}")]
    Conflict { stream: StreamRef, expected: ExpectedVersion, actual: i64 },
    /// Another request already stored a result under this idempotency key (it committed while
    /// this one ran). Nothing was written; read the stored record and answer with it.
    #[error("idempotency key already used in scope {scope}")]
    IdempotencyKeyTaken { scope: String, key: String },
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
