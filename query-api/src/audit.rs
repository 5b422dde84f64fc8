//! Audit endpoints over the event log itself (never the read models), for auditors and admins:
//! stream history with metadata and hashes, state as of a time or version (rebuilt with the
//! write side's `evolve`), stream digests and proofs, log search and chain verification.
//!
//! Auditors are authorised callers: events and states show personal fields in clear while the
//! customer's key exists and as `null` once it is destroyed (ADR 0027). `personal=stored` serves
//! events as stored instead, sealed objects included, so their hashes can be recomputed.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use ordo_domain::{Aggregate, Customer, Merchant, Order, Product};
use ordo_event_store::search::{search, LogQuery};
use ordo_event_store::{EventStore, RecordedEvent, StoreError};
use ordo_schemas::{EventEnvelope, Role, StreamCategory, StreamRef};
use ordo_service::http::{Json, Query};

mod verify_stream;

use crate::params::{decode_cursor, page, DEFAULT_LIMIT, MAX_LIMIT};
use crate::personal::{reveal_events, PersonalView};
use ordo_service::problem::FieldProblem;
use ordo_service::{Code, JwtKeys, Principal, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Clone)]
struct AuditState {
    store: EventStore,
    keys: Arc<JwtKeys>,
}

impl FromRef<AuditState> for Arc<JwtKeys> {
    fn from_ref(s: &AuditState) -> Self {
        s.keys.clone()
    }
}

/// Refusals every audit route may answer with (problem+json bodies).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum AuditErrors {
    /// A malformed query parameter.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest,
    /// Missing or invalid bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized,
    /// Not an auditor or admin.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden,
    /// No such stream.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound,
    /// Well-formed but invalid parameters (every field listed).
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid,
}

/// The OpenAPI description of the audit routes, merged into the query API's document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(stream_events, stream_state, stream_digest, digest_proof, search_events, verify))]
pub struct AuditDoc;

/// The audit routes, with their own state.
pub fn router(pool: sqlx::PgPool, keys: Arc<JwtKeys>) -> Router {
    Router::new()
        .route("/v1/audit/streams/{category}/{id}/events", get(stream_events))
        .route("/v1/audit/streams/{category}/{id}/state", get(stream_state))
        .route("/v1/audit/streams/{category}/{id}/digest", get(stream_digest))
        .route("/v1/audit/streams/{category}/{id}/digest/proof", get(digest_proof))
        .route("/v1/audit/events", get(search_events))
        .route("/v1/audit/verify", get(verify))
        .with_state(AuditState { store: EventStore::new(pool), keys })
        .layer(axum::middleware::map_response(crate::no_store))
}

fn require_auditor(p: &Principal) -> Result<(), Problem> {
    p.require(&[Role::Auditor, Role::Admin])
}

fn internal(e: impl Into<anyhow::Error>) -> Problem {
    crate::internal(e)
}

/// A sealed field that does not decrypt (altered or moved) leaves no honest state to show: the
/// answer names the field and version, as `GET /v1/audit/verify` names the broken link.
fn undecryptable(e: StoreError) -> Problem {
    match e {
        StoreError::Corrupt(what) => {
            tracing::error!(problem = %what, "audit state not rebuilt");
            Problem::new(Code::InternalError, format!("the state cannot be rebuilt: {what}"))
        }
        other => internal(other),
    }
}

fn invalid(field: &str, message: &str) -> Problem {
    Problem::validation(vec![FieldProblem { field: field.to_owned(), message: message.to_owned() }])
}

/// Parses `{category}/{id}`; an unknown category is a 404 (no such stream), a malformed id 400
/// `invalid_path`.
fn stream_ref(category: &str, id: &str) -> Result<StreamRef, Problem> {
    let category = StreamCategory::parse(category)
        .ok_or_else(|| Problem::not_found(format!("unknown stream category {category}")))?;
    let id = crate::params::path_uuid(id, "id")?;
    Ok(StreamRef::new(category, id))
}

fn envelope(e: &RecordedEvent) -> Result<EventEnvelope, Problem> {
    e.to_envelope().map_err(internal)
}

#[derive(Deserialize)]
struct VersionRange {
    from_version: Option<i64>,
    to_version: Option<i64>,
    #[serde(default)]
    personal: PersonalView,
}

