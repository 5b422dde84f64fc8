//! Typed decoding of the lean rows the one-pass read fetches: the stored `data` text is
//! deserialised straight into the category's event enum, without a `serde_json::Value` in
//! between. Only events stored at an older schema version go through the upcasting decoder.

use ordo_schemas::events::event_types_of;
use ordo_schemas::{AnyEvent, OrderEvent, ProductEvent, StreamCategory};
use serde::de::DeserializeOwned;

/// Decodes one stored event of `category`; `None` when it does not decode (a poison event).
pub(super) fn decode(category: StreamCategory, event_type: &str, schema_version: i32, data: &str) -> Option<AnyEvent> {
    let current = event_types_of(category).iter().find(|t| t.event_type == event_type)?.schema_version;
    if schema_version == current {
        let typed = match category {
            StreamCategory::Order => tagged::<OrderEvent>(event_type, data).map(AnyEvent::Order),
            StreamCategory::Product => tagged::<ProductEvent>(event_type, data).map(AnyEvent::Product),
            _ => None,
        };
        if typed.is_some() {
            return typed;
        }
    }
    // an older version to upcast, or a payload the strict path refused (a stored `null` for an
    // event without fields): the general decoder decides
    let value = serde_json::from_str(data).ok()?;
    AnyEvent::decode(category, event_type, schema_version, value).ok()
}

/// The adjacently tagged form `{"type":..,"data":..}` deserialised in one go.
fn tagged<E: DeserializeOwned>(event_type: &str, data: &str) -> Option<E> {
    let mut doc = String::with_capacity(data.len() + event_type.len() + 20);
    doc.push_str("{\"type\":");
    doc.push_str(&serde_json::to_string(event_type).ok()?);
    doc.push_str(",\"data\":");
    doc.push_str(data);
    doc.push('}');
    serde_json::from_str(&doc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_current_event_decodes_as_the_general_decoder_does() {
        let data = r#"{"amount":{"amount_minor":4498,"currency":"EUR"},"payment_reference":"p-1"}"#;
        let general = AnyEvent::decode(
            StreamCategory::Order,
            "OrderPaid",
            1,
            serde_json::from_str(data).unwrap_or(serde_json::Value::Null),
        )
        .ok();
        assert!(general.is_some());
        assert_eq!(decode(StreamCategory::Order, "OrderPaid", 1, data), general);
    }

    #[test]
    fn a_v1_product_listing_is_upcast_and_unknown_or_future_events_do_not_decode() {
        let v1 = r#"{"product_id":"00000000-0000-4000-8000-000000000001","merchant_id":"00000000-0000-4000-8000-000000000002","sku":"OLD-1","name":"old","price_minor":1299,"currency":"EUR","initial_stock":4}"#;
        match decode(StreamCategory::Product, "ProductListed", 1, v1) {
            Some(AnyEvent::Product(ProductEvent::ProductListed { price, .. })) => assert_eq!(price.amount_minor, 1299),
            other => panic!("not upcast: {other:?}"),
        }
        assert_eq!(decode(StreamCategory::Order, "OrderTeleported", 1, "{}"), None);
        assert_eq!(decode(StreamCategory::Order, "OrderConfirmed", 9, "{}"), None);
        assert!(decode(StreamCategory::Order, "OrderConfirmed", 1, "null").is_some());
    }
}
