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

/// The first format of [`SealedField`], written until the compact one replaced it (ADR 0035):
/// an object of four members, `{"enc": "v1", "kid": <key id>, "n": <nonce>, "ct": <ciphertext>}`.
pub const SEALED_V1: &str = "v1";

/// The current format of [`SealedField`]: an object of one member,
/// `{"sealed": "v2.<key id>.<nonce, ciphertext and tag, base64url without padding>"}`.
pub const SEALED_V2: &str = "v2";

/// The one member of a sealed value in the current format.
pub const SEALED_MEMBER: &str = "sealed";

/// A personal field as stored: AES-256-GCM ciphertext under the data subject's key, in either
/// format. Both read back the same way; only [`SEALED_V2`] is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedField {
    /// Reference of the data subject's key.
    pub kid: Uuid,
    /// The encrypted bytes, as the format spells them.
    pub body: SealedBody,
}

/// The encrypted bytes of a [`SealedField`], in the text of their format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedBody {
    /// [`SEALED_V1`]: the format named by `enc`, the 12-byte nonce `n` and the ciphertext
    /// followed by its 16-byte tag `ct`, each standard base64 with padding.
    V1 { enc: String, n: String, ct: String },
    /// [`SEALED_V2`]: nonce, ciphertext and tag in one, base64url without padding.
    V2(String),
}

/// A personal field as stored in the first format (`v1`), before the compact one.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SealedFieldV1 {
    /// Format of the sealed value: `v1`.
    enc: String,
    /// Reference of the data subject's key.
    kid: Uuid,
    /// The 12-byte nonce, standard base64 with padding.
    n: String,
    /// Ciphertext followed by the 16-byte tag, standard base64 with padding.
    ct: String,
}

impl SealedField {
    /// The sealed value in `value`, if it is one: `{"sealed": "v2.<kid>.<body>"}` or the four
    /// members of `v1`.
    pub fn from_value(value: &Value) -> Option<Self> {
        let Value::Object(m) = value else { return None };
        if m.len() == 1 {
            let text = m.get(SEALED_MEMBER)?.as_str()?;
            return Self::from_compact(text);
        }
        if !(m.contains_key("enc") && m.contains_key("ct")) {
            return None;
        }
        let v1: SealedFieldV1 = serde_json::from_value(value.clone()).ok()?;
        Some(Self { kid: v1.kid, body: SealedBody::V1 { enc: v1.enc, n: v1.n, ct: v1.ct } })
    }

    /// Whether `value` is sealed in the format written today ([`SEALED_V2`]).
    pub fn is_current(value: &Value) -> bool {
        matches!(Self::from_value(value), Some(Self { body: SealedBody::V2(_), .. }))
    }

    /// `v2.<kid>.<body>`, with the key id hyphenated in lower case and a non-empty base64url
    /// body: the one spelling [`SealedField::compact`] writes, so a value reads back as stored.
    fn from_compact(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(SEALED_V2)?.strip_prefix('.')?;
        let (kid, body) = rest.split_once('.')?;
        let parsed = Uuid::try_parse(kid).ok()?;
        // 36 characters is the hyphenated form; lower case is the one `compact` writes.
        let canonical = kid.len() == 36 && !kid.bytes().any(|b| b.is_ascii_uppercase());
        let base64url = !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (canonical && base64url).then(|| Self { kid: parsed, body: SealedBody::V2(body.to_owned()) })
    }

    /// The stored text of a [`SEALED_V2`] value: `v2.<kid>.<body>`.
    pub fn compact(kid: Uuid, body: &str) -> String {
        let mut out = String::with_capacity(SEALED_V2.len() + 38 + body.len());
        out.push_str(SEALED_V2);
        out.push('.');
        out.push_str(kid.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        out.push('.');
        out.push_str(body);
        out
    }

    /// The value as stored.
    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::with_capacity(4);
        match &self.body {
            SealedBody::V2(body) => {
                m.insert(SEALED_MEMBER.to_owned(), Value::String(Self::compact(self.kid, body)));
            }
            SealedBody::V1 { enc, n, ct } => {
                m.insert("enc".to_owned(), Value::String(enc.clone()));
                m.insert("kid".to_owned(), Value::String(self.kid.to_string()));
                m.insert("n".to_owned(), Value::String(n.clone()));
                m.insert("ct".to_owned(), Value::String(ct.clone()));
            }
        }
        Value::Object(m)
    }
}

