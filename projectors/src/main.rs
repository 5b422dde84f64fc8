//! `projectors`: see the library docs of `ordo_projectors`.

use clap::Parser;
use ordo_service::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = ordo_service::telemetry::init();
    let config = ordo_projectors::config::Config::parse();
    ordo_projectors::run::run(config, Shutdown::on_signal()).await
}
