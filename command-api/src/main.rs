//! `command-api`: the HTTP write side of Ordo. Configuration: see `ordo_command_api::config`.

use std::process::ExitCode;

use ordo_command_api::config::{Config, PROCESS};
use ordo_service::config::{exit_code, refused};
use ordo_service::shutdown::Shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = ordo_service::telemetry::init();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => return refused(&e),
    };
    let result = ordo_command_api::run(config, Shutdown::on_signal()).await;
    exit_code(&PROCESS, result.map_err(Into::into))
}