/// Reveals the personal fields of `events` unless the caller asked for them as stored.
async fn shown(store: &EventStore, view: PersonalView, events: &mut [RecordedEvent]) -> Result<(), Problem> {
    match view {
        PersonalView::Revealed => reveal_events(store.personal(), events).await.map_err(internal),
        PersonalView::Stored => Ok(()),
    }
}

const PERSONAL_PARAM: &str = "`revealed` (default): personal fields in clear while the customer's key exists, \
    `null` once erased; `stored`: as stored (sealed objects), so the hashes can be recomputed";

#[utoipa::path(
    get, path = "/v1/audit/streams/{category}/{id}/events", tag = "audit",
    params(
        ("category" = String, Path, description = "customer, merchant, product or order"),
        ("id" = uuid::Uuid, Path, description = "the stream id"),
        ("from_version" = Option<i64>, Query),
        ("to_version" = Option<i64>, Query, description = "not below `from_version`"),
        ("personal" = Option<String>, Query, pattern = "^(revealed|stored)$", description = PERSONAL_PARAM)
    ),
    responses(
        (status = 200, description = "the stream's events with metadata, hash and prev_hash", content_type = "application/json"),
        AuditErrors,
    ),
    security(("bearer" = []))
)]
async fn stream_events(
    State(s): State<AuditState>,
    principal: Principal,
    Path((category, id)): Path<(String, String)>,
    Query(range): Query<VersionRange>,
) -> Result<Response, Problem> {
    require_auditor(&principal)?;
    let stream = stream_ref(&category, &id)?;
    let from = range.from_version.unwrap_or(1).max(1);
    let to = range.to_version.unwrap_or(i64::MAX);
    if to < from {
        return Err(invalid("to_version", "must not be below from_version"));
    }
    let mut events = s.store.read_stream_range(stream, from, to).await.map_err(internal)?;
    if events.is_empty() && s.store.stream_version(stream).await.map_err(internal)? == 0 {
        return Err(Problem::not_found(format!("stream {stream} does not exist")));
    }
    shown(&s.store, range.personal, &mut events).await?;
    let events = events.iter().map(envelope).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "events": events })).into_response())
}

#[derive(Deserialize)]
struct AsOf {
    at: Option<DateTime<Utc>>,
    version: Option<i64>,
}

#[derive(Serialize)]
struct StateAnswer {
    version: i64,
    recorded_at: Option<DateTime<Utc>>,
    state: Value,
}

#[utoipa::path(
    get, path = "/v1/audit/streams/{category}/{id}/state", tag = "audit",
    params(
        ("category" = String, Path, description = "customer, merchant, product or order"),
        ("id" = uuid::Uuid, Path, description = "the stream id"),
        ("at" = Option<String>, Query, format = DateTime, description = "RFC 3339 time; not with `version`"),
        ("version" = Option<i64>, Query, minimum = 0, description = "not with `at`")
    ),
    responses(
        (status = 200, description = "the aggregate rebuilt as of that time or version", content_type = "application/json"),
        AuditErrors,
    ),
    security(("bearer" = []))
)]
async fn stream_state(
    State(s): State<AuditState>,
    principal: Principal,
    Path((category, id)): Path<(String, String)>,
    Query(as_of): Query<AsOf>,
) -> Result<Response, Problem> {
    require_auditor(&principal)?;
    let stream = stream_ref(&category, &id)?;
    if as_of.at.is_some() && as_of.version.is_some() {
        return Err(invalid("at", "give either at or version, not both"));
    }
    if as_of.version.is_some_and(|v| v < 0) {
        return Err(invalid("version", "must not be negative"));
    }
    let mut events = s.store.read_stream_range(stream, 1, as_of.version.unwrap_or(i64::MAX)).await.map_err(internal)?;
    if events.is_empty() && s.store.stream_version(stream).await.map_err(internal)? == 0 {
        return Err(Problem::not_found(format!("stream {stream} does not exist")));
    }
    if let Some(at) = as_of.at {
        events.retain(|e| e.recorded_at <= at);
    }
    // The state shows personal fields in clear while the customer's key exists, `null` once erased.
    s.store.personal().reveal_recorded(&mut events).await.map_err(undecryptable)?;
    let state = fold(stream.category, &events)?;
    let last = events.last();
    Ok(Json(StateAnswer { version: last.map_or(0, |e| e.version), recorded_at: last.map(|e| e.recorded_at), state })
        .into_response())
}

