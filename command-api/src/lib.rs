//! The write side of Ordo: command handlers over the event store and the HTTP command API.
//!
//! - [`CommandService`] runs commands without HTTP: load, fold, decide, append at the loaded
//!   version, retry lost races, idempotency records in the same transaction. The order saga
//!   constructs it with `CommandService::new(EventStore::new(pool))` and calls its methods
//!   (`reserve_stock`, `release_reservation`, `commit_reservation`, `confirm_order`,
//!   `reject_order`, ...) with a [`CommandContext`] such as [`CommandContext::system`].
//! - [`router`] is the HTTP API of `/work/shared/API.md` (command half) with `/healthz`,
//!   `/readyz`, `/metrics` and `/openapi.json`; [`run`] serves it until a shutdown future
//!   resolves.
//!
//! Metrics: `ordo_commands_total{command,outcome}`, `ordo_command_duration_seconds{command}`,
//! `ordo_append_conflicts_total`, `ordo_command_retries_total{command}`, plus the HTTP request
//! metrics of `ordo_service`.

pub mod commands;
pub mod config;
pub mod http;

use std::future::Future;
use std::sync::Arc;

use ordo_event_store::{EventStore, StoreError};
use ordo_service::JwtKeys;
use tokio::net::TcpListener;

pub use commands::{
    CommandContext, CommandError, CommandOutcome, CommandService, IdempotencyKey, Loaded, OrderLineRequest,
    PlaceOrderRequest, RetryPolicy, StoredResponse,
};
pub use config::Config;
pub use http::{router, AppState};

/// The migrations of the command side's own tables (the SKU registry).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies this crate's migrations. All Ordo crates share one `_sqlx_migrations` table, so
/// versions this migrator does not know are ignored.
///
/// # Errors
/// When a migration fails or an applied one was changed.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    ordo_event_store::run_migrations(&MIGRATOR, pool).await
}

/// Why the command API could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to Postgres, applies the event store's and this crate's migrations, and serves the
/// API on `listener` until `shutdown` resolves; in-flight requests finish first.
///
/// # Errors
/// [`RunError`] when the database is unreachable, a migration fails or serving fails.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let pool = ordo_event_store::connect(&config.database_url, config.max_connections).await?;
    ordo_event_store::migrate(&pool).await?;
    migrate(&pool).await?;
    let commands = CommandService::new(EventStore::new(pool)).with_retry_policy(config.retry);
    let keys = Arc::new(JwtKeys::from_secret(config.jwt_secret.expose().as_bytes()));
    let app = router(AppState::new(commands, keys), config.limits);
    tracing::info!(addr = %listener.local_addr()?, "command api listening");
    ordo_service::http::serve(listener, app, shutdown).await?;
    tracing::info!("command api stopped");
    Ok(())
}
