//! The API's one error type and its one mapping onto problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ordo_domain::{DomainError, ErrorKind, FieldError};
use ordo_service::problem::FieldProblem;
use ordo_service::Problem;
use serde_json::json;

use ordo_commands::CommandError;

/// Everything a command request can fail with.
///
/// | variant | status | code |
/// |---|---|---|
/// | `Request` | as given (400, 401, 403, 413, 415, 422) | as given |
/// | `Validation` | 422 | `validation_failed` (every field listed) |
/// | `Command(Domain)` | 409 / 422 / 404 by [`DomainError::kind`] | the domain code |
/// | `Command(VersionConflict)` | 412 | `version_conflict` |
/// | `Command(NotFound)` | 404 | `not_found` |
/// | `Command(Forbidden)` | 403 | `forbidden` |
/// | `Command(IdempotencyKeyReused)` | 422 | `idempotency_key_reused` |
/// | `Command(Contention)` | 409 with `Retry-After` | `concurrency_conflict` |
/// | `Command(Unavailable)` | 503 with `Retry-After` | `unavailable` |
/// | `Command(Store)` | 500, generic body, cause logged | `internal_error` |
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Refused at the edge: authentication, role, malformed request (already a problem).
    #[error("{}", .0.detail)]
    Request(Problem),
    /// The body parsed but fields are invalid; lists every offending field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The command was refused or could not be recorded.
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError::Request(p)
    }
}

fn field_problems(errors: &[FieldError]) -> Vec<FieldProblem> {
    errors.iter().map(|e| FieldProblem { field: e.field.clone(), message: e.message.clone() }).collect()
}

fn domain_problem(e: &DomainError) -> Problem {
    if let DomainError::ValidationFailed { errors } = e {
        return Problem::validation(field_problems(errors));
    }
    let status = match e.kind() {
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
    };
    let problem = Problem::new(status, e.code(), e.to_string());
    let extra = match e {
        DomainError::OutOfStock { requested, available } => {
            Some(json!({"requested": requested, "available": available}))
        }
        DomainError::InsufficientStock { on_hand, reserved, delta } => {
            Some(json!({"on_hand": on_hand, "reserved": reserved, "delta": delta}))
        }
        DomainError::AmountMismatch { expected, actual } => Some(json!({"expected": expected, "actual": actual})),
        DomainError::MixedMerchants { merchants } => Some(json!({"merchants": merchants})),
        DomainError::CurrencyMismatch { expected, actual } => Some(json!({"expected": expected, "actual": actual})),
        DomainError::ProductDiscontinued { product_id } => Some(json!({"product_id": product_id})),
        _ => None,
    };
    match extra {
        Some(extra) => problem.with_extra(extra),
        None => problem,
    }
}

impl ApiError {
    /// The problem document this error answers with. Infrastructure causes are logged here and
    /// never sent.
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::Request(p) => p.clone(),
            ApiError::Validation(errors) => Problem::validation(field_problems(errors)),
            ApiError::Command(e) => match e {
                CommandError::Domain(d) => domain_problem(d),
                CommandError::VersionConflict { expected, actual } => Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "version_conflict",
                    format!("expected version {expected}, the stream is at {actual}"),
                )
                .with_extra(json!({"expected_version": expected, "actual_version": actual})),
                CommandError::NotFound(what) => Problem::not_found(what.clone()),
                CommandError::Forbidden(why) => Problem::forbidden(why.clone()),
                CommandError::IdempotencyKeyReused => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this idempotency key was used for a different request",
                ),
                CommandError::Contention { retries } => {
                    let mut p = Problem::new(
                        StatusCode::CONFLICT,
                        "concurrency_conflict",
                        format!("the resource is busy: gave up after {retries} retries, nothing was written"),
                    );
                    p.retry_after = Some(1);
                    p
                }
                CommandError::Unavailable(why) => {
                    tracing::warn!(reason = %why, "command not recorded, the event log is busy");
                    let mut p = Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the event log is busy, nothing was written: retry shortly",
                    );
                    p.retry_after = Some(1);
                    p
                }
                CommandError::Store(cause) => {
                    tracing::error!(error = %cause, "command could not be recorded");
                    Problem::internal()
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_error_maps_to_its_status_and_code() {
        let cases: Vec<(CommandError, u16, &str)> = vec![
            (CommandError::Domain(DomainError::InvalidState("x".into())), 409, "invalid_state"),
            (CommandError::Domain(DomainError::AlreadyExists("x".into())), 409, "already_exists"),
            (CommandError::Domain(DomainError::OutOfStock { requested: 2, available: 1 }), 422, "out_of_stock"),
            (CommandError::Domain(DomainError::field("a", "b")), 422, "validation_failed"),
            (CommandError::VersionConflict { expected: 1, actual: 2 }, 412, "version_conflict"),
            (CommandError::NotFound("x".into()), 404, "not_found"),
            (CommandError::Forbidden("x".into()), 403, "forbidden"),
            (CommandError::IdempotencyKeyReused, 422, "idempotency_key_reused"),
            (CommandError::Contention { retries: 3 }, 409, "concurrency_conflict"),
            (CommandError::Unavailable("held".into()), 503, "unavailable"),
            (CommandError::Store(ordo_event_store::StoreError::Corrupt("secret cause".into())), 500, "internal_error"),
        ];
        for (e, status, code) in cases {
            let p = ApiError::from(e).problem();
            assert_eq!((p.status, p.code.as_str()), (status, code));
            assert!(!p.detail.contains("secret cause"));
        }
    }
}
