//! `GET /v1/orders/{id}` and the per-customer / per-merchant order lists (newest first).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ordo_projectors::Projection;
use ordo_schemas::{OrderStatus, Role};
use ordo_service::{Principal, Problem};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::cache::{self, Cached, ListKey, Table};
use crate::consistency::{self, Outcome};
use crate::params::{page, path_uuid, Params};
use crate::products::MoneyView;
use crate::{internal, AppState};

/// An order as the `orders` projection holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub merchant_id: Uuid,
    /// `pending`, `confirmed`, `rejected`, `paid`, `shipped`, `delivered` or `cancelled`.
    pub status: String,
    /// `[{product_id, sku, name, quantity, unit_price, line_total}]`.
    #[schema(value_type = Vec<Object>)]
    pub lines: Value,
    pub total: MoneyView,
    /// The customer's address for this order; `null` once the customer's personal data was
    /// erased.
    #[schema(value_type = Option<Object>)]
    pub shipping_address: Value,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `{failed_lines, rejected_at}` when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rejection: Option<Value>,
    /// `{amount, payment_reference, paid_at}` once paid; `payment_reference` is `null` once the
    /// customer's personal data was erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payment: Option<Value>,
    /// `{carrier, tracking_number, shipped_at}` once shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub shipment: Option<Value>,
    /// `{reason, cancelled_by, cancelled_at}` when cancelled; `reason` is `null` once the
    /// customer's personal data was erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cancellation: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The order stream's version this row reflects.
    pub version: i64,
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Key {
    /// `placed_at` in microseconds since the epoch.
    t: i64,
    id: Uuid,
}

const COLUMNS: &str = "order_id, customer_id, merchant_id, status, lines, total_minor, currency, shipping_address, \
                       placed_at, updated_at, rejection, payment, shipment, cancellation, delivered_at, version";

fn view(r: &PgRow) -> Result<OrderView, sqlx::Error> {
    Ok(OrderView {
        id: r.try_get("order_id")?,
        customer_id: r.try_get("customer_id")?,
        merchant_id: r.try_get("merchant_id")?,
        status: r.try_get("status")?,
        lines: r.try_get("lines")?,
        total: MoneyView { amount_minor: r.try_get("total_minor")?, currency: r.try_get("currency")? },
        shipping_address: r.try_get("shipping_address")?,
        placed_at: r.try_get("placed_at")?,
        updated_at: r.try_get("updated_at")?,
        rejection: r.try_get("rejection")?,
        payment: r.try_get("payment")?,
        shipment: r.try_get("shipment")?,
        cancellation: r.try_get("cancellation")?,
        delivered_at: r.try_get("delivered_at")?,
        version: r.try_get("version")?,
    })
}

/// The answer with each order's shipping address revealed: the read model keeps the sealed
/// value the log holds, so it reads as `null` as soon as the customer's key is destroyed, cached
/// or not, and after a rebuild too. Also answers whether a sealed value read as `null`.
async fn revealed(state: &AppState, entry: &Cached) -> Result<(Cached, bool), Problem> {
    let (body, erased) = crate::personal::reveal_orders(&state.personal, &entry.body).await?;
    Ok((Cached { body, ..entry.clone() }, erased))
}

/// One order's answer: its ETag is the stream version, marked `-erased` when a personal field
/// reads as `null`, so a client that cached the revealed answer does not get a 304 for it.
async fn answer(state: &AppState, entry: &Cached, headers: &HeaderMap) -> Result<Response, Problem> {
    let (shown, erased) = revealed(state, entry).await?;
    Ok(shown.response_revealed(headers, erased))
}

