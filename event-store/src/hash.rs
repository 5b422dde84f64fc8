//! The per-stream hash chain:
//! `hash = sha256(prev_hash || content || "|" || version || "|" || recorded_at)`.
//!
//! `content` is a JSON object with keys sorted at every level and no white space, holding the
//! category, stream id, event id, type, schema version, data and metadata; `recorded_at` is RFC
//! 3339 UTC with microseconds. Every input is a stored column, so a verifier recomputes hashes
//! from the log alone. The writer computes it for the batches it decides (ADR 0032); the
//! database computes the same bytes inside `ordo_append_batch` for the appends it decides.
//!
//! `docs/hash-chain.md` specifies these bytes for verifiers written without this crate (the
//! console's Web Crypto verifier and `docs/verify_export.py` follow it), with a worked example
//! that a test below keeps true.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The columns of one event that its hash covers.
pub struct HashInput<'a> {
    pub category: &'a str,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub data: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

/// The hash of an event given the hash of its predecessor (`None` for version 1).
pub fn event_hash(prev: Option<&[u8]>, input: &HashInput<'_>) -> [u8; 32] {
    link_hash(prev, &content_bytes(input), input.version, &recorded_at_text(input.recorded_at))
}

/// The hash of a link from its parts: the content bytes ([`content_bytes`]) and `recorded_at` as
/// [`recorded_at_text`] writes it (a writer formats its batch's time once).
pub fn link_hash(prev: Option<&[u8]>, content: &[u8], version: i64, recorded_at: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    if let Some(prev) = prev {
        hasher.update(prev);
    }
    hasher.update(content);
    hasher.update(format!("|{version}|{recorded_at}"));
    hasher.finalize().into()
}

/// `recorded_at` as the hash covers it: RFC 3339 UTC with microseconds.
pub fn recorded_at_text(recorded_at: DateTime<Utc>) -> String {
    recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The canonical serialisation of the hashed columns other than version and recorded_at.
/// Written member by member in sorted key order, without building an intermediate document: it
/// runs once per event on the writer's path.
pub fn content_bytes(input: &HashInput<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"category\":");
    write_serialized(input.category, &mut out);
    out.extend_from_slice(b",\"data\":");
    write_canonical(input.data, &mut out);
    out.extend_from_slice(b",\"event_id\":");
    write_serialized(&input.event_id, &mut out);
    out.extend_from_slice(b",\"metadata\":");
    write_canonical(input.metadata, &mut out);
    out.extend_from_slice(b",\"schema_version\":");
    write_serialized(&input.schema_version, &mut out);
    out.extend_from_slice(b",\"stream_id\":");
    write_serialized(&input.stream_id, &mut out);
    out.extend_from_slice(b",\"type\":");
    write_serialized(input.event_type, &mut out);
    out.push(b'}');
    out
}

/// Writes `value` as JSON with object keys sorted, whatever map ordering serde_json was built with.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // keys are unique, and `String`'s order is their bytes' order
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_serialized(key.as_str(), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_serialized(scalar, out),
    }
}

