//! `GET /v1/merchants/{id}/sales?from=&to=`: paid orders per UTC day with revenue per currency.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Days, NaiveDate, Utc};
use ordo_projectors::Projection;
use ordo_service::{Principal, Problem};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::consistency;
use crate::params::{path_uuid, Params};
use crate::products::MoneyView;
use crate::{internal, AppState};

/// Longest range one request may ask for.
const MAX_DAYS: u64 = 366;

/// One UTC day of a merchant's sales.
#[derive(Debug, Serialize, ToSchema)]
pub struct SalesDay {
    pub date: NaiveDate,
    /// Orders paid that day (all currencies).
    pub orders: i64,
    /// Revenue per currency.
    pub revenue: Vec<MoneyView>,
}

/// Daily sales of one merchant; days without sales are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sales {
    pub merchant_id: Uuid,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: Vec<SalesDay>,
}

#[utoipa::path(get, path = "/v1/merchants/{id}/sales", tag = "sales",
    params(("id" = Uuid, Path, description = "merchant id"),
        ("from" = Option<String>, Query, format = Date, description = "first day, YYYY-MM-DD (default: 30 days before `to`)"),
        ("to" = Option<String>, Query, format = Date, description = "last day, YYYY-MM-DD (default: today, UTC)"),
        ("consistency_token" = Option<String>, Query, pattern = r"^(customer|merchant|product|order):[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:[1-9][0-9]{0,17}$",
            description = "wait for this write: `<category>:<stream id>:<version>` as a command answered")),
    responses((status = 200, body = Sales), (status = 401), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn daily(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    let id = path_uuid(&id, "id")?;
    if !(principal.is_admin() || (principal.role == ordo_schemas::Role::Merchant && principal.id == id)) {
        return Err(Problem::forbidden("only the merchant or an admin may see these sales"));
    }
    let mut p = Params::from_query(query)?;
    let to = p.date("to").unwrap_or_else(|| Utc::now().date_naive());
    let from = p.date("from").unwrap_or_else(|| to.checked_sub_days(Days::new(30)).unwrap_or(to));
    if from > to {
        p.reject("from", "must not be after to");
    } else if to.signed_duration_since(from).num_days() >= MAX_DAYS as i64 {
        p.reject("to", "the range may span at most 366 days");
    }
    let token = consistency::token(&p, &headers)?;
    p.finish()?;
    let outcome = match token {
        Some(t) => Some(consistency::wait(&state.pool, Projection::Sales, &t, state.consistency_wait).await?),
        None => None,
    };
    let rows = sqlx::query(
        "SELECT day, currency, orders, revenue_minor FROM rm_merchant_daily_sales \
         WHERE merchant_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day, currency",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_all(&state.pool)
    .await
    .map_err(internal)?;
    let mut days: BTreeMap<NaiveDate, SalesDay> = BTreeMap::new();
    for r in rows {
        let date: NaiveDate = r.try_get("day").map_err(internal)?;
        let day = days.entry(date).or_insert_with(|| SalesDay { date, orders: 0, revenue: Vec::new() });
        day.orders += r.try_get::<i64, _>("orders").map_err(internal)?;
        day.revenue.push(MoneyView {
            amount_minor: r.try_get("revenue_minor").map_err(internal)?,
            currency: r.try_get("currency").map_err(internal)?,
        });
    }
    let body = Sales { merchant_id: id, from, to, days: days.into_values().collect() };
    Ok(consistency::mark(Json(body).into_response(), outcome))
}
