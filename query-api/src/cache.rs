//! The read cache: single rows (products, orders) and the first pages of hot lists, kept as the
//! JSON bodies the API answers with, bounded in bytes.
//!
//! Freshness: each projector batch notifies, in its transaction, the rows it touched
//! ([`crate::cache_listener`]); the listener drops those entries. A fill races with that
//! invalidation, so a fill carries the *ticket* (the generation of its key's shard) taken before
//! its database read, and is kept only when no notification for that shard arrived in between.
//! While the listener is not connected nothing is served or filled, and every (re)connection
//! clears the cache: notifications sent while it was away are lost.
//!
//! Consistency tokens: an entry answers a token only when it is the token's own stream at or past
//! its version (or a stream its projection does not read); any other token goes to the database.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use moka::sync::Cache;
use ordo_projectors::Projection;
use ordo_schemas::ConsistencyToken;
use uuid::Uuid;

use crate::params::{etag_response, tagged_response};

/// Shards of the generation counters per table.
const SHARDS: usize = 64;

/// A cached answer: the JSON body, the version its ETag names and, for an order, who may read it.
#[derive(Debug, Clone)]
pub struct Cached {
    pub version: i64,
    pub body: Bytes,
    /// `(customer, merchant)` of an order.
    pub owners: Option<(Uuid, Uuid)>,
}

impl Cached {
    /// The 200 (or 304 when `If-None-Match` names the version) this entry answers.
    pub fn response(&self, headers: &HeaderMap) -> Response {
        etag_response(headers, self.version, self.page())
    }

    /// As [`Cached::response`], with the ETag marked `-erased` when `erased`: an answer in which
    /// a sealed personal field reads as `null` because its key was destroyed differs from the
    /// one a client cached while it was revealed, at the same stream version.
    pub fn response_revealed(&self, headers: &HeaderMap, erased: bool) -> Response {
        if !erased {
            return self.response(headers);
        }
        tagged_response(headers, format!("\"{}-erased\"", self.version), self.page())
    }

    /// The body as a 200 without an ETag (list pages).
    pub fn page(&self) -> Response {
        let mut resp = self.body.clone().into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }

    fn weight(&self) -> u32 {
        u32::try_from(self.body.len() + 96).unwrap_or(u32::MAX)
    }
}

/// A cached first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKey {
    /// `GET /v1/products` without parameters.
    Products,
    Customer(Uuid),
    Merchant(Uuid),
}

/// Which table a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Products,
    Orders,
}

impl Table {
    fn index(self) -> usize {
        match self {
            Table::Products => 0,
            Table::Orders => 1,
        }
    }

    pub fn projection(self) -> Projection {
        match self {
            Table::Products => Projection::Catalog,
            Table::Orders => Projection::Orders,
        }
    }
}

/// The generation a fill read at, to be compared when it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Counters of the cache, for tests and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries (rows and pages) held, after pending evictions ran.
    pub entries: u64,
    /// Bytes held (bodies and a fixed overhead per entry).
    pub bytes: u64,
    /// Times the whole cache was cleared because the listener (re)connected.
    pub resets: u64,
    /// Whether the listener is connected (and the cache serving).
    pub live: bool,
}

/// The cache shared by every handler (cheap to clone). A cache built with
/// [`QueryCache::disabled`] never serves and never fills.
#[derive(Clone)]
pub struct QueryCache(Option<Arc<Inner>>);

struct Inner {
    rows: [Cache<Uuid, Arc<Cached>>; 2],
    lists: Cache<ListKey, Arc<Cached>>,
    /// Per table, per shard of ids, bumped by each notification naming an id of the shard.
    row_gens: [[AtomicU64; SHARDS]; 2],
    /// Per table, bumped by each notification of the table (lists depend on every row).
    list_gens: [AtomicU64; 2],
    live: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    resets: AtomicU64,
}

fn shard(id: Uuid) -> usize {
    (id.as_u128() % SHARDS as u128) as usize
}

fn weigh<K>(_: &K, v: &Arc<Cached>) -> u32 {
    v.weight()
}

impl QueryCache {
    /// A cache of at most `bytes` (split between products, orders and list pages); 0 disables it.
    pub fn new(bytes: u64) -> Self {
        if bytes == 0 {
            return Self::disabled();
        }
        let part = (bytes / 3).max(1);
        let rows = || Cache::builder().max_capacity(part).weigher(weigh::<Uuid>).build();
        Self(Some(Arc::new(Inner {
            rows: [rows(), rows()],
            lists: Cache::builder().max_capacity(part).weigher(weigh::<ListKey>).build(),
            row_gens: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            list_gens: std::array::from_fn(|_| AtomicU64::new(0)),
            live: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        })))
    }

