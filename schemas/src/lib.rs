//! Types every Ordo process shares: domain events and commands of each aggregate, the event
//! envelope and its metadata, money and validated values.
//!
//! Events are stored as `(type, schema_version, data)`. Old schema versions are upcast on read
//! by [`DomainEvent::decode`]; stored events are never rewritten. JSON Schema files for every
//! event and command are generated from these types into `schemas/json/` by
//! [`json_schema::schema_files`] and checked by the `schema_files_match_the_code` test
//! (`make schemas` rewrites them).

pub mod commands;
pub mod consistency;
pub mod envelope;
pub mod event;
pub mod events;
pub mod json_schema;
pub mod money;
pub mod personal;
pub mod status;
pub mod values;

pub use commands::*;
pub use consistency::{ConsistencyToken, MalformedToken};
pub use envelope::{Actor, EventEnvelope, EventMetadata, RecordedMetadata, Role, StreamCategory, StreamRef};
pub use event::{DecodeError, DomainEvent};
pub use events::{
    current_schema_version, event_types, event_types_of, AnyEvent, CustomerEvent, EventTypeInfo, MerchantEvent,
    OrderEvent, OrderLine, ProductEvent, ProductListedV1, RejectedLine, StockAdjustmentReason,
};
pub use money::{Currency, Money, MoneyError};
pub use personal::{personal_fields, Personal, SealedBody, SealedField};
pub use status::{OrderStatus, ProductStatus};
pub use values::{Address, CountryCode, Email, FieldError, InvalidValue, Sku};
