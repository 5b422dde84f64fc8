//! JSON Schema documents (draft 2020-12) of every event type, per schema version, and of every
//! command, generated from the Rust types with schemars.
//!
//! The checked-in copies live in `schemas/json/events/<EventType>.v<N>.json` and
//! `schemas/json/commands/<CommandName>.json`; the `schema_files_match_the_code` test fails when
//! they drift and rewrites them with `UPDATE_SCHEMAS=1` (`make schemas`).

use std::collections::{BTreeMap, BTreeSet};

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::commands::*;
use crate::envelope::StreamCategory;
use crate::events::{
    event_types_of, CustomerEvent, EventTypeInfo, MerchantEvent, OrderEvent, ProductEvent, ProductListedV1,
};

/// Why the schema documents could not be generated (a type and its declared list disagree).
#[derive(Debug, thiserror::Error)]
#[error("cannot generate json schema: {0}")]
pub struct SchemaGenError(String);

/// Every schema document keyed by its path relative to `schemas/json/`, e.g.
/// `events/OrderPlaced.v1.json`, with pretty, deterministic content ending in a newline.
///
/// # Errors
/// [`SchemaGenError`] when an event type listed in an enum's `TYPES` has no variant.
pub fn schema_files() -> Result<BTreeMap<String, String>, SchemaGenError> {
    let mut files = BTreeMap::new();
    let mut add = |path: String, doc: Value| -> Result<(), SchemaGenError> {
        let mut text = serde_json::to_string_pretty(&doc).map_err(|e| SchemaGenError(e.to_string()))?;
        text.push('\n');
        files.insert(path, text);
        Ok(())
    };

    for (category, root) in [
        (StreamCategory::Customer, root_schema::<CustomerEvent>()),
        (StreamCategory::Merchant, root_schema::<MerchantEvent>()),
        (StreamCategory::Product, root_schema::<ProductEvent>()),
        (StreamCategory::Order, root_schema::<OrderEvent>()),
    ] {
        for info in event_types_of(category) {
            add(format!("events/{}.v{}.json", info.event_type, info.schema_version), event_schema(&root, info)?)?;
        }
    }
    // historical versions still decoded (and upcast) by this code
    let v1 = EventTypeInfo::new(StreamCategory::Product, "ProductListed", 1);
    add("events/ProductListed.v1.json".to_owned(), with_event_keys(root_schema::<ProductListedV1>(), &v1))?;

    for (name, doc) in command_schemas() {
        add(format!("commands/{name}.json"), doc)?;
    }
    Ok(files)
}

fn root_schema<T: JsonSchema>() -> Value {
    SchemaGenerator::default().into_root_schema_for::<T>().to_value()
}

fn command_schemas() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    macro_rules! commands {
        ($($ty:ident),+ $(,)?) => {
            $(out.push((stringify!($ty), root_schema::<$ty>()));)+
        };
    }
    commands!(
        RegisterCustomer,
        EraseCustomer,
        RegisterMerchant,
        ListProduct,
        ChangePrice,
        AdjustStock,
        ReserveStock,
        ReleaseReservation,
        CommitReservation,
        DiscontinueProduct,
        PlaceOrder,
        ConfirmOrder,
        RejectOrder,
        PayOrder,
        ShipOrder,
        DeliverOrder,
        CancelOrder,
    );
    out
}

/// Cuts the payload schema of one variant out of an adjacently tagged enum's root schema and
/// keeps only the definitions it references.
fn event_schema(root: &Value, info: &EventTypeInfo) -> Result<Value, SchemaGenError> {
    let variants = root.get("oneOf").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let variant = variants
        .iter()
        .find(|v| v.pointer("/properties/type/const").and_then(Value::as_str) == Some(info.event_type))
        .ok_or_else(|| SchemaGenError(format!("no variant {} in the {} events", info.event_type, info.category)))?;
    let data = variant
        .pointer("/properties/data")
        .and_then(Value::as_object)
        .ok_or_else(|| SchemaGenError(format!("variant {} has no data schema", info.event_type)))?;

    let mut doc = Map::new();
    for key in ["$schema"] {
        if let Some(v) = root.get(key) {
            doc.insert(key.to_owned(), v.clone());
        }
    }
    doc.insert("title".to_owned(), Value::String(info.event_type.to_owned()));
    if let Some(d) = variant.get("description") {
        doc.insert("description".to_owned(), d.clone());
    }
    doc.extend(data.clone());
    let all_defs = root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut used = BTreeSet::new();
    collect_refs(&Value::Object(doc.clone()), &all_defs, &mut used);
    if !used.is_empty() {
        let defs: Map<String, Value> = all_defs.into_iter().filter(|(name, _)| used.contains(name)).collect();
        doc.insert("$defs".to_owned(), Value::Object(defs));
    }
    Ok(with_event_keys(Value::Object(doc), info))
}

/// Adds the `x-ordo-*` annotations naming the category, type and schema version.
fn with_event_keys(mut doc: Value, info: &EventTypeInfo) -> Value {
    if let Value::Object(m) = &mut doc {
        m.insert("x-ordo-category".to_owned(), Value::String(info.category.as_str().to_owned()));
        m.insert("x-ordo-event-type".to_owned(), Value::String(info.event_type.to_owned()));
        m.insert("x-ordo-schema-version".to_owned(), Value::from(info.schema_version));
    }
    doc
}

/// Collects the names of `#/$defs/<name>` references reachable from `value`, following
/// references inside definitions.
fn collect_refs(value: &Value, defs: &Map<String, Value>, used: &mut BTreeSet<String>) {
    match value {
        Value::Object(m) => {
            if let Some(name) = m.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
                if used.insert(name.to_owned()) {
                    if let Some(def) = defs.get(name) {
                        collect_refs(def, defs, used);
                    }
                }
            }
            m.values().for_each(|v| collect_refs(v, defs, used));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, defs, used)),
        _ => {}
    }
}