async fn wait(state: &AppState, p: &Params, headers: &HeaderMap) -> Result<Option<Outcome>, Problem> {
    match consistency::token(p, headers)? {
        Some(t) => consistency::wait(&state.pool, Projection::Orders, &t, state.consistency_wait).await.map(Some),
        None => Ok(None),
    }
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "order id"),
        ("consistency_token" = Option<String>, Query, pattern = r"^(customer|merchant|product|order):[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:[1-9][0-9]{0,17}$",
            description = "wait for this write: `<category>:<stream id>:<version>` as a command answered")),
    responses((status = 200, body = OrderView, description = "with ETag"), (status = 304), (status = 401),
        (status = 403), (status = 404), (status = 422, description = "a malformed consistency token")),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    let id = path_uuid(&id, "id")?;
    let p = Params::from_query(query)?;
    let token = consistency::token(&p, &headers)?;
    // Who may read an order never changes once it is placed, so a reader who may not see it is
    // refused before any consistency wait. An order not in the read model yet is waited for.
    // A cached entry answers when it satisfies the token itself; other tokens go to the database.
    let mut order = match state.cache.row(Table::Orders, id) {
        Some(hit) => {
            if !may_read(&principal, &hit) {
                return Err(Problem::forbidden("this order is not yours"));
            }
            if cache::satisfies(Table::Orders, id, hit.version, token.as_ref()) {
                return Ok(consistency::mark(
                    answer(&state, &hit, &headers).await?,
                    token.map(|_| consistency::honoured_from_cache()),
                ));
            }
            None
        }
        None => {
            let order = fetch_one(&state, id).await?;
            if order.as_ref().is_some_and(|o| !may_read(&principal, o)) {
                return Err(Problem::forbidden("this order is not yours"));
            }
            order
        }
    };
    let mut outcome = None;
    if let Some(t) = token {
        let shown = order.as_ref().is_some_and(|o| cache::satisfies(Table::Orders, id, o.version, Some(&t)));
        outcome = Some(consistency::wait(&state.pool, Projection::Orders, &t, state.consistency_wait).await?);
        if !shown {
            order = fetch_one(&state, id).await?;
        }
    }
    let resp = match order {
        None => Problem::not_found("no such order").into_response(),
        Some(order) if may_read(&principal, &order) => answer(&state, &order, &headers).await?,
        Some(_) => Problem::forbidden("this order is not yours").into_response(),
    };
    Ok(consistency::mark(resp, outcome))
}

