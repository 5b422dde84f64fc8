//! The chain hash of [`crate::hash::event_hash`] computed without building the content document:
//! the canonical form sorts object keys at every level and has no white space, which is exactly
//! how `serde_json` writes a `Value` whose maps are ordered (the workspace builds `serde_json`
//! without `preserve_order`; the test below fails if that changes).
//!
//! The stored payloads arrive as JSON text. They are parsed into a [`Node`] tree that borrows
//! every string without escapes from the text and keeps an object's members in a vector sorted
//! once, instead of a `Value` with an owned `String` per string and a `BTreeMap` per object; the
//! numbers go through `serde_json`'s own `Number`, so they are written exactly as a `Value`
//! would write them.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use chrono::SecondsFormat;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use sha2::{Digest, Sha256};

/// The hashed columns of one event, payloads parsed: the same input as [`crate::hash`].
#[cfg(test)]
pub(super) use crate::hash::HashInput as Columns;

/// The hashed columns of one event, payloads as the stored JSON text.
pub(super) struct Row<'a> {
    pub category: &'a str,
    pub stream_id: uuid::Uuid,
    pub version: i64,
    pub event_id: uuid::Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub data: &'a str,
    pub metadata: &'a str,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// The chain hash of `row`, writing the content into `buf` (reused between events).
///
/// # Errors
/// When `data` or `metadata` is not JSON.
pub(super) fn hash(prev: Option<&[u8]>, row: &Row<'_>, buf: &mut Vec<u8>) -> Result<[u8; 32], String> {
    let data: Node<'_> = serde_json::from_str(row.data).map_err(|e| format!("data: {e}"))?;
    let metadata: Node<'_> = serde_json::from_str(row.metadata).map_err(|e| format!("metadata: {e}"))?;
    buf.clear();
    // keys in sorted order: category, data, event_id, metadata, schema_version, stream_id, type
    buf.extend_from_slice(b"{\"category\":");
    let _ = serde_json::to_writer(&mut *buf, row.category);
    buf.extend_from_slice(b",\"data\":");
    data.write(buf);
    let _ = write!(buf, ",\"event_id\":\"{}\",\"metadata\":", row.event_id.hyphenated());
    metadata.write(buf);
    let _ = write!(
        buf,
        ",\"schema_version\":{},\"stream_id\":\"{}\",\"type\":",
        row.schema_version,
        row.stream_id.hyphenated()
    );
    let _ = serde_json::to_writer(&mut *buf, row.event_type);
    let _ = write!(buf, "}}|{}|{}", row.version, row.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true));
    let mut hasher = Sha256::new();
    if let Some(prev) = prev {
        hasher.update(prev);
    }
    hasher.update(&buf[..]);
    Ok(hasher.finalize().into())
}

/// A parsed JSON value, strings borrowed where the text allows.
#[derive(Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Members sorted by key, one per key (the last one of the text, as a `Value` keeps).
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    /// Writes the canonical form: as `serde_json` writes the equivalent sorted `Value`.
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(n) => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
            Node::String(s) => {
                let _ = serde_json::to_writer(&mut *out, s.as_ref());
            }
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Node::Object(members) => {
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, key.as_ref());
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // as `Value` does: a float JSON cannot hold becomes null
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Deserialize::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Node<'de>)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((Key(key), value)) = map.next_entry()? {
            members.push((key, value));
        }
        // stable, so of equal keys the last of the text ends up last and is kept
        members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut kept: Vec<(Cow<'de, str>, Node<'de>)> = Vec::with_capacity(members.len());
        for member in members {
            match kept.last_mut() {
                Some(last) if last.0 == member.0 => *last = member,
                _ => kept.push(member),
            }
        }
        Ok(Node::Object(kept))
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::event_hash;
    use chrono::DateTime;
    use serde_json::Value;
    use uuid::Uuid;

    /// The lean hash of the texts equals the specified hash of the parsed `Value`s.
    fn same_hash(data: &str, metadata: &str) {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let (data_value, metadata_value) = (parsed(data), parsed(metadata));
        let columns = Columns {
            category: "order",
            stream_id: Uuid::max(),
            version: 7,
            event_id: Uuid::nil(),
            event_type: "Odd\"Type",
            schema_version: 2,
            data: &data_value,
            metadata: &metadata_value,
            recorded_at: at,
        };
        let row = Row {
            category: "order",
            stream_id: Uuid::max(),
            version: 7,
            event_id: Uuid::nil(),
            event_type: "Odd\"Type",
            schema_version: 2,
            data,
            metadata,
            recorded_at: at,
        };
        let mut buf = Vec::new();
        assert_eq!(hash(None, &row, &mut buf), Ok(event_hash(None, &columns)), "{data}");
        assert_eq!(hash(Some(&[9u8; 32]), &row, &mut buf), Ok(event_hash(Some(&[9u8; 32]), &columns)), "{data}");
    }

    #[test]
    fn the_direct_hash_equals_the_specified_one_for_unsorted_nested_and_escaped_payloads() {
        let metadata = serde_json::json!({"event_id": Uuid::nil(), "actor": {"role": "system", "id": Uuid::max()}});
        same_hash(
            r#"{"z":1,"a":{"y":[3,{"b":"\u00e9\"\\\n","a":null}],"x":-0.5e3},"m":true,"é":"ü","B":18446744073709551615}"#,
            &metadata.to_string(),
        );
        // as Postgres writes jsonb: spaces, keys by length
        same_hash(
            r#"{"a": 1, "bb": [1.0, 2.50, -0, 1e20, 1E-7, 123456789012345678901234567890], "aaa": {}, "c\u0041": []}"#,
            r#"{"x": "tab\there", "\ud83d\ude00": "\u001f\u007f", "y": "\/"}"#,
        );
        // duplicate keys: the last one counts, as in a Value
        same_hash(r#"{"k": 1, "j": 0, "k": 2}"#, r#"{"a": {"b": 1, "b": [true, false, null]}}"#);
        same_hash("[]", "null");
        same_hash(r#""text""#, "-12.5");
    }

    #[test]
    fn a_payload_that_is_not_json_is_an_error() {
        let row = Row {
            category: "order",
            stream_id: Uuid::nil(),
            version: 1,
            event_id: Uuid::nil(),
            event_type: "T",
            schema_version: 1,
            data: "{\"a\":",
            metadata: "{}",
            recorded_at: DateTime::from_timestamp(0, 0).unwrap_or_default(),
        };
        assert!(hash(None, &row, &mut Vec::new()).is_err_and(|e| e.starts_with("data: ")));
    }
}
