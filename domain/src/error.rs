//! Domain rejections with stable machine codes.

use ordo_schemas::{Currency, Money, MoneyError};
use uuid::Uuid;

pub use ordo_schemas::FieldError;

/// How a rejection maps onto the HTTP contract, without depending on HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The command conflicts with the current state (HTTP 409): `invalid_state`, `already_exists`.
    Conflict,
    /// The command is well-formed but not acceptable (HTTP 422): every other code but `not_found`.
    Unprocessable,
    /// The aggregate does not exist (HTTP 404).
    NotFound,
}

/// Why an aggregate refused a command. Each variant has a stable [`DomainError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command is not allowed in the aggregate's current lifecycle state.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A creation command hit an aggregate that already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The aggregate does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// One or more fields are invalid; every offending field is listed.
    #[error("validation failed: {}", summarise(.errors))]
    ValidationFailed { errors: Vec<FieldError> },
    /// A reservation asked for more than is available (on hand minus reserved).
    #[error("out of stock: requested {requested}, available {available}")]
    OutOfStock { requested: u32, available: i64 },
    /// A stock adjustment would take on-hand stock below zero or below reserved stock.
    #[error("insufficient stock: adjusting {on_hand} on hand by {delta} would fall below {reserved} reserved or zero")]
    InsufficientStock { on_hand: i64, reserved: i64, delta: i64 },
    /// A payment amount differs from the order total.
    #[error("amount mismatch: expected {expected}, got {actual}")]
    AmountMismatch { expected: Money, actual: Money },
    /// An order's lines belong to more than one merchant.
    #[error("mixed merchants: an order must have exactly one merchant")]
    MixedMerchants { merchants: Vec<Uuid> },
    /// Amounts of different currencies were combined, or a price changed currency.
    #[error("currency mismatch: expected {expected}, got {actual}")]
    CurrencyMismatch { expected: Currency, actual: Currency },
    /// The product is discontinued and takes no new reservations.
    #[error("product discontinued: {product_id}")]
    ProductDiscontinued { product_id: Uuid },
    /// An amount or stock figure does not fit its integer type.
    #[error("overflow: {0}")]
    Overflow(String),
}

fn summarise(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
    parts.join("; ")
}

impl DomainError {
    /// The stable machine code (`invalid_state`, `already_exists`, `not_found`,
    /// `validation_failed`, `out_of_stock`, `insufficient_stock`, `amount_mismatch`,
    /// `mixed_merchants`, `currency_mismatch`, `product_discontinued`, `overflow`).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidState(_) => "invalid_state",
            DomainError::AlreadyExists(_) => "already_exists",
            DomainError::NotFound(_) => "not_found",
            DomainError::ValidationFailed { .. } => "validation_failed",
            DomainError::OutOfStock { .. } => "out_of_stock",
            DomainError::InsufficientStock { .. } => "insufficient_stock",
            DomainError::AmountMismatch { .. } => "amount_mismatch",
            DomainError::MixedMerchants { .. } => "mixed_merchants",
            DomainError::CurrencyMismatch { .. } => "currency_mismatch",
            DomainError::ProductDiscontinued { .. } => "product_discontinued",
            DomainError::Overflow(_) => "overflow",
        }
    }

    /// Conflict (409), unprocessable (422) or not found (404).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::InvalidState(_) | DomainError::AlreadyExists(_) => ErrorKind::Conflict,
            DomainError::NotFound(_) => ErrorKind::NotFound,
            _ => ErrorKind::Unprocessable,
        }
    }

    /// The offending fields of a `validation_failed` error, empty otherwise.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            DomainError::ValidationFailed { errors } => errors,
            _ => &[],
        }
    }

    /// A `validation_failed` error with one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::ValidationFailed { errors: vec![FieldError::new(field, message)] }
    }

    /// `Ok(())` when `errors` is empty, otherwise `validation_failed` with all of them.
    ///
    /// # Errors
    /// [`DomainError::ValidationFailed`] when there is at least one field error.
    pub fn check(errors: Vec<FieldError>) -> Result<(), DomainError> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::ValidationFailed { errors })
        }
    }
}

impl From<MoneyError> for DomainError {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::CurrencyMismatch { left, right } => {
                DomainError::CurrencyMismatch { expected: left, actual: right }
            }
            MoneyError::Overflow => DomainError::Overflow("money amount does not fit".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let eur = Currency::parse("EUR").expect("valid");
        let cases = [
            (DomainError::InvalidState("x".into()), "invalid_state", ErrorKind::Conflict),
            (DomainError::AlreadyExists("x".into()), "already_exists", ErrorKind::Conflict),
            (DomainError::NotFound("x".into()), "not_found", ErrorKind::NotFound),
            (DomainError::field("f", "m"), "validation_failed", ErrorKind::Unprocessable),
            (DomainError::OutOfStock { requested: 1, available: 0 }, "out_of_stock", ErrorKind::Unprocessable),
            (
                DomainError::InsufficientStock { on_hand: 1, reserved: 1, delta: -1 },
                "insufficient_stock",
                ErrorKind::Unprocessable,
            ),
            (
                DomainError::AmountMismatch { expected: Money::new(1, eur), actual: Money::new(2, eur) },
                "amount_mismatch",
                ErrorKind::Unprocessable,
            ),
            (DomainError::MixedMerchants { merchants: vec![] }, "mixed_merchants", ErrorKind::Unprocessable),
            (
                DomainError::CurrencyMismatch { expected: eur, actual: eur },
                "currency_mismatch",
                ErrorKind::Unprocessable,
            ),
            (
                DomainError::ProductDiscontinued { product_id: Uuid::nil() },
                "product_discontinued",
                ErrorKind::Unprocessable,
            ),
            (DomainError::Overflow("x".into()), "overflow", ErrorKind::Unprocessable),
        ];
        for (err, code, kind) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.kind(), kind, "{code}");
            let msg = err.to_string();
            assert!(!msg.ends_with('.') && msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
        }
    }

    #[test]
    fn validation_lists_every_field() {
        let err =
            DomainError::check(vec![FieldError::new("a", "bad"), FieldError::new("b", "worse")]).expect_err("invalid");
        assert_eq!(err.field_errors().len(), 2);
        assert_eq!(err.to_string(), "validation failed: a: bad; b: worse");
        assert!(DomainError::check(vec![]).is_ok());
    }
}
