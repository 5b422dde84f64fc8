//! The operator and audit console at `/console`: static files compiled into the binary, and
//! `GET /v1/session`, which tells the page who its token belongs to.
//!
//! The page holds the pasted token in the tab's session storage and sends it as a bearer token
//! on every call to the same APIs everyone uses; the server authorises each call, the page only
//! hides what the role could not do anyway.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ordo_service::http::Json;
use ordo_service::{Principal, Problem};
use serde_json::json;

/// `(name, content type, bytes)` of every file of the console.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../console/api.js")),
    ("chain.js", "text/javascript; charset=utf-8", include_str!("../console/chain.js")),
    ("log.js", "text/javascript; charset=utf-8", include_str!("../console/log.js")),
    ("stream.js", "text/javascript; charset=utf-8", include_str!("../console/stream.js")),
    ("operations.js", "text/javascript; charset=utf-8", include_str!("../console/operations.js")),
    ("orders.js", "text/javascript; charset=utf-8", include_str!("../console/orders.js")),
    ("ui.js", "text/javascript; charset=utf-8", include_str!("../console/ui.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
];

const INDEX: &str = include_str!("../console/index.html");

/// Scripts and styles only from this origin, no framing, no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes (no state: every data call goes to the APIs).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/console", get(index)).route("/console/", get(index)).route("/console/{file}", get(asset))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    resp
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => Problem::not_found("no such console file").into_response(),
    }
}

#[utoipa::path(get, path = "/v1/session", tag = "console",
    description = "Who the bearer token belongs to, for the console: `{sub, role}`. Any valid token; the \
        console uses it only to choose what to show, never to authorise.",
    responses((status = 200, description = "`{sub, role}`"), (status = 401, description = "missing, invalid or expired token")),
    security(("bearer" = [])))]
pub async fn session(principal: Principal) -> Response {
    Json(json!({ "sub": principal.id, "role": principal.role.as_str() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_imports_is_served() {
        let mut sources = vec![INDEX];
        sources.extend(ASSETS.iter().map(|(_, _, body)| *body));
        for source in sources {
            for part in source.split("./").skip(1).chain(source.split("/console/").skip(1)) {
                let name: String =
                    part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_').collect();
                if name.ends_with(".js") || name.ends_with(".css") {
                    assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{name} is referenced but not served");
                }
            }
        }
    }
}
