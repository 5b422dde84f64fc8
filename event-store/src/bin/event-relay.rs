//! `event-relay`: publishes the Postgres event log to Kafka. Run two for failover: one leads,
//! the other stands by. Configuration: see `ordo_event_store::relay::process`.
//!
//! SIGTERM or Ctrl-C: the in-flight batch finishes and its checkpoint is saved, then it exits.

use std::process::ExitCode;

use ordo_event_store::relay::process::{Config, PROCESS};
use ordo_service::config::{exit_code, refused};
use ordo_service::shutdown::Shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = ordo_service::telemetry::init();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => return refused(&e),
    };
    let result = ordo_event_store::relay::process::run(config, Shutdown::on_signal()).await;
    exit_code(&PROCESS, result)
}
