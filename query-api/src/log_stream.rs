//! `GET /v1/log/events`: the log as server-sent events, for auditors and admins.
//!
//! Each event is one SSE message: `id` is its log cursor (opaque), `data` its envelope as the
//! audit API serves it. A subscription resumes after `Last-Event-ID` (or the `from` parameter:
//! `start`, `now` or a cursor). The first message is id-only and names where the subscription
//! starts; a filtered subscription also receives id-only messages, so the id it resumes from
//! moves past events it skipped. Personal fields are revealed unless `personal=stored` asks for
//! them as stored. Comments (`: heartbeat`) keep idle streams open through
//! proxies. docs/log-subscription.md is the guide.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ordo_event_store::LogCursor;
use ordo_schemas::{Role, StreamCategory};
use ordo_service::{Principal, Problem};

use crate::log_feed::{Filter, Item, Start};
use crate::params::Params;
use crate::personal::PersonalView;
use crate::AppState;

/// Longest accepted event type name, and most names in one filter.
const MAX_TYPE_LEN: usize = 100;
const MAX_TYPES: usize = 50;

#[utoipa::path(get, path = "/v1/log/events", tag = "log",
    description = "The log as server-sent events (`Accept: text/event-stream`), live, in log order. Each \
        message has `id` (the event's log cursor, opaque) and `data` (the envelope, as the audit API serves it). \
        Resume after a disconnect with the `Last-Event-ID` header: no event is skipped or repeated, including \
        events that commit late. The first message is id-only (no data) and names where the subscription \
        starts; a filtered subscription also receives id-only messages so its resume point moves past what it \
        skipped. `: heartbeat` comments arrive on idle streams. \
        Example: `curl -N -H \"Authorization: Bearer $AUDITOR_TOKEN\" \
        'http://127.0.0.1:8081/v1/log/events?from=start&category=order'`.",
    params(
        ("from" = Option<String>, Query, pattern = "^(start|now|[0-9]{1,18})$", description = "`start`, `now` (default) or a cursor (an event id \
            received earlier); `Last-Event-ID` takes precedence"),
        ("category" = Option<String>, Query, pattern = r"^\s*(customer|merchant|product|order)\s*(,\s*(customer|merchant|product|order)\s*)*$", description = "comma-separated: customer, merchant, product, order"),
        ("type" = Option<String>, Query, pattern = r"^\s*[A-Za-z0-9_.]{1,100}\s*(,\s*[A-Za-z0-9_.]{1,100}\s*){0,49}$",
            description = "up to 50 comma-separated event types (letters, digits, `_`, `.`), e.g. OrderPlaced,OrderConfirmed"),
        ("stream_id" = Option<uuid::Uuid>, Query, description = "only this stream's events"),
        ("personal" = Option<String>, Query, pattern = "^(revealed|stored)$", description = "`revealed` (default): \
            personal fields in clear while the customer's key exists, `null` once erased (as of when this process \
            read the event); `stored`: as stored (sealed objects), so the hashes can be recomputed"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{1,18}$", description = "resume after this event id")
    ),
    responses(
        (status = 200, description = "an endless `text/event-stream`", content_type = "text/event-stream"),
        (status = 401, description = "missing or invalid token", content_type = "application/problem+json"),
        (status = 403, description = "not an auditor or admin", content_type = "application/problem+json"),
        (status = 406, description = "the client does not accept text/event-stream", content_type = "application/problem+json"),
        (status = 422, description = "a malformed parameter or Last-Event-ID", content_type = "application/problem+json"),
        (status = 503, description = "this process serves its maximum of subscribers (Retry-After)", content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    principal.require(&[Role::Auditor, Role::Admin])?;
    if !accepts_event_stream(&headers) {
        return Err(Problem::new(ordo_service::Code::NotAcceptable, "this endpoint answers text/event-stream"));
    }
    let mut p = Params::from_query(query)?;
    let start = start(&mut p, &headers);
    let filter = filter(&mut p);
    let view = match p.raw("personal").map(str::to_owned) {
        None => PersonalView::Revealed,
        Some(raw) => PersonalView::parse(&raw).unwrap_or_else(|| {
            p.reject("personal", "must be revealed or stored");
            PersonalView::Revealed
        }),
    };
    p.finish()?;
    let Ok(items) = state.feed.subscribe(start, filter) else {
        let mut problem = Problem::unavailable("this process serves its maximum of log subscribers");
        problem.retry_after = Some(5);
        return Err(problem);
    };
    tracing::info!(actor = %principal.id, role = principal.role.as_str(), ?start, "log subscription opened");
    // The stream ends when the token expires; the client reconnects with a fresh one.
    let expiry = token_expiry(&headers).unwrap_or_else(|| Duration::from_secs(365 * 24 * 3600));
    let messages = items.take_until(tokio::time::sleep(expiry)).map(move |item| {
        Ok::<_, Infallible>(match item {
            Item::Event(e) => Event::default().id(e.cursor.to_string()).data(&**e.json_as(view)),
            Item::Progress(cursor) => Event::default().id(cursor.to_string()),
        })
    });
    let mut resp =
        Sse::new(messages).keep_alive(KeepAlive::new().interval(state.heartbeat).text("heartbeat")).into_response();
    // Reverse proxies (nginx) would otherwise buffer the stream.
    resp.headers_mut().insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    Ok(resp)
}

/// How long the request's bearer token stays valid. Its signature and expiry were verified
/// when the request was authenticated; this only reads the `exp` claim again.
fn token_expiry(headers: &HeaderMap) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct Expiry {
        exp: i64,
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = value.split_once(' ')?;
    let mut read_only = jsonwebtoken::Validation::default();
    read_only.insecure_disable_signature_validation();
    read_only.validate_exp = false;
    read_only.required_spec_claims.clear();
    let claims =
        jsonwebtoken::decode::<Expiry>(token.trim(), &jsonwebtoken::DecodingKey::from_secret(&[]), &read_only).ok()?;
    let left = claims.claims.exp.saturating_sub(chrono::Utc::now().timestamp());
    Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

/// No `Accept`, `*/*`, `text/*` or `text/event-stream`.
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let values: Vec<&str> = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
    values.is_empty()
        || values.iter().flat_map(|v| v.split(',')).any(|range| {
            let media = range.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            matches!(media.as_str(), "text/event-stream" | "text/*" | "*/*")
        })
}

fn start(p: &mut Params, headers: &HeaderMap) -> Start {
    // `from` is checked even when `Last-Event-ID` takes precedence: a malformed one is refused.
    let from = match p.raw("from").map(str::to_owned).as_deref() {
        None | Some("now") => Start::Now,
        Some("start") => Start::Beginning,
        Some(other) => match other.parse::<LogCursor>() {
            Ok(c) => Start::After(c),
            Err(_) => {
                p.reject("from", "must be start, now or an event id this stream sent");
                Start::Now
            }
        },
    };
    if let Some(raw) = headers.get("last-event-id") {
        return match raw.to_str().ok().and_then(|s| s.trim().parse::<LogCursor>().ok()) {
            Some(c) => Start::After(c),
            None => {
                p.reject("Last-Event-ID", "is not an event id this stream sent");
                Start::Now
            }
        };
    }
    from
}

fn filter(p: &mut Params) -> Filter {
    let categories = p.raw("category").map(str::to_owned).map(|raw| {
        let parsed: Vec<Option<StreamCategory>> = raw.split(',').map(|c| StreamCategory::parse(c.trim())).collect();
        if parsed.iter().any(Option::is_none) {
            p.reject("category", "must be customer, merchant, product or order (comma-separated)");
        }
        parsed.into_iter().flatten().collect::<Vec<_>>()
    });
    let types = p.raw("type").map(str::to_owned).map(|raw| {
        let types: Vec<String> = raw.split(',').map(|t| t.trim().to_owned()).collect();
        let bad = |t: &String| {
            t.is_empty()
                || t.len() > MAX_TYPE_LEN
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        if types.len() > MAX_TYPES || types.iter().any(bad) {
            p.reject("type", "must be up to 50 comma-separated event types of up to 100 letters, digits, _ or .");
        }
        types
    });
    let stream_id = p.uuid("stream_id");
    Filter { categories, types, stream_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_header_must_allow_an_event_stream_when_present() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")));
            accepts_event_stream(&h)
        };
        assert!(accepts_event_stream(&HeaderMap::new()));
        assert!(with("text/event-stream"));
        assert!(with("application/json;q=0.5, Text/Event-Stream;q=1"));
        assert!(with("*/*"));
        assert!(!with("application/json"));
    }
}
