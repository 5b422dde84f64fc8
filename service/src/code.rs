//! The one list of machine error codes: the `code` of every problem+json answer of both APIs.
//! A code string is written here and nowhere else; each code has one HTTP status.

use std::borrow::Cow;

use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A stable, machine-readable reason for an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// A malformed request that no more specific code describes (a header, say).
    BadRequest,
    /// The body is not JSON.
    MalformedJson,
    /// The query string could not be parsed.
    InvalidQuery,
    /// A path parameter is malformed (an id that is not a UUID).
    InvalidPath,
    /// Missing or invalid bearer token.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    /// No such resource or route.
    NotFound,
    /// The route exists, the method does not (the `Allow` header lists those that do).
    MethodNotAllowed,
    /// The client does not accept what the endpoint answers.
    NotAcceptable,
    /// A creation hit a resource that already exists.
    AlreadyExists,
    /// Not allowed in the resource's current state.
    InvalidState,
    /// Concurrent writers kept winning; nothing was written (`Retry-After`).
    ConcurrencyConflict,
    /// `If-Match` named another version.
    VersionConflict,
    /// The body is larger than allowed.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// Well-formed but invalid; every offending field is listed.
    ValidationFailed,
    /// The idempotency key was first used for another request.
    IdempotencyKeyReused,
    /// A reservation asked for more than is available.
    OutOfStock,
    /// A stock adjustment would fall below zero or below the reserved stock.
    InsufficientStock,
    /// A payment differs from the order total.
    AmountMismatch,
    /// An order's lines belong to more than one merchant.
    MixedMerchants,
    /// Amounts of different currencies.
    CurrencyMismatch,
    /// The product takes no new reservations.
    ProductDiscontinued,
    /// An amount or stock figure does not fit.
    Overflow,
    /// The request could not be completed; the cause is logged, never sent.
    InternalError,
    /// Temporarily unable to serve (busy event log, exhausted connection pool): `Retry-After`.
    Unavailable,
    /// The request took longer than allowed.
    Timeout,
    /// The identity provider's keys cannot be fetched (`Retry-After`).
    KeysUnavailable,
}

impl Code {
    /// Every code, in status order.
    pub const ALL: [Code; 28] = [
        Code::BadRequest,
        Code::MalformedJson,
        Code::InvalidQuery,
        Code::InvalidPath,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::NotAcceptable,
        Code::AlreadyExists,
        Code::InvalidState,
        Code::ConcurrencyConflict,
        Code::VersionConflict,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::ValidationFailed,
        Code::IdempotencyKeyReused,
        Code::OutOfStock,
        Code::InsufficientStock,
        Code::AmountMismatch,
        Code::MixedMerchants,
        Code::CurrencyMismatch,
        Code::ProductDiscontinued,
        Code::Overflow,
        Code::InternalError,
        Code::Unavailable,
        Code::Timeout,
        Code::KeysUnavailable,
    ];

    /// The code as sent in `code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::MalformedJson => "malformed_json",
            Code::InvalidQuery => "invalid_query",
            Code::InvalidPath => "invalid_path",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::NotAcceptable => "not_acceptable",
            Code::AlreadyExists => "already_exists",
            Code::InvalidState => "invalid_state",
            Code::ConcurrencyConflict => "concurrency_conflict",
            Code::VersionConflict => "version_conflict",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::ValidationFailed => "validation_failed",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::OutOfStock => "out_of_stock",
            Code::InsufficientStock => "insufficient_stock",
            Code::AmountMismatch => "amount_mismatch",
            Code::MixedMerchants => "mixed_merchants",
            Code::CurrencyMismatch => "currency_mismatch",
            Code::ProductDiscontinued => "product_discontinued",
            Code::Overflow => "overflow",
            Code::InternalError => "internal_error",
            Code::Unavailable => "unavailable",
            Code::Timeout => "timeout",
            Code::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The HTTP status every answer with this code has.
    pub const fn status(self) -> StatusCode {
        match self {
            Code::BadRequest | Code::MalformedJson | Code::InvalidQuery | Code::InvalidPath => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Code::AlreadyExists | Code::InvalidState | Code::ConcurrencyConflict => StatusCode::CONFLICT,
            Code::VersionConflict => StatusCode::PRECONDITION_FAILED,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::ValidationFailed
            | Code::IdempotencyKeyReused
            | Code::OutOfStock
            | Code::InsufficientStock
            | Code::AmountMismatch
            | Code::MixedMerchants
            | Code::CurrencyMismatch
            | Code::ProductDiscontinued
            | Code::Overflow => StatusCode::UNPROCESSABLE_ENTITY,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable | Code::Timeout | Code::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Code::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s}")))
    }
}

/// In the OpenAPI documents: a string enum of every code, generated from [`Code::ALL`].
impl utoipa::PartialSchema for Code {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
            .description(Some("Machine-readable reason; each code always comes with the same status."))
            .into()
    }
}

impl utoipa::ToSchema for Code {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Code")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_code_has_a_distinct_string_an_error_status_and_parses_back() {
        let strings: HashSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strings.len(), Code::ALL.len(), "two codes share a string");
        for code in Code::ALL {
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{code}");
            assert_eq!(Code::parse(code.as_str()), Some(code));
            let s = code.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s} is not snake_case");
            assert_eq!(serde_json::to_value(code).unwrap_or_default(), s);
        }
    }

    #[test]
    fn the_schema_lists_every_code_as_an_enum() {
        let schema = serde_json::to_value(<Code as utoipa::PartialSchema>::schema()).unwrap_or_default();
        let listed: Vec<&str> = schema["enum"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        assert_eq!(listed, Code::ALL.map(Code::as_str));
    }
}
