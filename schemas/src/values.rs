//! Validated value types ("parse, don't validate"): once constructed they are known to be valid,
//! and deserialising an invalid value fails, so commands and events never carry bad data.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A value that failed to parse, e.g. a malformed email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidValue {
    what: &'static str,
    reason: Cow<'static, str>,
}

impl InvalidValue {
    /// `what` names the kind of value (`email`, `sku`), `reason` says what is wrong.
    pub fn new(what: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self { what, reason: reason.into() }
    }

    /// The kind of value that was invalid.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// What is wrong with it, without the kind (suitable after a field name).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// One offending field of a request, command or value, e.g. `lines[2].quantity`.
///
/// Validation reports every offending field at once, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// Path of the field in the request body (`shipping_address.city`, `lines[0].quantity`).
    pub field: String,
    /// Lowercase message without trailing period.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Implements the string plumbing shared by the validated string newtypes.
macro_rules! string_newtype {
    ($ty:ident, $name:literal, $schema:tt) => {
        impl $ty {
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> Self {
                v.as_str().to_owned()
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// An email address: at most 254 characters, one `@`, a non-empty local part of at most 64
/// characters and a dotted domain. Deliberately simple; deliverability is not checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Email(String);

impl Email {
    /// Maximum length in characters (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    /// Parses an address such as `ada@example.com`, kept exactly as given.
    ///
    /// # Errors
    /// [`InvalidValue`] for whitespace, a missing or doubled `@`, an empty or over-long part,
    /// or a domain without a dot.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let bad = |reason: &'static str| Err(InvalidValue::new("email", reason));
        if s.chars().count() > Self::MAX_LEN {
            return bad("must be at most 254 characters");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must not contain whitespace");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return bad("must contain @");
        };
        if domain.contains('@') {
            return bad("must contain exactly one @");
        }
        if local.is_empty() || local.chars().count() > 64 {
            return bad("local part must be 1 to 64 characters");
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return bad("local part has misplaced dots");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return bad("domain must contain a dot");
        }
        let label_ok = |l: &&str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if !labels.iter().all(label_ok) {
            return bad("domain is malformed");
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(Email, "Email", {
    "description": "email address",
    "type": "string",
    "format": "email",
    "minLength": 3,
    "maxLength": 254
});

/// An ISO 3166-1 alpha-2 country code: two uppercase ASCII letters (`DE`, `FR`).
///
/// Only the shape is checked, not membership in the ISO list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses a code such as `DE`.
    ///
    /// # Errors
    /// [`InvalidValue`] unless the input is exactly two ASCII uppercase letters.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Self([*a, *b])),
            _ => Err(InvalidValue::new("country", "must be an ISO 3166-1 alpha-2 code of 2 uppercase ASCII letters")),
        }
    }

    /// The two-letter code.
    pub fn as_str(&self) -> &str {
        // the bytes are validated ASCII, so this never falls back
        std::str::from_utf8(&self.0).unwrap_or("XX")
    }
}

impl std::fmt::Display for CountryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CountryCode {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for CountryCode {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CountryCode> for String {
    fn from(c: CountryCode) -> Self {
        c.as_str().to_owned()
    }
}

impl JsonSchema for CountryCode {
    fn schema_name() -> Cow<'static, str> {
        "CountryCode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "ISO 3166-1 alpha-2 country code",
            "type": "string",
            "pattern": "^[A-Z]{2}$",
            "minLength": 2,
            "maxLength": 2
        })
    }
}

/// A stock keeping unit: 1 to 64 characters of `[A-Za-z0-9._-]`. Unique per merchant (checked
/// by the command side, not here).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Sku(String);

impl Sku {
    /// Maximum length in characters.
    pub const MAX_LEN: usize = 64;

    /// Parses a SKU such as `TSHIRT-RED.XL_2`.
    ///
    /// # Errors
    /// [`InvalidValue`] when empty, longer than 64 or containing other characters.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(InvalidValue::new("sku", "must be 1 to 64 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(InvalidValue::new("sku", "may contain only A-Z, a-z, 0-9, '.', '_' and '-'"));
        }
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(Sku, "Sku", {
    "description": "stock keeping unit",
    "type": "string",
    "pattern": "^[A-Za-z0-9._-]{1,64}$",
    "minLength": 1,
    "maxLength": 64
});

/// A postal address. Text fields are non-blank and bounded; `line2` is absent rather than blank.
///
/// Deserialising checks the same rules as [`Address::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "AddressFields")]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: CountryCode,
}

/// The unchecked wire form of [`Address`]; its schema is the address schema.
#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "Address")]
#[doc(hidden)]
pub struct AddressFields {
    /// Street and number, 1 to 200 characters.
    #[schemars(length(min = 1, max = 200))]
    line1: String,
    /// Optional second line, at most 200 characters.
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    line2: Option<String>,
    /// 1 to 100 characters.
    #[schemars(length(min = 1, max = 100))]
    city: String,
    /// 1 to 16 characters.
    #[schemars(length(min = 1, max = 16))]
    postal_code: String,
    country: CountryCode,
}

impl Address {
    /// Builds an address, reporting every offending field (`line1`, `city`, ...).
    ///
    /// A blank `line2` is stored as `None`.
    ///
    /// # Errors
    /// One [`FieldError`] per blank or over-long field.
    pub fn new(
        line1: impl Into<String>,
        line2: Option<String>,
        city: impl Into<String>,
        postal_code: impl Into<String>,
        country: CountryCode,
    ) -> Result<Self, Vec<FieldError>> {
        let (line1, city, postal_code) = (line1.into(), city.into(), postal_code.into());
        let line2 = line2.filter(|l| !l.trim().is_empty());
        let mut errors = Vec::new();
        for (field, value, max) in [("line1", &line1, 200), ("city", &city, 100), ("postal_code", &postal_code, 16)] {
            if let Some(e) = check_text(field, value, max) {
                errors.push(e);
            }
        }
        if let Some(e) = line2.as_ref().and_then(|l| check_text("line2", l, 200)) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(Self { line1, line2, city, postal_code, country })
        } else {
            Err(errors)
        }
    }
}

impl TryFrom<AddressFields> for Address {
    type Error = String;
    fn try_from(f: AddressFields) -> Result<Self, Self::Error> {
        Address::new(f.line1, f.line2, f.city, f.postal_code, f.country).map_err(|errors| {
            let parts: Vec<String> = errors.iter().map(|e| format!("address.{}: {}", e.field, e.message)).collect();
            parts.join("; ")
        })
    }
}

/// Checks a free-text field: not blank and at most `max` characters. Used by commands for names,
/// carriers, references.
pub fn check_text(field: &str, value: &str, max: usize) -> Option<FieldError> {
    if value.trim().is_empty() {
        Some(FieldError::new(field, "must not be blank"))
    } else if value.chars().count() > max {
        Some(FieldError::new(field, format!("must be at most {max} characters")))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_values_parse_and_round_trip() {
        let email: Email = serde_json::from_value(json!("ada@example.com")).expect("email");
        assert_eq!(serde_json::to_value(&email).expect("ser"), json!("ada@example.com"));
        let sku: Sku = serde_json::from_value(json!("TSHIRT-red.XL_2")).expect("sku");
        assert_eq!(sku.as_str(), "TSHIRT-red.XL_2");
        let cc: CountryCode = serde_json::from_value(json!("DE")).expect("country");
        assert_eq!(serde_json::to_value(cc).expect("ser"), json!("DE"));
    }

    #[test]
    fn invalid_emails_are_rejected_on_deserialize() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@example.com",
            "ada@.example.com",
            "ada@example..com",
            ".ada@example.com",
            "ada@-x.com",
            &long,
        ] {
            assert!(serde_json::from_value::<Email>(json!(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn invalid_country_codes_are_rejected_on_deserialize() {
        for bad in ["", "D", "de", "DEU", "D1", "Dé"] {
            assert!(serde_json::from_value::<CountryCode>(json!(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn invalid_skus_are_rejected_on_deserialize() {
        let long = "A".repeat(65);
        for bad in ["", "with space", "slash/sku", "ümlaut", &long] {
            assert!(serde_json::from_value::<Sku>(json!(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_value::<Sku>(json!("A".repeat(64))).is_ok());
    }

    #[test]
    fn address_validates_every_field_and_drops_blank_line2() {
        let de = CountryCode::parse("DE").expect("valid");
        let errors = Address::new(" ", None, "", "1".repeat(17), de).expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["line1", "city", "postal_code"]);
        let a = Address::new("Main St 1", Some("  ".into()), "Berlin", "10115", de).expect("valid");
        assert_eq!(a.line2, None);
    }

    #[test]
    fn invalid_addresses_are_rejected_on_deserialize() {
        let ok = json!({"line1": "Main St 1", "city": "Berlin", "postal_code": "10115", "country": "DE"});
        assert!(serde_json::from_value::<Address>(ok.clone()).is_ok());
        let mut blank_city = ok.clone();
        blank_city["city"] = json!(" ");
        let err = serde_json::from_value::<Address>(blank_city).expect_err("blank city");
        assert!(err.to_string().contains("address.city"), "{err}");
        let mut bad_country = ok;
        bad_country["country"] = json!("Germany");
        assert!(serde_json::from_value::<Address>(bad_country).is_err());
    }
}
