//! "Parse, don't validate" at the edge: request DTOs take loose shapes (missing fields and bad
//! strings still deserialise) and are parsed into schema types with every offending field
//! collected, so one 422 lists them all.

use ordo_schemas::values::check_text;
use ordo_schemas::{Address, CountryCode, Currency, FieldError, InvalidValue, Money};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;

/// Money on the wire: `{"amount_minor": 1999, "currency": "EUR"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Money)]
pub(crate) struct MoneyDto {
    /// Amount in minor units (cents), an integer, positive.
    #[schema(required = true, nullable = false, example = 1999, minimum = 1)]
    amount_minor: Option<i64>,
    /// ISO 4217 code, three uppercase letters.
    #[schema(required = true, nullable = false, example = "EUR", pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
}

/// A postal address.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Address)]
pub(crate) struct AddressDto {
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    line1: Option<String>,
    /// At most 200 characters; blank is the same as absent.
    #[schema(max_length = 200, pattern = r"^[^\x00]*$")]
    line2: Option<String>,
    /// 1 to 100 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 100, pattern = r"^[^\x00]*\S[^\x00]*$")]
    city: Option<String>,
    /// 1 to 16 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 16, pattern = r"^[^\x00]*\S[^\x00]*$")]
    postal_code: Option<String>,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    #[schema(required = true, nullable = false, example = "DE", pattern = "^[A-Z]{2}$")]
    country: Option<String>,
}

/// Collects field errors while parsing one request.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// The value, or a `field: is required` error.
    pub(crate) fn required<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.push(field, "is required");
        }
        value
    }

    /// Required text: not blank, at most `max` characters.
    pub(crate) fn text(&mut self, field: &str, value: Option<String>, max: usize) -> Option<String> {
        let value = self.required(field, value)?;
        self.checked(field, value, max)
    }

    /// Optional text: absent is fine, present must not be blank and at most `max` characters.
    pub(crate) fn optional_text(&mut self, field: &str, value: Option<String>, max: usize) -> Option<Option<String>> {
        match value {
            None => Some(None),
            Some(v) => self.checked(field, v, max).map(Some),
        }
    }

    fn checked(&mut self, field: &str, value: String, max: usize) -> Option<String> {
        match check_text(field, &value, max) {
            Some(e) => {
                self.errors.push(e);
                None
            }
            // Postgres JSONB cannot hold U+0000: refuse it here instead of failing the append (500)
            None if value.contains('\0') => {
                self.push(field, "must not contain NUL characters");
                None
            }
            None => Some(value),
        }
    }

    /// A required string parsed into a value type (`Email`, `Sku`, ...).
    pub(crate) fn value<T>(
        &mut self,
        field: &str,
        value: Option<String>,
        parse: impl Fn(&str) -> Result<T, InvalidValue>,
    ) -> Option<T> {
        let raw = self.required(field, value)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(field, e.reason());
                None
            }
        }
    }

    /// A required integer within `range`.
    pub(crate) fn int_in<T: TryFrom<i64>>(
        &mut self,
        field: &str,
        value: Option<i64>,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<T> {
        let v = self.required(field, value)?;
        match T::try_from(v) {
            Ok(n) if range.contains(&v) => Some(n),
            _ => {
                self.push(field, format!("must be between {} and {}", range.start(), range.end()));
                None
            }
        }
    }

    /// Required money with a positive amount.
    pub(crate) fn money(&mut self, field: &str, value: Option<MoneyDto>) -> Option<Money> {
        let m = self.required(field, value)?;
        let amount_field = format!("{field}.amount_minor");
        let amount = match self.required(&amount_field, m.amount_minor) {
            Some(a) if a <= 0 => {
                self.push(amount_field, "must be positive");
                None
            }
            other => other,
        };
        let currency = self.value(&format!("{field}.currency"), m.currency, Currency::parse);
        Some(Money::new(amount?, currency?))
    }

    /// A required address.
    pub(crate) fn address(&mut self, field: &str, value: Option<AddressDto>) -> Option<Address> {
        let a = self.required(field, value)?;
        self.some_address(field, a)
    }

    /// An address that is present.
    pub(crate) fn some_address(&mut self, field: &str, a: AddressDto) -> Option<Address> {
        let line1 = self.text(&format!("{field}.line1"), a.line1, 200);
        let line2 = a.line2.filter(|l| !l.trim().is_empty());
        let line2 = self.optional_text(&format!("{field}.line2"), line2, 200);
        let city = self.text(&format!("{field}.city"), a.city, 100);
        let postal_code = self.text(&format!("{field}.postal_code"), a.postal_code, 16);
        let country = self.value(&format!("{field}.country"), a.country, CountryCode::parse);
        match Address::new(line1?, line2?, city?, postal_code?, country?) {
            Ok(address) => Some(address),
            Err(errors) => {
                for e in errors {
                    self.push(format!("{field}.{}", e.field), e.message);
                }
                None
            }
        }
    }

    /// The parsed value when no field failed; otherwise 422 with every collected error.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if self.errors.is_empty() => Err(ApiError::Validation(vec![FieldError::new("body", "is invalid")])),
            _ => Err(ApiError::Validation(self.errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offending_field_is_reported_at_once() {
        let mut f = Fields::new();
        let address = AddressDto {
            line1: Some(" ".into()),
            line2: None,
            city: None,
            postal_code: Some("1".repeat(17)),
            country: Some("Germany".into()),
        };
        let a = f.some_address("shipping_address", address);
        let m = f.money("price", Some(MoneyDto { amount_minor: Some(0), currency: Some("eur".into()) }));
        let ApiError::Validation(errors) = f.finish(a.zip(m)).unwrap_err() else { panic!("validation") };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "shipping_address.line1",
                "shipping_address.city",
                "shipping_address.postal_code",
                "shipping_address.country",
                "price.amount_minor",
                "price.currency"
            ]
        );
    }
}
