//! The HTTP command API: routes, shared state, the correlation-id middleware and `/openapi.json`.

mod error;
mod extract;
mod openapi;
mod orders;
mod parse;
mod parties;
mod products;

use std::sync::Arc;

use axum::extract::{FromRef, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ordo_service::http::Limits;
use ordo_service::{ops, JwtKeys};
use tracing::Instrument;
use uuid::Uuid;

use ordo_commands::CommandService;

pub use error::ApiError;

/// `X-Correlation-Id`: accepted from the client (a UUID), otherwise minted; echoed in the answer
/// and stored in every event the request causes.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The query API's public base URL when none is configured (its default address).
pub const DEFAULT_QUERY_URL: &str = "http://127.0.0.1:8081";

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub commands: CommandService,
    pub keys: Arc<JwtKeys>,
    /// The query API's public base URL, without a trailing slash: `Location` headers point there.
    pub query_url: Arc<str>,
}

impl AppState {
    pub fn new(commands: CommandService, keys: Arc<JwtKeys>) -> Self {
        Self { commands, keys, query_url: Arc::from(DEFAULT_QUERY_URL) }
    }

    /// Points `Location` headers at the query API served at `url` (e.g. `https://api.example.com/read`).
    pub fn with_query_url(mut self, url: &str) -> Self {
        self.query_url = Arc::from(url.trim_end_matches('/'));
        self
    }
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// The correlation id of the current request (set by the middleware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CorrelationId(pub Uuid);

/// The command routes with the shared middleware, plus `/openapi.json` and the ops routes
/// (`/healthz`, `/readyz` checking Postgres, `/metrics`).
pub fn router(state: AppState, limits: Limits) -> Router {
    let pool = state.commands.store().pool().clone();
    let api = Router::new()
        .route("/v1/customers", post(parties::register_customer))
        .route("/v1/customers/{id}/erasure", post(parties::erase_customer))
        .route("/v1/merchants", post(parties::register_merchant))
        .route("/v1/products", post(products::list_product))
        .route("/v1/products/{id}/price", post(products::change_price))
        .route("/v1/products/{id}/stock", post(products::adjust_stock))
        .route("/v1/products/{id}/discontinue", post(products::discontinue_product))
        .route("/v1/orders", post(orders::place_order))
        .route("/v1/orders/{id}/payment", post(orders::pay_order))
        .route("/v1/orders/{id}/shipment", post(orders::ship_order))
        .route("/v1/orders/{id}/delivery", post(orders::deliver_order))
        .route("/v1/orders/{id}/cancellation", post(orders::cancel_order))
        .route("/openapi.json", get(openapi::serve))
        .fallback(ordo_service::http::route_not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(correlate));
    ordo_service::http::layers(api, limits).merge(ops::router(vec![ops::postgres(pool)]))
}

/// Takes the client's correlation id or mints one, runs the request in a span carrying it and
/// echoes it in the answer.
async fn correlate(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .unwrap_or_else(Uuid::now_v7);
    req.extensions_mut().insert(CorrelationId(id));
    let span = tracing::info_span!("command", correlation_id = %id);
    let mut resp = next.run(req).instrument(span).await.into_response();
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert(CORRELATION_ID, value);
    }
    resp
}