/// A string, number, UUID or JSON scalar as serde_json writes it (strings escaped as a `Value`
/// string is).
fn write_serialized<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Serialising a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(data: &'a Value, metadata: &'a Value) -> HashInput<'a> {
        HashInput {
            category: "order",
            stream_id: Uuid::nil(),
            version: 1,
            event_id: Uuid::nil(),
            event_type: "OrderPlaced",
            schema_version: 1,
            data,
            metadata,
            recorded_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap_or_default(),
        }
    }

    #[test]
    fn content_bytes_do_not_depend_on_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        let m = serde_json::json!({});
        assert_eq!(content_bytes(&input(&a, &m)), content_bytes(&input(&b, &m)));
    }

    #[test]
    fn the_hash_changes_with_the_payload_and_with_the_predecessor() {
        let m = serde_json::json!({});
        let a = serde_json::json!({"qty": 1});
        let b = serde_json::json!({"qty": 2});
        let h1 = event_hash(None, &input(&a, &m));
        assert_ne!(h1, event_hash(None, &input(&b, &m)));
        assert_ne!(h1, event_hash(Some(&[0u8; 32]), &input(&a, &m)));
        assert_eq!(h1, event_hash(None, &input(&a, &m)));
    }

    /// The worked example of docs/hash-chain.md: keep both in step.
    #[test]
    fn the_documented_example_chain_hashes_as_the_specification_says() {
        let uuid = |n: u64| Uuid::parse_str(&format!("00000000-0000-4000-8000-{n:012}")).unwrap_or_default();
        let data = serde_json::json!({"payment_reference": "caf\u{e9} \"1\"", "amount": {"currency": "EUR", "amount_minor": 4498}});
        let metadata = serde_json::json!({"event_id": uuid(2), "correlation_id": uuid(3), "actor": {"role": "customer", "id": uuid(4)}});
        let first = HashInput {
            category: "order",
            stream_id: uuid(1),
            version: 1,
            event_id: uuid(2),
            event_type: "OrderPaid",
            schema_version: 1,
            data: &data,
            metadata: &metadata,
            recorded_at: DateTime::parse_from_rfc3339("2026-11-30T12:00:00.1234Z")
                .map(|t| t.to_utc())
                .unwrap_or_default(),
        };
        assert_eq!(
            String::from_utf8(content_bytes(&first)).unwrap_or_default(),
            r#"{"category":"order","data":{"amount":{"amount_minor":4498,"currency":"EUR"},"payment_reference":"café \"1\""},"event_id":"00000000-0000-4000-8000-000000000002","metadata":{"actor":{"id":"00000000-0000-4000-8000-000000000004","role":"customer"},"correlation_id":"00000000-0000-4000-8000-000000000003","event_id":"00000000-0000-4000-8000-000000000002"},"schema_version":1,"stream_id":"00000000-0000-4000-8000-000000000001","type":"OrderPaid"}"#
        );
        let h1 = event_hash(None, &first);
        assert_eq!(hex::encode(h1), "43599ccce3ae6db80612327657ff364c345a785d454d1d1cfb734551e7794ba6");
        let data = serde_json::json!({"carrier": "DHL", "tracking_number": "JD0001"});
        let metadata = serde_json::json!({"event_id": uuid(5), "correlation_id": uuid(3), "actor": {"role": "customer", "id": uuid(4)}});
        let second = HashInput {
            version: 2,
            event_id: uuid(5),
            event_type: "OrderShipped",
            data: &data,
            metadata: &metadata,
            recorded_at: DateTime::parse_from_rfc3339("2026-11-30T12:00:01Z").map(|t| t.to_utc()).unwrap_or_default(),
            ..first
        };
        assert_eq!(
            hex::encode(event_hash(Some(&h1), &second)),
            "0c407a82847c13cca4f1f016fb49ffc26431ba1d7410b58440336d14091c3af1"
        );
    }

    #[test]
    fn version_and_recorded_at_are_hashed_after_the_content() {
        let m = serde_json::json!({});
        let d = serde_json::json!({});
        let i = input(&d, &m);
        let mut expected = Sha256::new();
        expected.update(content_bytes(&i));
        expected.update("|1|2023-11-14T22:13:20.123456Z");
        assert_eq!(event_hash(None, &i), <[u8; 32]>::from(expected.finalize()));
        let later = HashInput { version: 2, ..input(&d, &m) };
        assert_ne!(event_hash(None, &i), event_hash(None, &later));
    }

    /// The canonical form as first written: the columns as one `serde_json` document, every
    /// object's keys sorted. `content_bytes` writes it directly and must not differ by a byte.
    fn reference_content(input: &HashInput<'_>) -> Vec<u8> {
        fn canonical(value: &Value) -> Value {
            match value {
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    let mut out = String::from("{");
                    for (i, k) in keys.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&serde_json::to_string(&Value::String(k.clone())).unwrap());
                        out.push(':');
                        out.push_str(canonical(&map[k]).as_str().unwrap());
                    }
                    out.push('}');
                    Value::String(out)
                }
                Value::Array(items) => {
                    let inner: Vec<String> = items.iter().map(|v| canonical(v).as_str().unwrap().to_owned()).collect();
                    Value::String(format!("[{}]", inner.join(",")))
                }
                scalar => Value::String(serde_json::to_string(scalar).unwrap()),
            }
        }
        let doc = serde_json::json!({
            "category": input.category,
            "stream_id": input.stream_id,
            "event_id": input.event_id,
            "type": input.event_type,
            "schema_version": input.schema_version,
            "data": input.data,
            "metadata": input.metadata,
        });
        canonical(&doc).as_str().unwrap().as_bytes().to_vec()
    }

    #[test]
    fn content_bytes_are_the_sorted_document_byte_for_byte() {
        let data = serde_json::json!({
            "zeta": [3, -2, 0, null, true, false, 1.5, 18_446_744_073_709_551_615_u64, -9_223_372_036_854_775_808_i64],
            "Alpha": {"é": "ü", "e": "tab\there \"quoted\" back\\slash \u{7} \u{2028} 😀 </script>", "": {}},
            "name": {"enc": "v1", "kid": Uuid::nil(), "n": "AAAAAAAAAAAAAAAA", "ct": "+/=="},
            "nested": [{"b": 1, "a": [[], {}]}],
        });
        let metadata = serde_json::json!({"event_id": Uuid::nil(), "actor": {"role": "admin", "id": Uuid::max()}});
        for (category, event_type) in [("customer", "CustomerRegistered"), ("order", "Ty\"pe\\")] {
            let input = HashInput {
                category,
                stream_id: Uuid::max(),
                version: 7,
                event_id: Uuid::new_v4(),
                event_type,
                schema_version: -3,
                data: &data,
                metadata: &metadata,
                recorded_at: Utc::now(),
            };
            assert_eq!(
                String::from_utf8(content_bytes(&input)).unwrap(),
                String::from_utf8(reference_content(&input)).unwrap()
            );
        }
    }
}
