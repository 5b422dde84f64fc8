//! `projectors`: see the library docs of `ordo_projectors`.

use clap::Parser;
use ordo_service::shutdown::{self, Shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ordo_service::telemetry::init();
    let config = ordo_projectors::config::Config::parse();
    let stop = Shutdown::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        trigger.trigger();
    });
    ordo_projectors::run::run(config, stop).await
}
