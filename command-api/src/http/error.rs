//! The API's one error type and its one mapping onto problem+json.

use axum::response::{IntoResponse, Response};
use ordo_domain::{DomainError, FieldError};
use ordo_event_store::StoreError;
use ordo_service::problem::FieldProblem;
use ordo_service::{Code, Problem};
use serde_json::json;

use ordo_commands::CommandError;

/// Everything a command request can fail with.
///
/// | variant | status | code |
/// |---|---|---|
/// | `Request` | as given (400, 401, 403, 413, 415, 422) | as given |
/// | `Validation` | 422 | `validation_failed` (every field listed) |
/// | `Command(Domain)` | the status of its [`Code`] ([`domain_code`]) | the domain code |
/// | `Command(VersionConflict)` | 412 | `version_conflict` |
/// | `Command(NotFound)` | 404 | `not_found` |
/// | `Command(Forbidden)` | 403 | `forbidden` |
/// | `Command(IdempotencyKeyReused)` | 422 | `idempotency_key_reused` |
/// | `Command(Contention)` | 409 with `Retry-After` | `concurrency_conflict` |
/// | `Command(Unavailable)` | 503 with `Retry-After` | `unavailable` |
/// | `Command(Store)`, the connection pool exhausted | 503 with `Retry-After` | `unavailable` |
/// | `Command(Store)`, anything else | 500, generic body, cause logged | `internal_error` |
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

/// The code of a domain rejection (the same string as [`DomainError::code`]).
pub(crate) fn domain_code(e: &DomainError) -> Code {
    match e {
        DomainError::InvalidState(_) => Code::InvalidState,
        DomainError::AlreadyExists(_) => Code::AlreadyExists,
        DomainError::NotFound(_) => Code::NotFound,
        DomainError::ValidationFailed { .. } => Code::ValidationFailed,
        DomainError::OutOfStock { .. } => Code::OutOfStock,
        DomainError::InsufficientStock { .. } => Code::InsufficientStock,
        DomainError::AmountMismatch { .. } => Code::AmountMismatch,
        DomainError::MixedMerchants { .. } => Code::MixedMerchants,
        DomainError::CurrencyMismatch { .. } => Code::CurrencyMismatch,
        DomainError::ProductDiscontinued { .. } => Code::ProductDiscontinued,
        DomainError::Overflow(_) => Code::Overflow,
    }
}

fn domain_problem(e: &DomainError) -> Problem {
    if let DomainError::ValidationFailed { errors } = e {
        return Problem::validation(field_problems(errors));
    }
    let problem = Problem::new(domain_code(e), e.to_string());
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
                    Code::VersionConflict,
                    format!("expected version {expected}, the stream is at {actual}"),
                )
                .with_extra(json!({"expected_version": expected, "actual_version": actual})),
                CommandError::NotFound(what) => Problem::not_found(what.clone()),
                CommandError::Forbidden(why) => Problem::forbidden(why.clone()),
                CommandError::IdempotencyKeyReused => {
                    Problem::new(Code::IdempotencyKeyReused, "this idempotency key was used for a different request")
                }
                CommandError::Contention { retries } => Problem::new(
                    Code::ConcurrencyConflict,
                    format!("the resource is busy: gave up after {retries} retries, nothing was written"),
                )
                .retry_after(1),
                CommandError::Unavailable(why) => {
                    tracing::warn!(reason = %why, "command not recorded, the event log is busy");
                    Problem::unavailable("the event log is busy, nothing was written: retry shortly").retry_after(1)
                }
                CommandError::Store(cause) => store_problem(cause),
            },
        }
    }
}

/// 503 with `Retry-After` when no database connection was free in time, else a generic 500;
/// the cause is logged either way.
fn store_problem(cause: &StoreError) -> Problem {
    Problem::from_failure(cause, "command could not be recorded")
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
            (CommandError::Store(StoreError::Corrupt("secret cause".into())), 500, "internal_error"),
            (CommandError::Store(StoreError::Database(sqlx::Error::PoolTimedOut)), 503, "unavailable"),
        ];
        for (e, status, code) in cases {
            let p = ApiError::from(e).problem();
            assert_eq!((p.status, p.code.as_str()), (status, code));
            assert!(!p.detail.contains("secret cause"));
            assert_eq!(Code::parse(&p.code).map(|c| c.status().as_u16()), Some(status), "{code}");
        }
    }

    /// One of each variant of [`DomainError`] (a new variant without a code does not compile in
    /// [`domain_code`]; add it here too).
    fn every_domain_error() -> Vec<DomainError> {
        let eur = ordo_schemas::Currency::parse("EUR").expect("valid");
        let money = ordo_schemas::Money::new(1, eur);
        vec![
            DomainError::InvalidState("x".into()),
            DomainError::AlreadyExists("x".into()),
            DomainError::NotFound("x".into()),
            DomainError::field("a", "b"),
            DomainError::OutOfStock { requested: 2, available: 1 },
            DomainError::InsufficientStock { on_hand: 1, reserved: 1, delta: -1 },
            DomainError::AmountMismatch { expected: money, actual: money },
            DomainError::MixedMerchants { merchants: vec![] },
            DomainError::CurrencyMismatch { expected: eur, actual: eur },
            DomainError::ProductDiscontinued { product_id: uuid::Uuid::nil() },
            DomainError::Overflow("x".into()),
        ]
    }

    #[test]
    fn every_domain_error_code_is_in_the_list_of_codes_with_the_status_of_its_kind() {
        let errors = every_domain_error();
        let distinct: std::collections::HashSet<&str> = errors.iter().map(DomainError::code).collect();
        assert_eq!(distinct.len(), errors.len(), "each domain error has its own code");
        for e in errors {
            let code = Code::parse(e.code()).unwrap_or_else(|| panic!("{} is not a Code", e.code()));
            assert_eq!(domain_code(&e), code, "{e}");
            let kind_status = match e.kind() {
                ordo_domain::ErrorKind::Conflict => 409,
                ordo_domain::ErrorKind::Unprocessable => 422,
                ordo_domain::ErrorKind::NotFound => 404,
            };
            assert_eq!(code.status().as_u16(), kind_status, "{code}");
            assert_eq!(ApiError::from(CommandError::Domain(e)).problem().code, code.as_str());
        }
    }
}
