//! `order-saga`: drives orders to confirmed or rejected and compensates cancellations.
//! Configuration: see `ordo_saga::process`.
//!
//! SIGTERM or Ctrl-C: the events in flight are finished (for up to 10 s), the offsets they allow
//! are committed, then it exits.

use std::process::ExitCode;

use ordo_saga::process::{Config, PROCESS};
use ordo_service::config::{exit_code, refused};
use ordo_service::shutdown::Shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = ordo_service::telemetry::init();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => return refused(&e),
    };
    let result = ordo_saga::process::run(config, Shutdown::on_signal()).await;
    exit_code(&PROCESS, result)
}
