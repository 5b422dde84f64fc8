//! Integration tests of the projectors against a real Postgres (a fresh database per test) and,
//! for everything crossing Kafka, a real nisshi broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod data_errors;
mod from_log;
mod hostile_input;
mod kafka;
mod measure;
mod replicas;
pub(crate) mod set_based;

use ordo_event_store::testing::TestDb;

/// A fresh database with the event log and the read models.
pub async fn db() -> TestDb {
    let db = TestDb::new().await;
    ordo_projectors::migrate(&db.pool).await.unwrap();
    db
}
