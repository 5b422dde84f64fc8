//! `/healthz`, `/readyz` and `/metrics`, served by every process (on the API port for the two
//! HTTP APIs, on a small ops listener for the workers).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A readiness check: resolves to `Err(reason)` while the process cannot do its work.
pub type ReadinessCheck = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Wraps an async closure as a [`ReadinessCheck`].
pub fn check<F, Fut>(f: F) -> ReadinessCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// The process-wide Prometheus recorder, installed on first use with the buckets and HELP
/// texts of [`crate::metrics`].
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = crate::metrics::builder().unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    crate::metrics::describe();
                    handle
                }
                // Another recorder is installed (only possible in tests): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The ops routes; `checks` all must pass for `/readyz` to answer 200.
pub fn router(checks: Vec<(&'static str, ReadinessCheck)>) -> Router {
    let handle = metrics_handle();
    let checks = Arc::new(checks);
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let checks = checks.clone();
                async move {
                    let mut failed = serde_json::Map::new();
                    for (name, check) in checks.iter() {
                        if let Err(reason) = check().await {
                            failed.insert((*name).to_owned(), reason.into());
                        }
                    }
                    if failed.is_empty() {
                        (StatusCode::OK, Json(json!({"status": "ready"})))
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "failed": failed})))
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    handle.run_upkeep();
                    let mut text = handle.render();
                    text.push_str(&crate::metrics::process_metrics());
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
                }
            }),
        )
        // A wrong method on these routes gets problem+json too (the APIs merge this router
        // outside their own middleware).
        .layer(axum::middleware::from_fn(crate::http::problem_for_bare_errors))
}

/// The Postgres readiness check every process uses: the pool answers `SELECT 1`.
pub fn postgres(pool: sqlx::PgPool) -> (&'static str, ReadinessCheck) {
    (
        "postgres",
        check(move || {
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await.map(|_| ()).map_err(|e| e.to_string()) }
        }),
    )
}

/// Binds `addr` and serves the ops routes of a worker (a process without an HTTP API) until
/// `shutdown` is triggered.
pub async fn serve_worker_ops(
    addr: &str,
    checks: Vec<(&'static str, ReadinessCheck)>,
    shutdown: crate::shutdown::Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr, "ops endpoints listening");
    let app = router(checks).fallback(crate::http::route_not_found);
    Ok(tokio::spawn(crate::http::serve(listener, app, async move { shutdown.wait().await })))
}
