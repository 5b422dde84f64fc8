//! `command-api`: the HTTP write side of Ordo. Configuration: see `ordo_command_api::config`.

use std::process::ExitCode;

use ordo_command_api::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = ordo_service::telemetry::init();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(addr = %config.addr, error = %e, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match ordo_command_api::run(listener, config, ordo_service::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "command api failed");
            ExitCode::FAILURE
        }
    }
}