    pub fn disabled() -> Self {
        Self(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    fn serving(&self) -> Option<&Inner> {
        self.0.as_deref().filter(|i| i.live.load(Ordering::SeqCst))
    }

    /// The cached row `id` of `table`, counted as a hit or a miss.
    pub fn row(&self, table: Table, id: Uuid) -> Option<Arc<Cached>> {
        let inner = self.serving()?;
        inner.count(inner.rows[table.index()].get(&id))
    }

    /// The cached first page `key`, counted as a hit or a miss.
    pub fn list(&self, key: ListKey) -> Option<Arc<Cached>> {
        let inner = self.serving()?;
        inner.count(inner.lists.get(&key))
    }

    /// Taken before the database read whose result [`QueryCache::fill_row`] stores.
    pub fn row_ticket(&self, table: Table, id: Uuid) -> Ticket {
        Ticket(self.0.as_ref().map_or(0, |i| i.row_gens[table.index()][shard(id)].load(Ordering::SeqCst)))
    }

    pub fn list_ticket(&self, key: ListKey) -> Ticket {
        Ticket(self.0.as_ref().map_or(0, |i| i.list_gens[list_table(key).index()].load(Ordering::SeqCst)))
    }

    /// Stores a row read from the database after `ticket` was taken, unless a notification for
    /// its shard came in meanwhile or a newer version is already held.
    pub fn fill_row(&self, table: Table, id: Uuid, entry: Cached, ticket: Ticket) {
        let Some(inner) = self.serving() else { return };
        let rows = &inner.rows[table.index()];
        let gen = || inner.row_gens[table.index()][shard(id)].load(Ordering::SeqCst);
        if gen() != ticket.0 || rows.get(&id).is_some_and(|held| held.version > entry.version) {
            return;
        }
        rows.insert(id, Arc::new(entry));
        // a notification that arrived between the check and the insert may have missed the entry
        if gen() != ticket.0 {
            rows.invalidate(&id);
        }
        inner.gauge();
    }

    pub fn fill_list(&self, key: ListKey, entry: Cached, ticket: Ticket) {
        let Some(inner) = self.serving() else { return };
        let gen = || inner.list_gens[list_table(key).index()].load(Ordering::SeqCst);
        if gen() != ticket.0 {
            return;
        }
        inner.lists.insert(key, Arc::new(entry));
        if gen() != ticket.0 {
            inner.lists.invalidate(&key);
        }
        inner.gauge();
    }

    /// Drops rows `ids` of `table` (all of them when `None`) and the table's list pages.
    pub fn invalidate(&self, table: Table, ids: Option<&[Uuid]>) {
        let Some(inner) = self.0.as_deref() else { return };
        let t = table.index();
        inner.list_gens[t].fetch_add(1, Ordering::SeqCst);
        match ids {
            Some(ids) => {
                for id in ids {
                    inner.row_gens[t][shard(*id)].fetch_add(1, Ordering::SeqCst);
                    inner.rows[t].invalidate(id);
                }
            }
            None => {
                inner.row_gens[t].iter().for_each(|g| {
                    g.fetch_add(1, Ordering::SeqCst);
                });
                inner.rows[t].invalidate_all();
            }
        }
        match table {
            Table::Products => inner.lists.invalidate(&ListKey::Products),
            // per-owner pages cannot be found from an order id: drop every page (few and cheap)
            Table::Orders => {
                inner.lists.invalidate_all();
                inner.list_gens.iter().for_each(|g| {
                    g.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
    }

    /// The listener lost its connection: stop serving and filling until it is back.
    pub fn suspend(&self) {
        let Some(inner) = self.0.as_deref() else { return };
        inner.live.store(false, Ordering::SeqCst);
        self.invalidate(Table::Products, None);
        self.invalidate(Table::Orders, None);
    }

    /// The listener is (re)connected and listening: everything cached before may have missed a
    /// notification, so all of it goes, then the cache serves again.
    pub fn resume(&self) {
        let Some(inner) = self.0.as_deref() else { return };
        self.invalidate(Table::Products, None);
        self.invalidate(Table::Orders, None);
        inner.resets.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("ordo_query_cache_resets_total").increment(1);
        inner.live.store(true, Ordering::SeqCst);
        inner.gauge();
    }

    pub fn stats(&self) -> Option<CacheStats> {
        let inner = self.0.as_deref()?;
        inner.rows.iter().for_each(Cache::run_pending_tasks);
        inner.lists.run_pending_tasks();
        let entries = inner.rows.iter().map(Cache::entry_count).sum::<u64>() + inner.lists.entry_count();
        let bytes = inner.rows.iter().map(Cache::weighted_size).sum::<u64>() + inner.lists.weighted_size();
        Some(CacheStats {
            hits: inner.hits.load(Ordering::SeqCst),
            misses: inner.misses.load(Ordering::SeqCst),
            entries,
            bytes,
            resets: inner.resets.load(Ordering::SeqCst),
            live: inner.live.load(Ordering::SeqCst),
        })
    }
}

fn list_table(key: ListKey) -> Table {
    match key {
        ListKey::Products => Table::Products,
        ListKey::Customer(_) | ListKey::Merchant(_) => Table::Orders,
    }
}

impl Inner {
    fn count(&self, found: Option<Arc<Cached>>) -> Option<Arc<Cached>> {
        let (counter, result) = if found.is_some() { (&self.hits, "hit") } else { (&self.misses, "miss") };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ordo_query_cache_total", "result" => result).increment(1);
        found
    }

    fn gauge(&self) {
        let entries = self.rows.iter().map(Cache::entry_count).sum::<u64>() + self.lists.entry_count();
        let bytes = self.rows.iter().map(Cache::weighted_size).sum::<u64>() + self.lists.weighted_size();
        metrics::gauge!("ordo_query_cache_entries").set(entries as f64);
        metrics::gauge!("ordo_query_cache_bytes").set(bytes as f64);
    }
}

/// Whether an entry at `version` of stream `id` (read by `table`'s projection) satisfies `token`.
pub fn satisfies(table: Table, id: Uuid, version: i64, token: Option<&ConsistencyToken>) -> bool {
    let Some(t) = token else { return true };
    if !table.projection().reads(t.stream.category) {
        return true;
    }
    t.stream.id == id && t.stream.category == table.projection_category() && version >= t.version
}

/// A request without query parameters or a token header: a first page worth caching.
pub fn no_parameters(
    query: &Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> bool {
    matches!(query, Ok(q) if q.0.is_empty()) && !headers.contains_key(&crate::consistency::TOKEN_HEADER)
}

impl Table {
    fn projection_category(self) -> ordo_schemas::StreamCategory {
        match self {
            Table::Products => ordo_schemas::StreamCategory::Product,
            Table::Orders => ordo_schemas::StreamCategory::Order,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ordo_schemas::{StreamCategory, StreamRef};

    fn entry(version: i64) -> Cached {
        Cached { version, body: Bytes::from_static(b"{}"), owners: None }
    }

    #[test]
    fn a_fill_that_raced_a_notification_is_not_kept_and_an_older_version_never_replaces_a_newer() {
        let cache = QueryCache::new(1 << 20);
        cache.resume();
        let id = Uuid::new_v4();
        let ticket = cache.row_ticket(Table::Products, id);
        cache.invalidate(Table::Products, Some(&[id]));
        cache.fill_row(Table::Products, id, entry(1), ticket);
        assert!(cache.row(Table::Products, id).is_none());
        cache.fill_row(Table::Products, id, entry(3), cache.row_ticket(Table::Products, id));
        cache.fill_row(Table::Products, id, entry(2), cache.row_ticket(Table::Products, id));
        assert_eq!(cache.row(Table::Products, id).unwrap().version, 3);
        cache.suspend();
        assert!(cache.row(Table::Products, id).is_none(), "a suspended cache serves nothing");
    }

    #[test]
    fn only_the_tokens_own_stream_at_or_below_the_entry_is_satisfied_by_it() {
        let id = Uuid::new_v4();
        let token = |c, s, v| ConsistencyToken::new(StreamRef::new(c, s), v);
        assert!(satisfies(Table::Orders, id, 3, None));
        assert!(satisfies(Table::Orders, id, 3, Some(&token(StreamCategory::Order, id, 3))));
        assert!(!satisfies(Table::Orders, id, 3, Some(&token(StreamCategory::Order, id, 4))));
        assert!(!satisfies(Table::Orders, id, 3, Some(&token(StreamCategory::Order, Uuid::new_v4(), 1))));
        assert!(satisfies(Table::Products, id, 3, Some(&token(StreamCategory::Customer, Uuid::new_v4(), 9))));
    }
}
