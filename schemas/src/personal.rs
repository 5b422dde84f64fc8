//! Personal data in events: the [`Personal`] wrapper that marks a field, the stored form of an
//! encrypted field ([`SealedField`]) and the list of marked fields per event type
//! ([`personal_fields`]), read from the generated JSON Schemas (ADR 0027).
//!
//! Declaring an event field as `Personal<T>` is the one place that makes it personal: its schema
//! carries `"x-personal": true`, the event store encrypts it with the data subject's key before
//! hashing, and readers that hold the key turn it back into the value. The data subject is the
//! customer named by the payload's `customer_id`; for an order event without one (free text such
//! as a payment reference), the customer of the order (its `OrderPlaced`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use crate::envelope::StreamCategory;
use crate::events::event_types_of;

/// The JSON Schema keyword that marks a personal field.
pub const PERSONAL_KEYWORD: &str = "x-personal";

/// The payload member naming the data subject (a customer id) of an event with personal fields.
pub const SUBJECT_FIELD: &str = "customer_id";

/// The only format of [`SealedField`] so far.
pub const SEALED_V1: &str = "v1";

/// A personal field as stored: AES-256-GCM ciphertext under the data subject's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SealedField {
    /// Format of the sealed value: `v1`.
    pub enc: String,
    /// Reference of the data subject's key.
    pub kid: Uuid,
    /// The 12-byte nonce, standard base64 with padding.
    pub n: String,
    /// Ciphertext followed by the 16-byte tag, standard base64 with padding.
    pub ct: String,
}

impl SealedField {
    /// The sealed value in `value`, if it is one (an object with `enc`, `kid`, `n`, `ct`).
    pub fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Object(m) if m.contains_key("enc") && m.contains_key("ct") => {
                serde_json::from_value(value.clone()).ok()
            }
            _ => None,
        }
    }
}

/// A personal value: known, still sealed (read without the key), or erased (the key is gone).
///
/// Serialises as the value itself, as the sealed object, or as `null` once erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal<T> {
    /// The value in clear.
    Known(T),
    /// The stored ciphertext, read by a process that did not decrypt it.
    Sealed(SealedField),
    /// The data subject's key was destroyed: the value is gone for good.
    Erased,
}

impl<T> Personal<T> {
    /// The value, when known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known(v) => Some(v),
            _ => None,
        }
    }

    pub fn is_erased(&self) -> bool {
        matches!(self, Personal::Erased)
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Personal::Known(value)
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Personal::Known(v) => v.serialize(serializer),
            Personal::Sealed(s) => s.serialize(serializer),
            Personal::Erased => serializer.serialize_none(),
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(Personal::Erased);
        }
        if let Some(sealed) = SealedField::from_value(&value) {
            return Ok(Personal::Sealed(sealed));
        }
        serde_json::from_value(value).map(Personal::Known).map_err(serde::de::Error::custom)
    }
}

impl<T: JsonSchema> JsonSchema for Personal<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Personal_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let known = generator.subschema_for::<T>();
        let sealed = generator.subschema_for::<SealedField>();
        schemars::json_schema!({
            "anyOf": [known, sealed, {"type": "null"}],
            PERSONAL_KEYWORD: true,
        })
    }
}

/// The marked (top-level) fields of every event type, read once from the generated schemas.
type FieldMap = HashMap<StreamCategory, HashMap<&'static str, Vec<String>>>;

static FIELDS: LazyLock<FieldMap> = LazyLock::new(|| {
    let mut out: FieldMap = HashMap::new();
    let Ok(files) = crate::json_schema::schema_files() else { return out };
    for category in StreamCategory::ALL {
        for info in event_types_of(category) {
            let path = format!("events/{}.v{}.json", info.event_type, info.schema_version);
            let Some(doc) = files.get(&path).and_then(|text| serde_json::from_str::<Value>(text).ok()) else {
                continue;
            };
            let mut fields: Vec<String> = doc
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .filter(|(_, s)| s.get(PERSONAL_KEYWORD).and_then(Value::as_bool) == Some(true))
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .unwrap_or_default();
            fields.sort();
            if !fields.is_empty() {
                out.entry(category).or_default().insert(info.event_type, fields);
            }
        }
    }
    out
});

/// The personal fields of the current schema version of `event_type` (top-level payload
/// members), sorted; empty for an event type without any.
pub fn personal_fields(category: StreamCategory, event_type: &str) -> &'static [String] {
    FIELDS.get(&category).and_then(|m| m.get(event_type)).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_marked_fields_are_read_from_the_schemas() {
        assert_eq!(
            personal_fields(StreamCategory::Customer, "CustomerRegistered"),
            ["email", "name", "shipping_address"]
        );
        assert_eq!(personal_fields(StreamCategory::Order, "OrderPlaced"), ["shipping_address"]);
        assert_eq!(personal_fields(StreamCategory::Order, "OrderPaid"), ["payment_reference"]);
        assert_eq!(personal_fields(StreamCategory::Order, "OrderCancelled"), ["reason"]);
        assert!(personal_fields(StreamCategory::Order, "OrderShipped").is_empty());
        assert!(personal_fields(StreamCategory::Customer, "PersonalDataErased").is_empty());
        assert!(personal_fields(StreamCategory::Product, "ProductListed").is_empty());
    }

    #[test]
    fn a_personal_value_reads_as_known_sealed_or_erased() {
        let known: Personal<String> = serde_json::from_value(json!("Ada")).unwrap();
        assert_eq!(known, Personal::Known("Ada".to_owned()));
        let sealed = json!({"enc": "v1", "kid": Uuid::nil(), "n": "AAAA", "ct": "BBBB"});
        let read: Personal<String> = serde_json::from_value(sealed.clone()).unwrap();
        assert!(matches!(read, Personal::Sealed(_)));
        assert_eq!(serde_json::to_value(&read).unwrap(), sealed);
        let erased: Personal<String> = serde_json::from_value(Value::Null).unwrap();
        assert!(erased.is_erased());
        assert_eq!(serde_json::to_value(&erased).unwrap(), Value::Null);
    }
}
