//! The HTTP read side of Ordo: the read models built by `ordo-projectors`, served with keyset
//! pagination, ETags and read-your-writes consistency tokens, plus the audit endpoints over the
//! event log (`audit`), the live log as server-sent events (`log_stream`, fed by one shared
//! reader per process, `log_feed`), operations endpoints (`admin`) and the browser console
//! (`console`).
//!
//! Entry points: [`run`] (the process's life), [`serve`] (bind outside, pass the shutdown future
//! in) and [`app`] (the router).

mod admin;
pub mod audit;
pub mod cache;
mod cache_listener;
pub mod config;
pub mod consistency;
mod console;
pub mod log_feed;
mod log_stream;
mod openapi;
mod orders;
pub mod params;
mod personal;
mod products;
mod projections;
mod sales;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use ordo_service::http::{layers, Limits};
use ordo_service::shutdown::Shutdown;
use ordo_service::{ops, JwtKeys, Problem};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::Config;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: Arc<JwtKeys>,
    /// Longest wait for a consistency token.
    pub consistency_wait: Duration,
    /// The shared reader behind `/v1/log/events`.
    pub feed: log_feed::LogFeed,
    /// Interval of heartbeat comments on idle log streams.
    pub heartbeat: Duration,
    /// The relay whose leader and lag `/v1/log/status` reports.
    pub relay_name: String,
    /// Rows and first pages, kept fresh by the projectors' notifications.
    pub cache: cache::QueryCache,
    /// Reveals the sealed personal fields of answers; one per process, so its key-encryption
    /// keys are loaded once.
    pub personal: Arc<ordo_event_store::personal::PersonalData>,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(s: &AppState) -> Self {
        s.keys.clone()
    }
}

/// Logs the cause and answers 503 with `Retry-After` when no database connection was free in
/// time, a generic 500 otherwise.
pub(crate) fn internal<E: Into<anyhow::Error>>(e: E) -> Problem {
    let e: anyhow::Error = e.into();
    Problem::from_failure(e.as_ref(), "query failed")
}

/// Marks an answer that may hold personal data in clear (the audit routes, the log
/// subscription) as never to be stored by a cache on the way.
pub(crate) async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

/// The whole router: read models, audit, ops endpoints and `/openapi.json`, with the shared
/// middleware; unknown routes and methods answer problem+json.
pub fn app(state: AppState, limits: Limits) -> Router {
    let api = Router::new()
        .route("/v1/products", get(products::list))
        .route("/v1/products/{id}", get(products::one))
        .route("/v1/orders/{id}", get(orders::one))
        .route("/v1/customers/{id}/orders", get(orders::by_customer))
        .route("/v1/merchants/{id}/orders", get(orders::by_merchant))
        .route("/v1/merchants/{id}/sales", get(sales::daily))
        .route("/v1/projections", get(projections::list))
        .route("/v1/projections/dead-letters", get(admin::dead_letters))
        .route("/v1/projections/parked", get(admin::parked))
        .route("/v1/projections/parked/retry", post(admin::retry))
        .route("/v1/log/events", get(log_stream::events).layer(axum::middleware::map_response(no_store)))
        .route("/v1/log/status", get(admin::log_status))
        .route("/v1/session", get(console::session))
        .route("/openapi.json", get(openapi::document))
        .with_state(state.clone())
        .merge(audit::router(state.pool.clone(), state.keys.clone()))
        .merge(console::router())
        .fallback(ordo_service::http::route_not_found);
    layers(api, limits).merge(ops::router(vec![ops::postgres(state.pool.clone())]))
}

/// Binds `config.addr` and serves the API until `shutdown` is triggered: the process's whole
/// life (see [`serve`]).
///
/// # Errors
/// When the address cannot be bound, or as [`serve`].
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.addr).await?;
    serve(listener, config, async move { shutdown.wait().await }).await
}

/// Connects, readies the schema (the log's and the read models', applied with
/// `config.migrate`, else checked), and serves on `listener` until `shutdown` resolves;
/// in-flight requests finish first.
///
/// # Errors
/// When the database cannot be reached, the schema is behind, or serving fails.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cache = config.cache();
    serve_with_cache(listener, config, cache, shutdown).await
}

/// [`serve`] with the read cache given (tests keep a handle to read its counters).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_cache(
    listener: TcpListener,
    config: Config,
    cache: cache::QueryCache,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = ordo_event_store::connect(config.database_url.expose(), config.db_connections).await?;
    let migrators = [&ordo_event_store::MIGRATOR, &ordo_projectors::MIGRATOR];
    ordo_event_store::prepare_schema(&pool, &migrators, config.migrate).await?;
    // Log streams never end by themselves: they end when shutdown begins, so serving can finish.
    let stop = Shutdown::new();
    let feed =
        log_feed::LogFeed::start(ordo_event_store::EventStore::new(pool.clone()), config.feed_options(), stop.clone())
            .await?;
    let state = AppState {
        pool: pool.clone(),
        keys: Arc::new(JwtKeys::new(&config.auth, config.jwt_secret.as_ref().map(|s| s.expose()))?),
        consistency_wait: config.consistency_wait(),
        feed,
        heartbeat: Duration::from_secs(config.log_heartbeat_secs.max(1)),
        relay_name: config.relay_name.clone(),
        cache: cache.clone(),
        personal: Arc::new(ordo_event_store::personal::PersonalData::new(pool.clone())),
    };
    let listening = tokio::spawn(cache_listener::listen(cache, pool.clone(), stop.clone()));
    let limits = config.limits;
    tracing::info!(addr = %listener.local_addr()?, "query api listening");
    let shutdown = async move {
        shutdown.await;
        stop.trigger();
    };
    ordo_service::http::serve(listener, app(state, limits), shutdown).await?;
    listening.await?;
    pool.close().await;
    tracing::info!("query api stopped");
    Ok(())
}
