//! Integration tests of the query API: a fresh database, the projections fed from the log by
//! the projectors' log follower, and the API served on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod authorization;
mod cache;
mod consistency;
mod conventions;
mod erasure;
mod idp;
mod log_feed;
mod log_stream;
mod operations;
mod pagination;
mod rebuild;
mod security;
mod verify_stream;

use std::time::Duration;

use ordo_event_store::testing::TestDb;
use ordo_projectors::{follow::follow_log, Projector, Target};
use ordo_query_api::cache::QueryCache;
use ordo_query_api::{serve_with_cache, Config};
use ordo_schemas::Role;
use ordo_service::shutdown::Shutdown;
use ordo_service::JwtKeys;
use tokio::net::TcpListener;
use uuid::Uuid;

const SECRET: &str = "query-api-test-secret";

pub struct App {
    pub db: TestDb,
    pub base: String,
    pub http: reqwest::Client,
    /// The server's read cache (its counters).
    pub cache: QueryCache,
    keys: JwtKeys,
    stop: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    pub async fn spawn() -> App {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`App::spawn`], with settings changed by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> App {
        Self::spawn_with_cache(configure, None).await
    }

    /// Like [`App::spawn_with`], serving from `cache` instead of the configured one.
    pub async fn spawn_with_cache(configure: impl FnOnce(&mut Config), cache: Option<QueryCache>) -> App {
        let db = TestDb::new().await;
        ordo_projectors::migrate(&db.pool).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = Shutdown::new();
        let mut config = Config::new(db.url.clone(), SECRET);
        configure(&mut config);
        let cache = cache.unwrap_or_else(|| config.cache());
        let s = stop.clone();
        let c = cache.clone();
        let server = tokio::spawn(async move {
            serve_with_cache(listener, config, c, async move { s.wait().await }).await.unwrap();
        });
        let projector = Projector::new(db.pool.clone(), Target::all_live());
        let s = stop.clone();
        let follower = tokio::spawn(async move {
            follow_log(projector, "query-api-test", 200, Duration::from_millis(5), s).await.unwrap()
        });
        App {
            db,
            base,
            http: reqwest::Client::new(),
            cache,
            keys: JwtKeys::from_secret(SECRET.as_bytes()),
            stop,
            tasks: vec![server, follower],
        }
    }

    pub fn keys_for_test(&self) -> &JwtKeys {
        &self.keys
    }

    pub fn token(&self, role: Role, id: Uuid) -> String {
        self.keys.mint(id, role, chrono::Duration::minutes(10)).unwrap()
    }

    pub fn get(&self, path: &str, who: Option<(Role, Uuid)>) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match who {
            Some((role, id)) => req.bearer_auth(self.token(role, id)),
            None => req,
        }
    }

    pub async fn stop(self) {
        self.stop.trigger();
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

pub fn admin() -> Option<(Role, Uuid)> {
    Some((Role::Admin, Uuid::new_v4()))
}
