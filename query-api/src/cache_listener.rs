//! Keeps the [`QueryCache`] fresh: listens on the projectors' channel (one notification per
//! committed batch, naming the rows it touched) and drops those entries. A lost connection
//! suspends the cache; once listening again it clears everything, since notifications sent in
//! between are gone, and serves again.

use std::time::Duration;

use ordo_projectors::batch::READ_MODEL_CHANNEL;
use ordo_projectors::Projection;
use ordo_service::shutdown::Shutdown;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::{QueryCache, Table};

/// Wait before connecting again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Runs until `stop` triggers.
pub async fn listen(cache: QueryCache, pool: PgPool, stop: Shutdown) {
    if !cache.is_enabled() {
        return;
    }
    loop {
        tokio::select! {
            () = stop.wait() => return,
            () = session(&cache, &pool) => {}
        }
        cache.suspend();
        tokio::select! {
            () = stop.wait() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One connection: connects, listens, clears and serves, then applies notifications until the
/// connection fails.
async fn session(cache: &QueryCache, pool: &PgPool) {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(error) => {
            tracing::warn!(%error, "cache listener cannot connect");
            return;
        }
    };
    // a lost connection ends the session instead of reconnecting inside the listener, so the
    // cache knows it missed notifications
    listener.eager_reconnect(false);
    if let Err(error) = listener.listen(READ_MODEL_CHANNEL).await {
        tracing::warn!(%error, "cache listener cannot listen");
        return;
    }
    cache.resume();
    tracing::info!(channel = READ_MODEL_CHANNEL, "cache listener listening");
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => apply(cache, n.payload()),
            Ok(None) => {
                tracing::warn!("cache listener lost its connection, cache cleared");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cache listener failed, cache cleared");
                return;
            }
        }
    }
}

/// Applies one payload `{"<projection>": [ids] | "*"}`; anything unreadable drops everything.
pub fn apply(cache: &QueryCache, payload: &str) {
    let Ok(Value::Object(touched)) = serde_json::from_str::<Value>(payload) else {
        tracing::warn!(bytes = payload.len(), "unreadable read-model notification, cache cleared");
        cache.invalidate(Table::Products, None);
        cache.invalidate(Table::Orders, None);
        return;
    };
    for (name, ids) in &touched {
        let table = match Projection::parse(name) {
            Some(Projection::Catalog) => Table::Products,
            Some(Projection::Orders) => Table::Orders,
            _ => continue,
        };
        let ids: Option<Vec<Uuid>> = ids
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).filter_map(|s| Uuid::parse_str(s).ok()).collect());
        cache.invalidate(table, ids.as_deref());
    }
}