impl Serialize for SealedField {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl JsonSchema for SealedField {
    fn schema_name() -> Cow<'static, str> {
        "SealedField".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let v1 = generator.subschema_for::<SealedFieldV1>();
        schemars::json_schema!({
            "description": "A personal field as stored: AES-256-GCM ciphertext under the data subject's key. \
                            Written as `{\"sealed\": \"v2.<key id>.<nonce, ciphertext and tag, base64url without padding>\"}`; \
                            values written before that format have four members (`v1`).",
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        SEALED_MEMBER: {
                            "type": "string",
                            "pattern": "^v2\\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\.[A-Za-z0-9_-]+$"
                        }
                    },
                    "required": [SEALED_MEMBER],
                    "additionalProperties": false
                },
                v1
            ]
        })
    }
}

/// Whether JSON text may hold a sealed value of either format: a test of the bytes, cheap enough
/// to skip parsing a body that holds none. A clear string that spells a marker only costs a parse.
pub fn may_hold_sealed(json: &[u8]) -> bool {
    const MARKERS: [&[u8]; 2] = [b"\"sealed\":\"v", b"\"enc\":\"v"];
    MARKERS.iter().any(|marker| json.windows(marker.len()).any(|w| w == *marker))
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
    fn only_the_spelling_the_store_writes_reads_as_a_compact_sealed_value() {
        let kid = Uuid::new_v4();
        let good = SealedField::compact(kid, "AAAA-_9");
        let field = SealedField::from_value(&json!({ SEALED_MEMBER: good })).unwrap();
        assert_eq!(field, SealedField { kid, body: SealedBody::V2("AAAA-_9".into()) });
        for text in [
            format!("v2.{}.AAAA", kid.to_string().to_uppercase()),
            format!("v2.{}.AAAA", kid.simple()),
            format!("v2.{kid}."),
            format!("v2.{kid}.AA+/"),
            format!("v3.{kid}.AAAA"),
            format!("v2{kid}.AAAA"),
        ] {
            assert_eq!(SealedField::from_value(&json!({ SEALED_MEMBER: text })), None, "{text}");
        }
        assert_eq!(SealedField::from_value(&json!({ SEALED_MEMBER: good, "x": 1 })), None, "one member only");
        assert_eq!(SealedField::from_value(&json!(good)), None, "a bare string is a value, not a sealed one");
        let known: Personal<String> = serde_json::from_value(json!(good)).unwrap();
        assert_eq!(known, Personal::Known(good));
    }

    #[test]
    fn a_body_holding_a_sealed_value_of_either_format_is_noticed() {
        let v2 = json!({"a": {"sealed": SealedField::compact(Uuid::nil(), "AAAA")}}).to_string();
        let v1 = json!({"a": {"enc": "v1", "kid": Uuid::nil(), "n": "AAAA", "ct": "BBBB"}}).to_string();
        assert!(may_hold_sealed(v2.as_bytes()) && may_hold_sealed(v1.as_bytes()));
        assert!(!may_hold_sealed(json!({"a": "Ada", "sealed": true}).to_string().as_bytes()));
    }

    #[test]
    fn a_personal_value_reads_as_known_sealed_or_erased() {
        let known: Personal<String> = serde_json::from_value(json!("Ada")).unwrap();
        assert_eq!(known, Personal::Known("Ada".to_owned()));
        for sealed in [
            json!({"sealed": format!("v2.{}.AAAA-_9", Uuid::nil())}),
            json!({"enc": "v1", "kid": Uuid::nil(), "n": "AAAA", "ct": "BBBB"}),
        ] {
            let read: Personal<String> = serde_json::from_value(sealed.clone()).unwrap();
            assert!(matches!(read, Personal::Sealed(_)), "{sealed}");
            assert_eq!(serde_json::to_value(&read).unwrap(), sealed, "reads back as stored");
        }
        let erased: Personal<String> = serde_json::from_value(Value::Null).unwrap();
        assert!(erased.is_erased());
        assert_eq!(serde_json::to_value(&erased).unwrap(), Value::Null);
    }
}
