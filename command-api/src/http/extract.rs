//! Extractors shared by the command handlers and the success answer.
//!
//! - [`RawCommand`] keeps the body bytes so the idempotency hash covers exactly what was sent,
//!   and parses JSON only after the handler checked the caller's role (403 before 422).
//! - [`CommandMeta`] reads `Idempotency-Key`, `If-Match`, the correlation id and `traceparent`.
//! - [`IdPath`] is a path id whose rejection is 400 `invalid_path`.
//! - [`respond`] answers a success; creations carry a `Location` on the query API ([`ReadAt`]).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ordo_service::{Principal, Problem, TraceContext};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::ApiError;
use super::CorrelationId;
use ordo_commands::{CommandContext, CommandOutcome, IdempotencyKey, ReceiptKind};
use ordo_schemas::ConsistencyToken;
use serde_json::json;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// A command request's body, unparsed, with its idempotency hash
/// `sha256(method || " " || path || "\n" || body)`.
pub(crate) struct RawCommand {
    content_type: Option<HeaderValue>,
    body: Bytes,
    hash: Vec<u8>,
}

impl<S: Send + Sync> FromRequest<S> for RawCommand {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut hasher = Sha256::new();
        hasher.update(req.method().as_str().as_bytes());
        hasher.update(b" ");
        hasher.update(req.uri().path().as_bytes());
        hasher.update(b"\n");
        let content_type = req.headers().get(CONTENT_TYPE).cloned();
        let body = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ordo_service::http::payload_too_large()
            } else {
                Problem::bad_request(r.body_text())
            }
        })?;
        hasher.update(&body);
        Ok(Self { content_type, body, hash: hasher.finalize().to_vec() })
    }
}

impl RawCommand {
    /// Parses the body as JSON with `ordo_service::http::Json`'s answers: 415 without a JSON
    /// content type, 400 for malformed JSON, 422 for the wrong shape.
    pub(crate) async fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let mut req = Request::new(Body::from(self.body.clone()));
        if let Some(ct) = &self.content_type {
            req.headers_mut().insert(CONTENT_TYPE, ct.clone());
        }
        let ordo_service::http::Json(value) = ordo_service::http::Json::<T>::from_request(req, &()).await?;
        Ok(value)
    }
}

/// Command headers: idempotency key, expected version, correlation id and trace context.
pub(crate) struct CommandMeta {
    correlation_id: Uuid,
    trace: TraceContext,
    idempotency_key: Option<String>,
    expected_version: Option<i64>,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(v) = parts.headers.get(&super::CORRELATION_ID) {
            if v.to_str().ok().and_then(|s| Uuid::parse_str(s.trim()).ok()).is_none() {
                return Err(Problem::bad_request("X-Correlation-Id must be a UUID").into());
            }
        }
        let correlation_id = parts.extensions.get::<CorrelationId>().map_or_else(Uuid::now_v7, |c| c.0);
        let Ok(trace) = TraceContext::from_request_parts(parts, state).await;
        let idempotency_key = match parts.headers.get(&IDEMPOTENCY_KEY) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
                    .ok_or_else(|| Problem::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters"))?
                    .to_owned(),
            ),
        };
        let expected_version = match parts.headers.get(IF_MATCH) {
            None => None,
            Some(v) => parse_if_match(v.to_str().unwrap_or_default())
                .ok_or_else(|| Problem::bad_request("If-Match must be a stream version such as \"3\""))?,
        };
        Ok(Self { correlation_id, trace, idempotency_key, expected_version })
    }
}

/// `"3"`, `W/"3"` or `3` expect version 3 (1 to 18 digits); `*` expects nothing in particular.
fn parse_if_match(value: &str) -> Option<Option<i64>> {
    let v = value.trim();
    if v == "*" {
        return Some(None);
    }
    let v = match v.strip_prefix("W/") {
        Some(weak) => weak.strip_prefix('"').and_then(|s| s.strip_suffix('"'))?,
        None => v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v),
    };
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<i64>().ok().map(Some)
}

impl CommandMeta {
    /// The command context for `principal`; a success will be of the kind `success`.
    pub(crate) fn context(&self, principal: &Principal, raw: &RawCommand, success: ReceiptKind) -> CommandContext {
        let idempotency = self.idempotency_key.as_ref().map(|key| IdempotencyKey {
            scope: principal.id.to_string(),
            key: key.clone(),
            request_hash: raw.hash.clone(),
            kind: success,
        });
        CommandContext::new(principal.actor(), self.correlation_id)
            .with_traceparent(Some(self.trace.traceparent.clone()))
            .with_tracestate(self.trace.tracestate.clone())
            .expecting(self.expected_version)
            .with_idempotency(idempotency)
    }
}

/// The `{id}` of a route; a malformed id is 400 `invalid_path`.
pub(crate) struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<Uuid>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(IdPath(id)),
            Err(_) => Err(Problem::invalid_path("id").into()),
        }
    }
}

/// Where the query API serves a resource the command API creates.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadAt {
    /// The customer's orders (the query API has no customer page).
    Customer,
    /// The merchant's orders (the query API has no merchant page).
    Merchant,
    Product,
    Order,
}

impl ReadAt {
    fn path(self, id: Uuid) -> String {
        match self {
            ReadAt::Customer => format!("/v1/customers/{id}/orders"),
            ReadAt::Merchant => format!("/v1/merchants/{id}/orders"),
            ReadAt::Product => format!("/v1/products/{id}"),
            ReadAt::Order => format!("/v1/orders/{id}"),
        }
    }
}

/// The answer of a successful (or replayed) command: `{"id", "version", "consistency_token"}`
/// with `ETag: "<version>"`, 201, 202 or 200 by the kind of success, `Location` for creations
/// (`location`: the query API's base URL and where it reads the resource) and
/// `Idempotent-Replayed: true` for repeats, which answer from the stored receipt.
pub(crate) fn respond(outcome: CommandOutcome, success: ReceiptKind, location: Option<(&str, ReadAt)>) -> Response {
    let (stream, version, kind, replayed) = match outcome.replayed {
        Some(receipt) => (receipt.stream, receipt.version, receipt.kind, true),
        None => (outcome.stream, outcome.version, success, false),
    };
    let status = StatusCode::from_u16(kind.code()).unwrap_or(StatusCode::OK);
    let body = json!({
        "id": stream.id,
        "version": version,
        "consistency_token": ConsistencyToken::new(stream, version).to_string(),
    });
    let mut resp = (status, axum::Json(body)).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(ETAG, v);
    }
    if let Some((base, at)) = location.filter(|_| kind == ReceiptKind::Created || kind == ReceiptKind::Accepted) {
        if let Ok(v) = HeaderValue::from_str(&format!("{base}{}", at.path(stream.id))) {
            headers.insert(LOCATION, v);
        }
    }
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::parse_if_match;

    #[test]
    fn if_match_accepts_quoted_weak_and_bare_versions() {
        assert_eq!(parse_if_match("\"3\""), Some(Some(3)));
        assert_eq!(parse_if_match("W/\"3\""), Some(Some(3)));
        assert_eq!(parse_if_match("3"), Some(Some(3)));
        assert_eq!(parse_if_match("*"), Some(None));
        for bad in ["", "\"x\"", "\"-1\"", "abc", "+3", "W/3", "\"3", "1234567890123456789"] {
            assert_eq!(parse_if_match(bad), None, "{bad}");
        }
    }
}
