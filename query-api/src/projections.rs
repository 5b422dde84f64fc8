//! `GET /v1/projections` (admins and auditors): checkpoint, lag, dead letters, parked streams, status.

use axum::extract::State;
use axum::Json;
use ordo_schemas::Role;
use ordo_service::{Principal, Problem};
use serde_json::{json, Value};

use crate::{internal, AppState};

#[utoipa::path(get, path = "/v1/projections", tag = "operations",
    responses((status = 200, description = "`{\"projections\": [{name, status, events_applied, last_position, \
        last_recorded_at, last_applied_at, lag_events, lag_seconds, dead_letters, parked_streams, rebuilding_since, \
        rebuilt_at, offsets}]}`"), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    principal.require(&[Role::Admin, Role::Auditor])?;
    let status = ordo_projectors::projection_status(&state.pool).await.map_err(internal)?;
    Ok(Json(json!({ "projections": status })))
}
