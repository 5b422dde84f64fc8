//! Operations over HTTP: dead letters and parked streams (auditors and admins read them), the
//! retry of parked streams (admins only, the equivalent of `ordo retry-parked`), and the log's
//! status: its head, who holds the writer lock, the relay's leader and lag.
//!
//! A retry is audited as log lines at info level carrying the actor's id and role (the request,
//! then each stream's outcome), not as an event: no stream of the domain owns it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ordo_event_store::relay::Relay;
use ordo_event_store::EventStore;
use ordo_projectors::Projection;
use ordo_schemas::{Role, StreamCategory, StreamRef};
use ordo_service::http::Json;
use ordo_service::problem::FieldProblem;
use ordo_service::{Principal, Problem};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::params::{page, Params};
use crate::{internal, AppState};

/// Longest dead-letter payload excerpt answered (bytes, shown as lossy UTF-8).
const PREVIEW_BYTES: usize = 400;

#[derive(Serialize, Deserialize)]
struct DeadLetterKey {
    id: i64,
}

#[utoipa::path(get, path = "/v1/projections/dead-letters", tag = "operations",
    params(
        ("projection" = Option<String>, Query, pattern = "^(orders|catalog|sales)$", description = "orders, catalog or sales"),
        ("open" = Option<bool>, Query, description = "only unresolved ones (default true)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-f]{2})*$",
            description = "next_cursor of the previous page (opaque: only a cursor this API handed out)")
    ),
    responses((status = 200, description = "newest first: `{items: [{id, projection, kind, category, stream_id, \
        version, position, topic, partition, kafka_offset, error, payload_preview, created_at, resolved_at}], next_cursor}`"),
        (status = 401), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn dead_letters(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    principal.require(&[Role::Admin, Role::Auditor])?;
    let mut p = Params::from_query(query)?;
    let projection = projection_param(&mut p);
    let open = p.bool("open").unwrap_or(true);
    let limit = p.limit();
    let after: Option<DeadLetterKey> = p.cursor();
    p.finish()?;
    let rows = sqlx::query(
        "SELECT id, projection, kind, category, stream_id, version, position, topic, partition, kafka_offset, \
                error, substring(payload FROM 1 FOR $4) AS preview, created_at, resolved_at \
         FROM dead_letters WHERE ($1::text IS NULL OR projection = $1) AND (NOT $2 OR resolved_at IS NULL) \
           AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $5",
    )
    .bind(projection.map(Projection::name))
    .bind(open)
    .bind(after.map(|k| k.id))
    .bind(PREVIEW_BYTES as i32)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await
    .map_err(internal)?;
    let items = rows
        .iter()
        .map(|r| {
            let preview: Vec<u8> = r.try_get("preview")?;
            Ok(json!({
                "id": r.try_get::<i64, _>("id")?,
                "projection": r.try_get::<String, _>("projection")?,
                "kind": r.try_get::<String, _>("kind")?,
                "category": r.try_get::<Option<String>, _>("category")?,
                "stream_id": r.try_get::<Option<Uuid>, _>("stream_id")?,
                "version": r.try_get::<Option<i64>, _>("version")?,
                "position": r.try_get::<Option<i64>, _>("position")?,
                "topic": r.try_get::<Option<String>, _>("topic")?,
                "partition": r.try_get::<Option<i32>, _>("partition")?,
                "kafka_offset": r.try_get::<Option<i64>, _>("kafka_offset")?,
                "error": r.try_get::<String, _>("error")?,
                "payload_preview": String::from_utf8_lossy(&preview),
                "created_at": r.try_get::<DateTime<Utc>, _>("created_at")?,
                "resolved_at": r.try_get::<Option<DateTime<Utc>>, _>("resolved_at")?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(internal)?;
    let (items, next_cursor) = page(items, limit, |v| DeadLetterKey { id: v["id"].as_i64().unwrap_or_default() });
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

#[derive(Serialize, Deserialize)]
struct ParkedKey {
    /// `parked_at` in microseconds since the epoch.
    t: i64,
    projection: String,
    category: String,
    id: Uuid,
}

#[utoipa::path(get, path = "/v1/projections/parked", tag = "operations",
    params(
        ("projection" = Option<String>, Query, pattern = "^(orders|catalog|sales)$", description = "orders, catalog or sales"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-f]{2})*$",
            description = "next_cursor of the previous page (opaque: only a cursor this API handed out)")
    ),
    responses((status = 200, description = "oldest first: `{items: [{projection, category, stream_id, reason, \
        dead_letter_id, parked_at}], next_cursor}`"), (status = 401), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn parked(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    principal.require(&[Role::Admin, Role::Auditor])?;
    let mut p = Params::from_query(query)?;
    let projection = projection_param(&mut p);
    let limit = p.limit();
    let after: Option<ParkedKey> = p.cursor();
    let after_time = after.as_ref().map(|k| DateTime::<Utc>::from_timestamp_micros(k.t));
    if matches!(after_time, Some(None)) {
        p.reject("cursor", "is not a cursor this API handed out");
    }
    p.finish()?;
    let rows = sqlx::query(
        "SELECT projection, category, stream_id, reason, dead_letter_id, parked_at FROM parked_streams \
         WHERE ($1::text IS NULL OR projection = $1) \
           AND ($2::timestamptz IS NULL OR (date_trunc('microseconds', parked_at), projection, category, stream_id) \
                > ($2, $3, $4, $5)) \
         ORDER BY date_trunc('microseconds', parked_at), projection, category, stream_id LIMIT $6",
    )
    .bind(projection.map(Projection::name))
    .bind(after_time.flatten())
    .bind(after.as_ref().map(|k| k.projection.clone()))
    .bind(after.as_ref().map(|k| k.category.clone()))
    .bind(after.as_ref().map(|k| k.id))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await
    .map_err(internal)?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(ParkedStream {
                projection: r.try_get("projection")?,
                category: r.try_get("category")?,
                stream_id: r.try_get("stream_id")?,
                reason: r.try_get("reason")?,
                dead_letter_id: r.try_get("dead_letter_id")?,
                parked_at: r.try_get("parked_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(internal)?;
    let (items, next_cursor) = page(items, limit, |s| ParkedKey {
        t: s.parked_at.timestamp_micros(),
        projection: s.projection.clone(),
        category: s.category.clone(),
        id: s.stream_id,
    });
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

#[derive(Serialize)]
struct ParkedStream {
    projection: String,
    category: String,
    stream_id: Uuid,
    reason: String,
    dead_letter_id: Option<i64>,
    parked_at: DateTime<Utc>,
}

fn projection_param(p: &mut Params) -> Option<Projection> {
    let raw = p.raw("projection")?.to_owned();
    let parsed = Projection::parse(&raw);
    if parsed.is_none() {
        p.reject("projection", "must be orders, catalog or sales");
    }
    parsed
}

/// What to retry; everything parked when empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    projection: Option<String>,
    category: Option<String>,
    stream_id: Option<Uuid>,
}

impl utoipa::ToSchema for RetryRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        "RetryParkedRequest".into()
    }
}

/// Only the three fields; `category` and `stream_id` together or not at all.
impl utoipa::PartialSchema for RetryRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use serde_json::Value;
        use utoipa::openapi::schema::{
            AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
        };
        let nullable = || ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]));
        let projection =
            || nullable().enum_values(Some(["orders".into(), "catalog".into(), "sales".into(), Value::Null]));
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let closed = || ObjectBuilder::new().additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let everything =
            closed().property("projection", projection()).property("category", null()).property("stream_id", null());
        let one_stream = closed()
            .property("projection", projection())
            .property(
                "category",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["customer", "merchant", "product", "order"])),
            )
            .property(
                "stream_id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            )
            .required("category")
            .required("stream_id");
        Schema::OneOf(OneOfBuilder::new().item(everything).item(one_stream).build()).into()
    }
}

#[utoipa::path(post, path = "/v1/projections/parked/retry", tag = "operations",
    description = "Re-applies parked streams from the log (as `ordo retry-parked`), admins only. The body \
        `{projection?, category?, stream_id?}` narrows it (category and stream_id together). Each stream that \
        applies again is unparked; one whose event still fails stays parked with the new error. Audited as log \
        lines with the actor's id.",
    request_body(content = RetryRequest, content_type = "application/json", description = "`{projection?, category?, stream_id?}`"),
    responses((status = 200, description = "`{outcomes: [{projection, category, stream_id, unparked, applied, error}], \
        retried, still_parked}`"), (status = 401), (status = 403), (status = 415), (status = 422)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<RetryRequest>,
) -> Result<Response, Problem> {
    principal.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let projection = req.projection.as_deref().and_then(|raw| {
        let p = Projection::parse(raw);
        if p.is_none() {
            errors.push(field("projection", "must be orders, catalog or sales"));
        }
        p
    });
    let category = req.category.as_deref().and_then(|raw| {
        let c = StreamCategory::parse(raw);
        if c.is_none() {
            errors.push(field("category", "must be customer, merchant, product or order"));
        }
        c
    });
    if req.category.is_some() != req.stream_id.is_some() {
        errors.push(field("stream_id", "category and stream_id go together"));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let stream = category.zip(req.stream_id).map(|(c, id)| StreamRef::new(c, id));
    tracing::info!(actor = %principal.id, role = principal.role.as_str(), projection = ?projection.map(Projection::name),
        stream = ?stream.map(|s| s.to_string()), "retry of parked streams requested");
    let outcomes = ordo_projectors::retry_parked(&state.pool, projection, stream).await.map_err(internal)?;
    for o in &outcomes {
        tracing::info!(actor = %principal.id, projection = %o.projection, stream = %o.stream, unparked = o.unparked,
            applied = o.applied, error = o.error.as_deref().unwrap_or(""), "parked stream retried");
    }
    let still_parked = outcomes.iter().filter(|o| !o.unparked).count();
    let outcomes: Vec<_> = outcomes
        .iter()
        .map(|o| {
            json!({"projection": o.projection.name(), "category": o.stream.category.as_str(), "stream_id": o.stream.id,
                "unparked": o.unparked, "applied": o.applied, "error": o.error})
        })
        .collect();
    Ok(Json(json!({ "retried": outcomes.len(), "still_parked": still_parked, "outcomes": outcomes })).into_response())
}

fn field(name: &str, message: &str) -> FieldProblem {
    FieldProblem { field: name.to_owned(), message: message.to_owned() }
}

#[utoipa::path(get, path = "/v1/log/status", tag = "log",
    responses((status = 200, description = "`{head: {cursor, position}, writer_lock: {pid, application_name, \
        state, held_seconds} | null, relay: {name, leader: {pid, client_addr, application_name, since} | null, \
        checkpoint, lag_events, lag_seconds}}`"), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn log_status(State(state): State<AppState>, principal: Principal) -> Result<Response, Problem> {
    principal.require(&[Role::Admin, Role::Auditor])?;
    let store = EventStore::new(state.pool.clone());
    let head = store.head_cursor().await.map_err(internal)?;
    let writer_lock = store.writer_lock_holder().await.map_err(internal)?;
    let checkpoint = store.load_checkpoint(&state.relay_name).await.map_err(internal)?;
    let backlog = store.backlog(checkpoint).await.map_err(internal)?;
    let key = Relay::lock_key(&state.relay_name);
    // The leader holds a session advisory lock on the relay name's key (two 32-bit halves in pg_locks).
    let leader = sqlx::query(
        "SELECT a.pid, host(a.client_addr) AS client_addr, a.application_name, a.backend_start \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.classid = ((($1::bigint >> 32) & 4294967295)::bigint)::oid \
           AND l.objid = (($1::bigint & 4294967295)::bigint)::oid \
         LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&state.pool)
    .await
    .map_err(internal)?;
    let leader = leader
        .map(|r| {
            Ok::<_, sqlx::Error>(json!({
                "pid": r.try_get::<i32, _>("pid")?,
                "client_addr": r.try_get::<Option<String>, _>("client_addr")?,
                "application_name": r.try_get::<Option<String>, _>("application_name")?,
                "since": r.try_get::<Option<DateTime<Utc>>, _>("backend_start")?,
            }))
        })
        .transpose()
        .map_err(internal)?;
    Ok(Json(json!({
        "head": {"cursor": head.to_string(), "position": head.position},
        "writer_lock": writer_lock.map(|h| json!({"pid": h.pid, "application_name": h.application_name,
            "state": h.state, "held_seconds": h.held_seconds})),
        "relay": {"name": state.relay_name, "leader": leader, "checkpoint": checkpoint.to_string(),
            "lag_events": backlog.events, "lag_seconds": backlog.oldest_seconds},
    }))
    .into_response())
}
