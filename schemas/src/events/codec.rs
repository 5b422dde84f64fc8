//! Shared encoding of the adjacently tagged event enums into `(type, schema_version, data)` and
//! back, with the upcasting loop.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::EventTypeInfo;
use crate::envelope::StreamCategory;
use crate::event::DecodeError;

/// The `data` half of an adjacently tagged event; `{}` for events without fields.
pub(crate) fn to_data<E: Serialize>(event: &E) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut m)) => m.remove("data").unwrap_or_else(|| Value::Object(Map::new())),
        // the event types serialise infallibly to objects (no non-string map keys)
        _ => Value::Null,
    }
}

/// One upcasting step: turns a payload of `schema_version` into one of `schema_version + 1`.
pub(crate) type UpcastStep = fn(event_type: &str, schema_version: i32, data: Value) -> Result<Value, String>;

/// No event type of the category has ever changed its schema.
pub(crate) fn no_upcasts(_: &str, schema_version: i32, _: Value) -> Result<Value, String> {
    Err(format!("no upcaster from v{schema_version}"))
}

/// Checks the type and version against `types`, upcasts step by step to the current version and
/// deserialises.
pub(crate) fn decode<E: DeserializeOwned>(
    category: StreamCategory,
    types: &[EventTypeInfo],
    event_type: &str,
    schema_version: i32,
    data: Value,
    upcast: UpcastStep,
) -> Result<E, DecodeError> {
    let info = types
        .iter()
        .find(|t| t.event_type == event_type)
        .ok_or_else(|| DecodeError::UnknownType { category, event_type: event_type.to_owned() })?;
    if schema_version > info.schema_version {
        return Err(DecodeError::FutureVersion {
            event_type: event_type.to_owned(),
            found: schema_version,
            newest: info.schema_version,
        });
    }
    if schema_version < 1 {
        return Err(DecodeError::Upcast {
            event_type: event_type.to_owned(),
            schema_version,
            reason: "schema versions start at 1".to_owned(),
        });
    }
    let mut data = data;
    for version in schema_version..info.schema_version {
        data = upcast(event_type, version, data).map_err(|reason| DecodeError::Upcast {
            event_type: event_type.to_owned(),
            schema_version: version,
            reason,
        })?;
    }
    // events without fields are written as `{}`; tolerate a stored `null` as the same thing
    if data.is_null() {
        data = Value::Object(Map::new());
    }
    let mut tagged = Map::new();
    tagged.insert("type".to_owned(), Value::String(event_type.to_owned()));
    tagged.insert("data".to_owned(), data);
    serde_json::from_value(Value::Object(tagged))
        .map_err(|source| DecodeError::Payload { event_type: event_type.to_owned(), source })
}
