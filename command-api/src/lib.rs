//! The write side of Ordo: command handlers over the event store and the HTTP command API.
//!
//! - [`CommandService`] (crate `ordo-commands`, re-exported here) runs commands without HTTP;
//!   the order saga and the CLI use that crate directly.
//! - [`router`] is the command half of Ordo's HTTP contract, with `/healthz`, `/readyz`,
//!   `/metrics` and `/openapi.json` (the contract as OpenAPI); [`run`] serves it until
//!   shutdown, [`serve`] on a listener of the caller's.
//!
//! Metrics: `ordo_commands_total{command,outcome}`, `ordo_command_duration_seconds{command}`,
//! `ordo_append_conflicts_total`, `ordo_command_retries_total{command}`, plus the HTTP request
//! metrics of `ordo_service`.

pub mod config;
pub mod http;

use std::future::Future;
use std::sync::Arc;

use ordo_event_store::{EventStore, StoreError};
use ordo_service::JwtKeys;
use tokio::net::TcpListener;

pub use config::Config;
pub use http::{router, AppState};
pub use ordo_commands::{
    CommandContext, CommandError, CommandOutcome, CommandService, IdempotencyKey, Loaded, OrderLineRequest,
    PlaceOrderRequest, Receipt, ReceiptKind, RetryPolicy,
};

pub use ordo_commands::{migrate, MIGRATOR};

/// Why the command API could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Schema(#[from] ordo_event_store::SchemaError),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    #[error("token verification: {0}")]
    Auth(#[from] ordo_service::auth::AuthConfigError),
}

/// Binds `config.addr` and serves the API until `shutdown` is triggered: the process's whole
/// life (see [`serve`]).
///
/// # Errors
/// [`RunError`] when the address cannot be bound, or as [`serve`].
pub async fn run(config: Config, shutdown: ordo_service::shutdown::Shutdown) -> Result<(), RunError> {
    let listener = TcpListener::bind(config.addr).await?;
    serve(listener, config, async move { shutdown.wait().await }).await
}

/// Connects to Postgres, readies the schema (applies the event store's and this crate's
/// migrations with `config.migrate`, else checks they were applied by `ordo migrate`), and
/// serves the API on `listener` until `shutdown` resolves; in-flight requests finish first.
///
/// # Errors
/// [`RunError`] when the database is unreachable, the schema is behind or serving fails.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let pool = ordo_event_store::connect(config.database_url.expose(), config.max_connections).await?;
    ordo_event_store::prepare_schema(&pool, &[&ordo_event_store::MIGRATOR, &MIGRATOR], config.migrate).await?;
    let store = EventStore::with_writer_options(pool, config.writer.clone());
    let commands = CommandService::new(store).with_retry_policy(config.retry);
    let keys = Arc::new(JwtKeys::new(&config.auth, config.jwt_secret.as_ref().map(|s| s.expose()))?);
    let app = router(AppState::new(commands, keys).with_query_url(&config.query_public_url), config.limits);
    tracing::info!(addr = %listener.local_addr()?, "command api listening");
    ordo_service::http::serve(listener, app, shutdown).await?;
    tracing::info!("command api stopped");
    Ok(())
}
