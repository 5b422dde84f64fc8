//! Money as integer minor units plus an ISO 4217 currency. Never floating point.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use crate::values::InvalidValue;

/// An ISO 4217 currency code: exactly three ASCII uppercase letters (`EUR`, `USD`).
///
/// Only the shape is checked, not membership in the ISO list, so test codes such as `XTS` work.
/// Serialises as the plain string; deserialising an invalid code fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code such as `EUR`.
    ///
    /// # Errors
    /// [`InvalidValue`] unless the input is exactly three ASCII uppercase letters.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(InvalidValue::new("currency", "must be an ISO 4217 code of exactly 3 uppercase ASCII letters")),
        }
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        // the bytes are validated ASCII, so this never falls back
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Currency {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.as_str().to_owned()
    }
}

impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "ISO 4217 currency code",
            "type": "string",
            "pattern": "^[A-Z]{3}$",
            "minLength": 3,
            "maxLength": 3
        })
    }
}

/// Why a money operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The operands have different currencies; amounts are never converted implicitly.
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    /// The result does not fit in an `i64` of minor units.
    #[error("money amount overflow")]
    Overflow,
}

/// An amount in minor units (cents for EUR) of one currency, e.g. `{"amount_minor": 1999,
/// "currency": "EUR"}` for 19.99 EUR.
///
/// Arithmetic is checked: it fails on overflow and on mixed currencies instead of wrapping or
/// converting. The amount may be negative (a delta); callers that need a positive price check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Money {
    /// Amount in the currency's minor unit.
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self { amount_minor, currency }
    }

    /// Zero in the given currency, the neutral start of a sum.
    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// True when the amount is strictly greater than zero.
    pub fn is_positive(&self) -> bool {
        self.amount_minor > 0
    }

    /// Adds two amounts of the same currency.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] for different currencies, [`MoneyError::Overflow`] when
    /// the sum does not fit.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(|a| Money::new(a, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// Subtracts an amount of the same currency.
    ///
    /// # Errors
    /// As [`Money::checked_add`].
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_sub(other.amount_minor)
            .map(|a| Money::new(a, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// Multiplies by a quantity (a line total is `unit_price * quantity`).
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the product does not fit.
    pub fn checked_mul(&self, factor: u32) -> Result<Money, MoneyError> {
        self.amount_minor
            .checked_mul(i64::from(factor))
            .map(|a| Money::new(a, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }
}

impl std::fmt::Display for Money {
    /// Formats as minor units and code, e.g. `1999 EUR`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(a: i64) -> Money {
        Money::new(a, Currency::parse("EUR").expect("valid"))
    }

    #[test]
    fn money_serialises_as_minor_units_and_code() {
        let json = serde_json::to_value(eur(1999)).expect("serialise");
        assert_eq!(json, serde_json::json!({"amount_minor": 1999, "currency": "EUR"}));
        let back: Money = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, eur(1999));
    }

    #[test]
    fn invalid_currencies_are_rejected() {
        for bad in ["eur", "EU", "EURO", "", "E1R", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad} accepted");
            let json = serde_json::json!({"amount_minor": 1, "currency": bad});
            assert!(serde_json::from_value::<Money>(json).is_err(), "{bad} deserialised");
        }
    }

    #[test]
    fn money_rejects_floats_on_deserialize() {
        let json = serde_json::json!({"amount_minor": 19.99, "currency": "EUR"});
        assert!(serde_json::from_value::<Money>(json).is_err());
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(eur(2).checked_add(&eur(3)), Ok(eur(5)));
        assert_eq!(eur(7).checked_mul(3), Ok(eur(21)));
        assert_eq!(eur(i64::MAX).checked_add(&eur(1)), Err(MoneyError::Overflow));
        assert_eq!(eur(i64::MAX).checked_mul(2), Err(MoneyError::Overflow));
        let usd = Money::new(1, Currency::parse("USD").expect("valid"));
        assert!(matches!(eur(1).checked_add(&usd), Err(MoneyError::CurrencyMismatch { .. })));
    }
}