/// Rebuilds the aggregate from `events` with the same `evolve` the write side uses.
fn fold(category: StreamCategory, events: &[RecordedEvent]) -> Result<Value, Problem> {
    fn run<A: Aggregate + Serialize>(events: &[RecordedEvent]) -> Result<Value, Problem> {
        let typed = events.iter().map(|e| e.decode::<A::Event>()).collect::<Result<Vec<_>, _>>().map_err(internal)?;
        serde_json::to_value(A::from_events(&typed)).map_err(internal)
    }
    match category {
        StreamCategory::Customer => run::<Customer>(events),
        StreamCategory::Merchant => run::<Merchant>(events),
        StreamCategory::Product => run::<Product>(events),
        StreamCategory::Order => run::<Order>(events),
    }
}

#[utoipa::path(
    get, path = "/v1/audit/streams/{category}/{id}/digest", tag = "audit",
    params(
        ("category" = String, Path, description = "customer, merchant, product or order"),
        ("id" = uuid::Uuid, Path, description = "the stream id")
    ),
    responses(
        (status = 200, description = "the stream's version and head hash", content_type = "application/json"),
        AuditErrors,
    ),
    security(("bearer" = []))
)]
async fn stream_digest(
    State(s): State<AuditState>,
    principal: Principal,
    Path((category, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    require_auditor(&principal)?;
    let stream = stream_ref(&category, &id)?;
    let version = s.store.stream_version(stream).await.map_err(internal)?;
    let head = s.store.read_stream_range(stream, version, version).await.map_err(internal)?;
    let Some(head) = head.first() else {
        return Err(Problem::not_found(format!("stream {stream} does not exist")));
    };
    Ok(Json(json!({ "version": version, "head_hash": hex::encode(&head.hash) })).into_response())
}

#[derive(Deserialize)]
struct ProofQuery {
    version: Option<i64>,
    hash: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/audit/streams/{category}/{id}/digest/proof", tag = "audit",
    params(
        ("category" = String, Path, description = "customer, merchant, product or order"),
        ("id" = uuid::Uuid, Path, description = "the stream id"),
        ("version" = i64, Query, minimum = 1, description = "version of the saved digest"),
        ("hash" = String, Query, pattern = "^[0-9A-Fa-f]{64}$", description = "head hash of the saved digest (64 hex characters)")
    ),
    responses(
        (status = 200, description = "whether today's history extends the saved digest", content_type = "application/json"),
        AuditErrors,
    ),
    security(("bearer" = []))
)]
async fn digest_proof(
    State(s): State<AuditState>,
    principal: Principal,
    Path((category, id)): Path<(String, String)>,
    Query(q): Query<ProofQuery>,
) -> Result<Response, Problem> {
    require_auditor(&principal)?;
    let stream = stream_ref(&category, &id)?;
    let mut errors = Vec::new();
    if q.version.is_none_or(|v| v <= 0) {
        errors.push(FieldProblem { field: "version".into(), message: "a positive version is required".into() });
    }
    let hash = q.hash.unwrap_or_default();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        errors.push(FieldProblem { field: "hash".into(), message: "64 hex characters are required".into() });
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let proof = ordo_event_store::verify::prove_digest(s.store.pool(), stream, q.version.unwrap_or(0), &hash)
        .await
        .map_err(internal)?;
    Ok(Json(proof).into_response())
}

#[derive(Deserialize)]
struct SearchQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    actor: Option<Uuid>,
    correlation_id: Option<Uuid>,
    category: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    #[serde(default)]
    personal: PersonalView,
}

