//! Integration tests of the event log against a real Postgres (a fresh database per test) and,
//! for the broker smoke test, a real nisshi broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod append;
mod broker;
mod checked;
mod commit_safe_reader;
mod group_commit;
mod integrity;
mod kafka_settings;
mod personal;
mod relay;
mod relay_pipeline;

use ordo_event_store::NewEvent;
use ordo_schemas::{Actor, EventMetadata, StreamCategory, StreamRef};
use uuid::Uuid;

pub fn event(n: i64) -> NewEvent {
    NewEvent {
        event_type: "StockAdjusted".into(),
        schema_version: 1,
        data: serde_json::json!({ "delta": n, "reason": "restock", "on_hand_after": n }),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    }
}

pub fn product() -> StreamRef {
    StreamRef::new(StreamCategory::Product, Uuid::new_v4())
}
