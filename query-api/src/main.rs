//! `query-api`: see the library docs of `ordo_query_api`.

use clap::Parser;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = ordo_service::telemetry::init();
    let config = ordo_query_api::Config::parse();
    let listener = TcpListener::bind(config.addr).await?;
    ordo_query_api::run(listener, config, ordo_service::shutdown::signal()).await
}
