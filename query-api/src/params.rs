//! Query-string parsing with problem+json answers, opaque keyset cursors, ETags.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ordo_service::problem::{FieldProblem, Problem};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// The query string as name -> value; repeated names keep the last value.
pub struct Params {
    values: HashMap<String, String>,
    pub errors: Vec<FieldProblem>,
}

impl Params {
    /// Parses the raw query; a malformed query string is a 400.
    pub fn from_query(q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Self, Problem> {
        let Query(pairs) = q.map_err(|e| Problem::bad_request(format!("malformed query string: {e}")))?;
        // Postgres text cannot hold U+0000: refuse it here instead of failing the query (500)
        if pairs.iter().any(|(_, v)| v.contains('\0')) {
            return Err(Problem::bad_request("query parameters must not contain NUL characters"));
        }
        Ok(Self { values: pairs.into_iter().collect(), errors: Vec::new() })
    }

    /// The parameter's value; an empty value is a value (and most parsers refuse it), not an absence.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn invalid(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldProblem { field: field.to_owned(), message: message.into() });
    }

    pub fn uuid(&mut self, name: &str) -> Option<Uuid> {
        let raw = self.raw(name)?.to_owned();
        match Uuid::parse_str(&raw) {
            Ok(id) => Some(id),
            Err(_) => {
                self.invalid(name, "must be a UUID");
                None
            }
        }
    }

    pub fn bool(&mut self, name: &str) -> Option<bool> {
        match self.raw(name)? {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => {
                self.invalid(name, "must be true or false");
                None
            }
        }
    }

    pub fn date(&mut self, name: &str) -> Option<chrono::NaiveDate> {
        let raw = self.raw(name)?.to_owned();
        match chrono::NaiveDate::parse_from_str(&raw, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                self.invalid(name, "must be a date YYYY-MM-DD");
                None
            }
        }
    }

    /// `limit`: 1 to 500, default 50.
    pub fn limit(&mut self) -> i64 {
        let Some(raw) = self.raw("limit").map(str::to_owned) else { return DEFAULT_LIMIT };
        match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                self.invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        }
    }

    pub fn text(&mut self, name: &str, max: usize) -> Option<String> {
        let raw = self.raw(name)?.to_owned();
        if raw.chars().count() > max {
            self.invalid(name, format!("must be at most {max} characters"));
            return None;
        }
        Some(raw)
    }

    /// `cursor`: the opaque key a previous page handed out.
    pub fn cursor<K: DeserializeOwned>(&mut self) -> Option<K> {
        let raw = self.raw("cursor")?.to_owned();
        match decode_cursor(&raw) {
            Some(k) => Some(k),
            None => {
                self.invalid("cursor", "is not a cursor this API handed out");
                None
            }
        }
    }

    /// Adds an error for `field`.
    pub fn reject(&mut self, field: &str, message: &str) {
        self.invalid(field, message);
    }

    /// 422 with every offending field, if any.
    pub fn finish(&mut self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(std::mem::take(&mut self.errors)))
        }
    }
}

/// A path id; anything but a UUID is 400 `invalid_path` naming the field (as on the command API).
pub fn path_uuid(raw: &str, field: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::invalid_path(field))
}

/// Hex of the JSON sort key: opaque to clients, trivially checked on the way back.
pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    hex::encode(serde_json::to_vec(key).unwrap_or_default())
}

pub fn decode_cursor<K: DeserializeOwned>(raw: &str) -> Option<K> {
    let bytes = hex::decode(raw).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Cuts a page fetched with `limit + 1` rows to `limit`; the extra row, when there was one, says
/// another page exists, and `key` of the last kept row is its cursor.
pub fn page<T, K: Serialize>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(|last| encode_cursor(&key(last)));
    (items, next)
}

/// `ETag: "<version>"`, or 304 when `If-None-Match` names it.
pub fn etag_response(headers: &HeaderMap, version: i64, body: Response) -> Response {
    tagged_response(headers, format!("\"{version}\""), body)
}

/// `ETag: <tag>` (a quoted entity tag), or 304 when `If-None-Match` names it.
pub fn tagged_response(headers: &HeaderMap, tag: String, body: Response) -> Response {
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*");
    let mut resp = if matches { StatusCode::NOT_MODIFIED.into_response() } else { body };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn a_page_keeps_limit_rows_and_names_the_last_as_cursor_only_when_more_exist() {
        assert_eq!(page(vec![1, 2, 3], 3, |n| *n), (vec![1, 2, 3], None));
        let (items, next) = page(vec![1, 2, 3, 4], 3, |n| *n);
        assert_eq!(items, vec![1, 2, 3]);
        assert_eq!(next.as_deref().and_then(decode_cursor::<i32>), Some(3));
    }
}
