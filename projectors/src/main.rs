//! `projectors`: the workers that build Ordo's read models. Configuration: see
//! `ordo_projectors::config`.

use std::process::ExitCode;

use ordo_projectors::config::{Config, PROCESS};
use ordo_service::config::{exit_code, refused};
use ordo_service::shutdown::Shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = ordo_service::telemetry::init();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => return refused(&e),
    };
    let result = ordo_projectors::run::run(config, Shutdown::on_signal()).await;
    exit_code(&PROCESS, result)
}
