//! RFC 9457 problem details (`application/problem+json`) with Ordo's machine `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::code::Code;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One offending field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldProblem {
    /// Path of the field, e.g. `lines[2].quantity`.
    pub field: String,
    pub message: String,
}

/// RFC 9457 problem details (`application/problem+json`) with a machine `code`. `code` is stable
/// and meant for machines; `detail` for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `https://ordo.dev/problems/<code with dashes>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Always one of [`Code`] (written only from it).
    #[schema(value_type = Code)]
    pub code: String,
    /// Every offending field of a `validation_failed` or `invalid_path` answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// Extra machine-readable facts (e.g. `requested` and `available`), when a code has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extra: Option<serde_json::Value>,
    /// Seconds to wait before retrying (sent as `Retry-After` too).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// An answer with `code` and its status.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        let status = code.status();
        Self {
            kind: format!("https://ordo.dev/problems/{}", code.as_str().replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
            errors: Vec::new(),
            extra: None,
            retry_after: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldProblem>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// Asks the client to retry after `secs` seconds (`Retry-After`).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Code::NotFound, detail)
    }

    /// 400 `invalid_path`: the path parameter `field` is not a UUID (one rule for both APIs).
    pub fn invalid_path(field: &str) -> Self {
        Self::new(Code::InvalidPath, format!("the {field} in the path is not a UUID"))
            .with_errors(vec![FieldProblem { field: field.to_owned(), message: "must be a UUID".to_owned() }])
    }

    pub fn validation(errors: Vec<FieldProblem>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Self::new(Code::ValidationFailed, detail).with_errors(errors)
    }

    /// A 500 whose body says nothing about the cause; log the cause before returning it.
    pub fn internal() -> Self {
        Self::new(Code::InternalError, "the request could not be completed")
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, detail)
    }

    /// 503 `unavailable` with `Retry-After`: no database connection was free in time.
    pub fn pool_exhausted() -> Self {
        Self::unavailable("all database connections are busy, nothing was done: retry shortly").retry_after(1)
    }

    /// The answer to a failure the client did not cause: 503 with `Retry-After` when the
    /// connection pool is exhausted, otherwise a generic 500. Logs the cause (with `what`).
    pub fn from_failure(cause: &(dyn std::error::Error + 'static), what: &str) -> Self {
        if is_pool_exhausted(cause) {
            tracing::warn!(error = %cause, what, "database pool exhausted");
            Self::pool_exhausted()
        } else {
            tracing::error!(error = %cause, what, "request failed");
            Self::internal()
        }
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Whether `cause`, or an error it wraps, is sqlx's `PoolTimedOut`: no connection of the pool
/// was free within its acquire timeout.
pub fn is_pool_exhausted(cause: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(cause);
    while let Some(e) = next {
        if matches!(e.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::PoolTimedOut)) {
            return true;
        }
        next = e.source();
    }
    false
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