/// The order as its JSON body, read from the database; the cache is filled with it.
async fn fetch_one(state: &AppState, id: Uuid) -> Result<Option<Cached>, Problem> {
    let ticket = state.cache.row_ticket(Table::Orders, id);
    let sql = format!("SELECT {COLUMNS} FROM rm_orders WHERE order_id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&state.pool).await.map_err(internal)?;
    let Some(order) = row.map(|r| view(&r)).transpose().map_err(internal)? else { return Ok(None) };
    let body = serde_json::to_vec(&order).map_err(internal)?;
    let entry =
        Cached { version: order.version, body: body.into(), owners: Some((order.customer_id, order.merchant_id)) };
    state.cache.fill_row(Table::Orders, id, entry.clone(), ticket);
    Ok(Some(entry))
}

fn may_read(principal: &Principal, order: &Cached) -> bool {
    let Some((customer, merchant)) = order.owners else { return false };
    match principal.role {
        Role::Admin | Role::Auditor => true,
        Role::Customer => customer == principal.id,
        Role::Merchant => merchant == principal.id,
        Role::System => false,
    }
}

#[derive(Clone, Copy)]
enum Owner {
    Customer,
    Merchant,
}

#[utoipa::path(get, path = "/v1/customers/{id}/orders", tag = "orders",
    params(("id" = Uuid, Path, description = "customer id"),
        ("status" = Option<String>, Query, pattern = "^(pending|confirmed|rejected|paid|shipped|delivered|cancelled)$",
            description = "only orders in this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-f]{2})*$",
            description = "next_cursor of the previous page (opaque: only a cursor this API handed out)"),
        ("consistency_token" = Option<String>, Query, pattern = r"^(customer|merchant|product|order):[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:[1-9][0-9]{0,17}$",
            description = "wait for this write: `<category>:<stream id>:<version>` as a command answered")),
    responses((status = 200, body = OrderPage), (status = 401), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn by_customer(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    list(state, principal, id, headers, query, Owner::Customer).await
}

#[utoipa::path(get, path = "/v1/merchants/{id}/orders", tag = "orders",
    params(("id" = Uuid, Path, description = "merchant id"),
        ("status" = Option<String>, Query, pattern = "^(pending|confirmed|rejected|paid|shipped|delivered|cancelled)$",
            description = "only orders in this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-f]{2})*$",
            description = "next_cursor of the previous page (opaque: only a cursor this API handed out)"),
        ("consistency_token" = Option<String>, Query, pattern = r"^(customer|merchant|product|order):[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:[1-9][0-9]{0,17}$",
            description = "wait for this write: `<category>:<stream id>:<version>` as a command answered")),
    responses((status = 200, body = OrderPage), (status = 401), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn by_merchant(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    list(state, principal, id, headers, query, Owner::Merchant).await
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    owner: Owner,
) -> Result<Response, Problem> {
    let id = path_uuid(&id, "id")?;
    let (role, column, key) = match owner {
        Owner::Customer => (Role::Customer, "customer_id", ListKey::Customer(id)),
        Owner::Merchant => (Role::Merchant, "merchant_id", ListKey::Merchant(id)),
    };
    if !(principal.is_admin() || (principal.role == role && principal.id == id)) {
        return Err(Problem::forbidden("only the owner or an admin may list these orders"));
    }
    // the first page without parameters is the hot one: it is cached
    let hot = cache::no_parameters(&query, &headers);
    if hot {
        if let Some(hit) = state.cache.list(key) {
            return Ok(revealed(&state, &hit).await?.0.page());
        }
    }
    let ticket = state.cache.list_ticket(key);
    let mut p = Params::from_query(query)?;
    let status = match p.raw("status").map(str::to_owned) {
        Some(s) => match OrderStatus::parse(&s) {
            Some(st) => Some(st.as_str()),
            None => {
                p.reject("status", "must be one of pending, confirmed, rejected, paid, shipped, delivered, cancelled");
                None
            }
        },
        None => None,
    };
    let limit = p.limit();
    let after: Option<Key> = p.cursor();
    let after_time = match after.as_ref().map(|k| DateTime::<Utc>::from_timestamp_micros(k.t)) {
        Some(None) => {
            p.reject("cursor", "is not a cursor this API handed out");
            None
        }
        Some(Some(t)) => Some(t),
        None => None,
    };
    let _ = consistency::token(&p, &headers)?;
    p.finish()?;
    let outcome = wait(&state, &p, &headers).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM rm_orders WHERE {column} = $1 AND ($2::text IS NULL OR status = $2) \
         AND ($3::timestamptz IS NULL OR (placed_at, order_id) < ($3, $4)) \
         ORDER BY placed_at DESC, order_id DESC LIMIT $5"
    );
    let rows = sqlx::query(&sql)
        .bind(id)
        .bind(status)
        .bind(after_time)
        .bind(after.as_ref().map(|k| k.id))
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await
        .map_err(internal)?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>().map_err(internal)?;
    let (items, next_cursor) = page(items, limit, |l| Key { t: l.placed_at.timestamp_micros(), id: l.id });
    if hot {
        let body = serde_json::to_vec(&OrderPage { items, next_cursor }).map_err(internal)?;
        let entry = Cached { version: 0, body: body.into(), owners: None };
        let resp = revealed(&state, &entry).await?.0.page();
        state.cache.fill_list(key, entry, ticket);
        return Ok(resp);
    }
    let body = serde_json::to_vec(&OrderPage { items, next_cursor }).map_err(internal)?;
    let entry = Cached { version: 0, body: body.into(), owners: None };
    Ok(consistency::mark(revealed(&state, &entry).await?.0.page(), outcome))
}