#[utoipa::path(
    get, path = "/v1/audit/events", tag = "audit",
    params(
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339, inclusive"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339, exclusive; not before `from`"),
        ("type" = Option<String>, Query, max_length = 100, pattern = r"^[^\x00]*$"),
        ("actor" = Option<uuid::Uuid>, Query),
        ("correlation_id" = Option<uuid::Uuid>, Query),
        ("category" = Option<String>, Query, pattern = "^(customer|merchant|product|order)$"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1..500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-f]{2})*$", description = "next_cursor of the previous page (opaque)"),
        ("personal" = Option<String>, Query, pattern = "^(revealed|stored)$", description = PERSONAL_PARAM)
    ),
    responses(
        (status = 200, description = "matching events in log order: items and next_cursor", content_type = "application/json"),
        AuditErrors,
    ),
    security(("bearer" = []))
)]
async fn search_events(
    State(s): State<AuditState>,
    principal: Principal,
    Query(q): Query<SearchQuery>,
) -> Result<Response, Problem> {
    require_auditor(&principal)?;
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldProblem { field: "limit".into(), message: format!("must be 1..={MAX_LIMIT}") });
    }
    let after = match q.cursor.as_deref() {
        None => 0,
        Some(c) => decode_cursor::<i64>(c).unwrap_or_else(|| {
            errors.push(FieldProblem { field: "cursor".into(), message: "malformed cursor".into() });
            0
        }),
    };
    let category = match q.category.as_deref() {
        None => None,
        Some(c) => StreamCategory::parse(c).or_else(|| {
            errors.push(FieldProblem { field: "category".into(), message: "unknown category".into() });
            None
        }),
    };
    if let (Some(from), Some(to)) = (q.from, q.to) {
        if to < from {
            errors.push(FieldProblem { field: "to".into(), message: "must not be before from".into() });
        }
    }
    if q.event_type.as_ref().is_some_and(|t| t.chars().count() > 100 || t.contains('\0')) {
        errors.push(FieldProblem { field: "type".into(), message: "too long or contains NUL".into() });
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let query = LogQuery {
        from_time: q.from,
        to_time: q.to,
        event_type: q.event_type,
        actor: q.actor,
        correlation_id: q.correlation_id,
        category,
        ..LogQuery::default()
    };
    // One extra row tells whether another page exists.
    let events = search(s.store.pool(), &query, after, limit + 1).await.map_err(internal)?;
    let (mut events, next_cursor) = page(events, limit, |e| e.position);
    shown(&s.store, q.personal, &mut events).await?;
    let items = events.iter().map(envelope).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

#[derive(Deserialize)]
struct VerifyQuery {
    category: Option<String>,
    id: Option<Uuid>,
}

#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    description = "Recomputes the hash chains of one stream (`category` and `id`), a category, or the whole log. \
        One stream is answered at once. A category or the whole log is streamed, so no request timeout cuts it \
        short: as `application/json` the body is white space (a newline per second, valid leading JSON white \
        space) until the report; with `Accept: application/x-ndjson` one `{\"progress\":{\"checked\":..,\"total\":..}}` \
        line per second, then `{\"report\":{..}}`. A database failure after the answer started ends the body with \
        `{\"error\":\"verification failed\"}` instead of the report.",
    params(
        ("category" = Option<String>, Query, pattern = "^(customer|merchant|product|order)$", description = "required with `id`"),
        ("id" = Option<uuid::Uuid>, Query)
    ),
    responses(
        (status = 200, description = "ok, checked and every broken link (streamed for a category or the whole log)",
            content_type = "application/json"),
        AuditErrors,
    ),
    security(("bearer" = []))
)]
async fn verify(
    State(s): State<AuditState>,
    principal: Principal,
    headers: axum::http::HeaderMap,
    Query(q): Query<VerifyQuery>,
) -> Result<Response, Problem> {
    require_auditor(&principal)?;
    let category = match q.category.as_deref() {
        None => None,
        Some(c) => Some(StreamCategory::parse(c).ok_or_else(|| invalid("category", "unknown category"))?),
    };
    if q.id.is_some() && category.is_none() {
        return Err(invalid("category", "required with id"));
    }
    if q.id.is_some() {
        let report = ordo_event_store::verify::verify(s.store.pool(), category, q.id).await.map_err(internal)?;
        return Ok(Json(report).into_response());
    }
    let ndjson = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    // The answer starts only once the database answers: an exhausted pool or a database that is
    // down is a 503 problem, not a 200 whose body ends in an error.
    sqlx::query("SELECT 1").execute(s.store.pool()).await.map_err(internal)?;
    Ok(verify_stream::respond(s.store.pool().clone(), category, ndjson))
}
