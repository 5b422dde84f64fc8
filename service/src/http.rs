//! The HTTP edge both APIs share: a JSON extractor answering in problem+json, the middleware
//! stack (request ids, trace spans, request metrics, an access log line per request at info,
//! problem+json for unknown routes and methods, body limit, timeout) and serving with graceful
//! shutdown.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::problem::{Code, Problem};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body_bytes: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { body_bytes: 64 * 1024, timeout: Duration::from_secs(10) }
    }
}

/// `axum::Json` whose rejections are problem+json: 415 without a JSON content type, 400 for
/// malformed JSON, 422 for well-formed JSON of the wrong shape, 413 for an oversized body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    let status = rejection.status();
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde names the path of the first offending field.
            let text = e.body_text();
            let field = text.split(':').nth(1).map(|s| s.trim().to_owned()).unwrap_or_else(|| "body".into());
            Problem::validation(vec![crate::problem::FieldProblem { field, message: text }])
        }
        JsonRejection::JsonSyntaxError(_) => Problem::new(Code::MalformedJson, rejection.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            Problem::new(Code::UnsupportedMediaType, "expected content-type: application/json")
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        _ => Problem::bad_request(rejection.body_text()),
    }
}

/// `axum::extract::Query` whose rejection is a problem+json 400 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rejection) => Err(Problem::new(Code::InvalidQuery, rejection.body_text())),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// 413 `payload_too_large`.
pub fn payload_too_large() -> Problem {
    Problem::new(Code::PayloadTooLarge, "the request body is larger than allowed")
}

/// The fallback of both APIs: 404 `not_found` for a path no route serves.
pub async fn route_not_found() -> Problem {
    Problem::not_found("no such route")
}

/// Answers axum's bare 404 and 405 (no body) with problem+json. axum adds `Allow` to the 405
/// after this middleware, since the answer has none.
pub async fn problem_for_bare_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.headers().contains_key(header::CONTENT_TYPE) {
        return resp;
    }
    match resp.status() {
        StatusCode::NOT_FOUND => Problem::not_found("no such route").into_response(),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = resp.headers().get(header::ALLOW).cloned();
            let mut answer = Problem::new(Code::MethodNotAllowed, "this route does not answer this method (see Allow)")
                .into_response();
            if let Some(allow) = allow {
                answer.headers_mut().insert(header::ALLOW, allow);
            }
            answer
        }
        _ => resp,
    }
}

/// Applies the shared middleware to an API router.
pub fn layers(router: Router, limits: Limits) -> Router {
    let timeout = limits.timeout;
    router
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| async move {
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(resp) => resp,
                Err(_) => Problem::new(Code::Timeout, "the request took too long").into_response(),
            }
        }))
        .layer(axum::middleware::from_fn(problem_for_bare_errors))
        .layer(axum::middleware::from_fn(observe))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok());
            let route = req.extensions().get::<MatchedPath>().map_or_else(|| req.uri().path(), MatchedPath::as_str);
            let span = tracing::info_span!(
                "request",
                otel.kind = "server",
                otel.name = %format_args!("{} {route}", req.method()),
                method = %req.method(),
                path = %req.uri().path(),
                request_id = request_id.unwrap_or_default(),
            );
            // The caller's trace, when it sent one, is the parent of the request span.
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
            crate::telemetry::set_remote_parent(&span, header("traceparent"), header("tracestate"));
            span
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Request metrics and the access log: one info line per request with the method, the matched
/// route (never the query string), the status, the latency and the request id. Headers are not
/// logged, so neither is `Authorization`.
async fn observe(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    tracing::info!(
        target: "ordo::access",
        method = %method,
        route = %route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id = %request_id,
        "request served"
    );
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    metrics::counter!("ordo_http_requests_total", &labels).increment(1);
    metrics::histogram!("ordo_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    resp
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service()).with_graceful_shutdown(shutdown).await
}
