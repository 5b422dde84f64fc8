//! The chain hash of [`crate::hash::event_hash`] computed without building the content document:
//! the canonical form sorts object keys at every level and has no white space, which is exactly
//! how `serde_json` writes a `Value` whose maps are ordered (the workspace builds `serde_json`
//! without `preserve_order`; the test below fails if that changes).

use std::io::Write;

use chrono::SecondsFormat;
use sha2::{Digest, Sha256};

/// The hashed columns of one event, payloads parsed: the same input as [`crate::hash`].
pub(super) use crate::hash::HashInput as Columns;

/// The chain hash, writing the content into `buf` (reused between events).
pub(super) fn hash(prev: Option<&[u8]>, c: &Columns<'_>, buf: &mut Vec<u8>) -> [u8; 32] {
    buf.clear();
    // keys in sorted order: category, data, event_id, metadata, schema_version, stream_id, type
    buf.extend_from_slice(b"{\"category\":");
    let _ = serde_json::to_writer(&mut *buf, c.category);
    buf.extend_from_slice(b",\"data\":");
    let _ = serde_json::to_writer(&mut *buf, c.data);
    let _ = write!(buf, ",\"event_id\":\"{}\",\"metadata\":", c.event_id.hyphenated());
    let _ = serde_json::to_writer(&mut *buf, c.metadata);
    let _ = write!(
        buf,
        ",\"schema_version\":{},\"stream_id\":\"{}\",\"type\":",
        c.schema_version,
        c.stream_id.hyphenated()
    );
    let _ = serde_json::to_writer(&mut *buf, c.event_type);
    buf.push(b'}');
    let mut hasher = Sha256::new();
    if let Some(prev) = prev {
        hasher.update(prev);
    }
    hasher.update(&buf[..]);
    hasher.update(format!("|{}|{}", c.version, c.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)));
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::event_hash;
    use chrono::DateTime;
    use serde_json::Value;
    use uuid::Uuid;

    #[test]
    fn the_direct_hash_equals_the_specified_one_for_unsorted_nested_and_escaped_payloads() {
        let data: Value = serde_json::from_str(
            r#"{"z":1,"a":{"y":[3,{"b":"\u00e9\"\\\n","a":null}],"x":-0.5e3},"m":true,"é":"ü","B":18446744073709551615}"#,
        )
        .unwrap_or(Value::Null);
        let metadata = serde_json::json!({"event_id": Uuid::nil(), "actor": {"role": "system", "id": Uuid::max()}});
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        let columns = Columns {
            category: "order",
            stream_id: Uuid::max(),
            version: 7,
            event_id: Uuid::nil(),
            event_type: "Odd\"Type",
            schema_version: 2,
            data: &data,
            metadata: &metadata,
            recorded_at: at,
        };
        let mut buf = Vec::new();
        assert_eq!(hash(None, &columns, &mut buf), event_hash(None, &columns));
        assert_eq!(hash(Some(&[9u8; 32]), &columns, &mut buf), event_hash(Some(&[9u8; 32]), &columns));
    }
}
