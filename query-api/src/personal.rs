//! Personal fields revealed at answer time (ADR 0027): the `orders` projection keeps each
//! order's shipping address, payment reference and cancellation reason sealed as the log holds
//! them, and the audit endpoints read the log itself; answers show them in clear while the
//! customer's key exists, `null` once the key is destroyed.

use axum::body::Bytes;
use ordo_event_store::personal::{PersonalData, Revealable, SealedSlot};
use ordo_event_store::RecordedEvent;
use ordo_schemas::{personal_fields, SealedField, StreamCategory};
use ordo_service::Problem;
use serde_json::Value;
use uuid::Uuid;

use crate::internal;

/// How answers made of events show personal fields: `revealed` (the default: in clear while the
/// key exists, `null` once erased) or `stored` (the sealed objects the hashes cover, for
/// verifying the chain).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonalView {
    #[default]
    Revealed,
    Stored,
}

impl PersonalView {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "revealed" => Some(Self::Revealed),
            "stored" => Some(Self::Stored),
            _ => None,
        }
    }
}

/// Whether `event` holds a sealed personal field (revealing it would change its answer).
pub fn holds_sealed(event: &RecordedEvent) -> bool {
    personal_fields(event.stream.category, &event.event_type)
        .iter()
        .any(|f| event.data.get(f.as_str()).is_some_and(|v| SealedField::from_value(v).is_some()))
}

/// Reveals the sealed personal fields of `events` in place: the value while its key exists,
/// `null` once erased. A value that does not decrypt (altered or moved) stays sealed, so an
/// auditor sees what is stored, and is logged with its stream and version (the chain
/// verification reports the same event). Reads no key when no event holds a sealed field.
///
/// # Errors
/// When the keys cannot be read.
pub async fn reveal_events(
    personal: &PersonalData,
    events: &mut [RecordedEvent],
) -> Result<(), ordo_event_store::StoreError> {
    if !events.iter().any(holds_sealed) {
        return Ok(());
    }
    let mut items: Vec<Revealable<'_>> = events.iter_mut().map(Revealable::from).collect();
    let problems = personal.reveal(&mut items).await?;
    for (event, problem) in events.iter().zip(problems) {
        if let Some(problem) = problem {
            tracing::error!(stream = %event.stream, version = event.version, %problem, "sealed value does not decrypt");
        }
    }
    Ok(())
}

/// The JSON body of one order or of a page of orders with every sealed personal field
/// revealed, and whether a sealed value read as `null` (its key destroyed, or it does not
/// decrypt). A body without sealed values is returned as it is, without reading any key.
pub(crate) async fn reveal_orders(personal: &PersonalData, body: &Bytes) -> Result<(Bytes, bool), Problem> {
    if !ordo_schemas::personal::may_hold_sealed(body) {
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
