//! `GET /v1/products` and `GET /v1/products/{id}`: the public catalog.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use ordo_projectors::Projection;
use ordo_service::{Principal, Problem};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::cache::{self, Cached, ListKey, Table};
use crate::consistency::{self, Outcome};
use crate::params::{page, path_uuid, Params};
use crate::{internal, AppState};

/// An amount in minor units of a currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MoneyView {
    pub amount_minor: i64,
    pub currency: String,
}

/// A product of the catalog with its stock figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProductView {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price: MoneyView,
    pub on_hand: i64,
    pub reserved: i64,
    /// `on_hand - reserved`.
    pub available: i64,
    /// `active` or `discontinued`.
    pub status: String,
    /// The product stream's version this row reflects.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Key {
    n: String,
    id: Uuid,
}

const COLUMNS: &str = "product_id, merchant_id, sku, name, description, price_minor, currency, on_hand, reserved, \
                       status, version, updated_at";

fn view(r: &PgRow) -> Result<ProductView, sqlx::Error> {
    let on_hand: i64 = r.try_get("on_hand")?;
    let reserved: i64 = r.try_get("reserved")?;
    Ok(ProductView {
        id: r.try_get("product_id")?,
        merchant_id: r.try_get("merchant_id")?,
        sku: r.try_get("sku")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        price: MoneyView { amount_minor: r.try_get("price_minor")?, currency: r.try_get("currency")? },
        on_hand,
        reserved,
        available: on_hand - reserved,
        status: r.try_get("status")?,
        version: r.try_get("version")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Escapes `%`, `_` and `\` for a LIKE pattern.
fn like_pattern(q: &str) -> String {
    let escaped: String = q
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}

#[utoipa::path(get, path = "/v1/products", tag = "catalog",
    params(
        ("merchant_id" = Option<Uuid>, Query, description = "only this merchant's products"),
        ("q" = Option<String>, Query, max_length = 200, pattern = r"^[^\x00]*$",
            description = "case-insensitive text in name, sku or description, at most 200 characters"),
        ("in_stock" = Option<bool>, Query, description = "true: available > 0; false: available <= 0"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-f]{2})*$",
            description = "next_cursor of the previous page (opaque: only a cursor this API handed out)"),
        ("consistency_token" = Option<String>, Query, pattern = r"^(customer|merchant|product|order):[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:[1-9][0-9]{0,17}$",
            description = "wait for this write (or header Ordo-Consistency-Token): `<category>:<stream id>:<version>` as a command answered"),
    ),
    responses((status = 200, body = ProductPage), (status = 422, description = "invalid parameter")))]
pub async fn list(
    State(state): State<AppState>,
    _principal: Option<Principal>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    // the first page without parameters is the hot one: it is cached
    let hot = cache::no_parameters(&query, &headers);
    let mut p = Params::from_query(query)?;
    if hot {
        if let Some(hit) = state.cache.list(ListKey::Products) {
            return Ok(hit.page());
        }
    }
    let ticket = state.cache.list_ticket(ListKey::Products);
    let merchant = p.uuid("merchant_id");
    let q = p.text("q", 200);
    let in_stock = p.bool("in_stock");
    let limit = p.limit();
    let after: Option<Key> = p.cursor();
    let token = consistency::token(&p, &headers)?;
    p.finish()?;
    let outcome = wait(&state, token.as_ref()).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM rm_products WHERE ($1::uuid IS NULL OR merchant_id = $1) \
         AND ($2::text IS NULL OR name ILIKE $2 OR sku ILIKE $2 OR description ILIKE $2) \
         AND ($3::bool IS NULL OR (on_hand - reserved > 0) = $3) \
         AND ($4::text IS NULL OR (name, product_id) > ($4, $5)) \
         ORDER BY name, product_id LIMIT $6"
    );
    let rows = sqlx::query(&sql)
        .bind(merchant)
        .bind(q.as_deref().map(like_pattern))
        .bind(in_stock)
        .bind(after.as_ref().map(|k| k.n.clone()))
        .bind(after.as_ref().map(|k| k.id))
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await
        .map_err(internal)?;
    let items = rows.iter().map(view).collect::<Result<Vec<_>, _>>().map_err(internal)?;
    let (items, next_cursor) = page(items, limit, |l| Key { n: l.name.clone(), id: l.id });
    if hot {
        let body = serde_json::to_vec(&ProductPage { items, next_cursor }).map_err(internal)?;
        let entry = Cached { version: 0, body: body.into(), owners: None };
        let resp = entry.page();
        state.cache.fill_list(ListKey::Products, entry, ticket);
        return Ok(resp);
    }
    Ok(consistency::mark(Json(ProductPage { items, next_cursor }).into_response(), outcome))
}

#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "product id"),
        ("consistency_token" = Option<String>, Query, pattern = r"^(customer|merchant|product|order):[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:[1-9][0-9]{0,17}$",
            description = "wait for this write: `<category>:<stream id>:<version>` as a command answered")),
    responses((status = 200, body = ProductView, description = "with ETag"), (status = 304), (status = 404),
        (status = 422, description = "a malformed consistency token")))]
pub async fn one(
    State(state): State<AppState>,
    _principal: Option<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    let id = path_uuid(&id, "id")?;
    let p = Params::from_query(query)?;
    let token = consistency::token(&p, &headers)?;
    // the entry answers when it satisfies the token itself; any other token goes to the database
    if let Some(hit) = state.cache.row(Table::Products, id) {
        if cache::satisfies(Table::Products, id, hit.version, token.as_ref()) {
            return Ok(consistency::mark(hit.response(&headers), token.map(|_| consistency::honoured_from_cache())));
        }
    }
    let ticket = state.cache.row_ticket(Table::Products, id);
    let outcome = wait(&state, token.as_ref()).await?;
    let sql = format!("SELECT {COLUMNS} FROM rm_products WHERE product_id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&state.pool).await.map_err(internal)?;
    let resp = match row {
        Some(r) => {
            let product = view(&r).map_err(internal)?;
            let body = serde_json::to_vec(&product).map_err(internal)?;
            let entry = Cached { version: product.version, body: body.into(), owners: None };
            let resp = entry.response(&headers);
            state.cache.fill_row(Table::Products, id, entry, ticket);
            resp
        }
        None => Problem::not_found("no such product").into_response(),
    };
    Ok(consistency::mark(resp, outcome))
}

async fn wait(state: &AppState, token: Option<&ordo_schemas::ConsistencyToken>) -> Result<Option<Outcome>, Problem> {
    match token {
        Some(t) => consistency::wait(&state.pool, Projection::Catalog, t, state.consistency_wait).await.map(Some),
        None => Ok(None),
    }
}
