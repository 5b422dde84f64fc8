//! Personal fields of read models revealed at answer time (ADR 0027): the `orders` projection
//! keeps each order's shipping address, payment reference and cancellation reason sealed as the
//! log holds them, and the answer shows them in clear while the customer's key exists, `null`
//! once the key is destroyed.

use axum::body::Bytes;
use ordo_event_store::personal::{PersonalData, SealedSlot};
use ordo_schemas::StreamCategory;
use ordo_service::Problem;
use serde_json::Value;
use uuid::Uuid;

use crate::internal;

/// The JSON body of one order or of a page of orders with every sealed personal field
/// revealed, and whether a sealed value read as `null` (its key destroyed, or it does not
/// decrypt). A body without sealed values is returned as it is, without reading any key.
pub(crate) async fn reveal_orders(personal: &PersonalData, body: &Bytes) -> Result<(Bytes, bool), Problem> {
    if !body.windows(8).any(|w| w == b"\"enc\":\"v") {
        return Ok((body.clone(), false));
    }
    let mut erased = false;
    let mut doc: Value = serde_json::from_slice(body).map_err(internal)?;
    {
        let orders: Vec<&mut Value> = match doc.get_mut("items") {
            Some(Value::Array(items)) => items.iter_mut().collect(),
            _ => vec![&mut doc],
        };
        let mut slots = Vec::new();
        for order in orders {
            let Some(id) = order.get("id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()) else {
                continue;
            };
            let Value::Object(order) = order else { continue };
            for (name, value) in order.iter_mut() {
                // the sealed free text sits in the object the projection made of its event
                let (field, value) = match (name.as_str(), value) {
                    ("shipping_address", value) => ("shipping_address", value),
                    ("payment", Value::Object(payment)) => match payment.get_mut("payment_reference") {
                        Some(value) => ("payment_reference", value),
                        None => continue,
                    },
                    ("cancellation", Value::Object(cancellation)) => match cancellation.get_mut("reason") {
                        Some(value) => ("reason", value),
                        None => continue,
                    },
                    _ => continue,
                };
                slots.push(SealedSlot { category: StreamCategory::Order, stream_id: id, field, value });
            }
        }
        let problems = personal.reveal_slots(&mut slots).await.map_err(internal)?;
        for problem in problems.into_iter().flatten() {
            tracing::error!(field = %problem, "sealed value does not decrypt");
        }
        // a value that does not decrypt is not shown sealed either
        for slot in &mut slots {
            if ordo_schemas::SealedField::from_value(slot.value).is_some() {
                *slot.value = Value::Null;
            }
            erased |= slot.value.is_null();
        }
    }
    Ok((serde_json::to_vec(&doc).map_err(internal)?.into(), erased))
}
