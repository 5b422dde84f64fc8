//! The identity provider's signing keys, fetched from its JWKS URL and cached.
//!
//! - Keys are looked up by `kid`. RSA keys verify RS256 only and P-256 keys ES256 only; a key
//!   whose `alg` names another algorithm, or whose `use` is not `sig`, is skipped.
//! - The set is fetched on first use, again when it is older than the cache lifetime, and again
//!   when a token names a `kid` the cache does not hold (the provider rotated its keys). Fetches
//!   are serialised and at most one starts per `min_refresh`, so a flood of tokens with made-up
//!   `kid`s costs the provider at most one request per interval.
//! - A failed fetch keeps the keys already held; the response body is bounded.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

/// Largest JWKS document accepted.
const MAX_BODY: usize = 256 * 1024;

/// A verification key and the one algorithm it verifies.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub key: DecodingKey,
    pub alg: Algorithm,
}

/// Why a key was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No key with this `kid` (after a refresh, when one was allowed).
    Unknown,
    /// The key set could not be fetched and no key is held for this `kid`.
    Unavailable,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, VerifyingKey>,
    fetched: Option<Instant>,
}

/// The cached key set of one JWKS URL.
pub(crate) struct RemoteKeys {
    url: String,
    client: reqwest::Client,
    lifetime: Duration,
    min_refresh: Duration,
    cache: RwLock<Cached>,
    /// When the last fetch started; held while fetching, so fetches never overlap.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl RemoteKeys {
    pub(crate) fn new(url: String, lifetime: Duration, min_refresh: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            url,
            client,
            lifetime,
            min_refresh,
            cache: RwLock::new(Cached::default()),
            last_attempt: tokio::sync::Mutex::new(None),
        })
    }

    /// The key for `kid` among the keys held now, without fetching.
    pub(crate) fn cached(&self, kid: Option<&str>, alg: Algorithm) -> Option<VerifyingKey> {
        let cache = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        find(&cache.keys, kid, alg)
    }

    /// The key for `kid`, refreshing the set when it is stale or lacks `kid` (rate-limited).
    pub(crate) async fn get(&self, kid: Option<&str>, alg: Algorithm) -> Result<VerifyingKey, Lookup> {
        let (found, stale) = {
            let cache = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let stale = cache.fetched.is_none_or(|t| t.elapsed() >= self.lifetime);
            (find(&cache.keys, kid, alg), stale)
        };
        let fetched = match found {
            Some(key) if !stale => return Ok(key),
            // A stale key still verifies while the set is refreshed, by this request or another.
            Some(key) => {
                if let Ok(last) = self.last_attempt.try_lock() {
                    let _ = self.refresh_locked(last).await;
                }
                return Ok(self.cached(kid, alg).unwrap_or(key));
            }
            None => self.refresh_locked(self.last_attempt.lock().await).await,
        };
        let cache = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match find(&cache.keys, kid, alg) {
            Some(key) => Ok(key),
            None if fetched.is_err() && cache.fetched.is_none() => Err(Lookup::Unavailable),
            None => Err(Lookup::Unknown),
        }
    }

    /// Fetches the set unless a fetch started less than `min_refresh` ago; `last` is the held
    /// fetch lock, so a request that waited for another's fetch does not fetch again.
    async fn refresh_locked(&self, mut last: tokio::sync::MutexGuard<'_, Option<Instant>>) -> Result<(), ()> {
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Ok(());
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "jwks fetched");
                let mut cache = self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                *cache = Cached { keys, fetched: Some(Instant::now()) };
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "jwks fetch failed, keeping the keys held");
                Err(())
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let mut response = self.client.get(&self.url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("key set larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a key set: {e}"))?;
        Ok(usable_keys(&set))
    }
}

/// The keys of `set` Ordo can verify with, by `kid` (keys without one are kept under "").
pub(crate) fn usable_keys(set: &JwkSet) -> HashMap<String, VerifyingKey> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if let Some(key) = verifying_key(jwk) {
            keys.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
        }
    }
    keys
}

fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let declared_ok = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !declared_ok {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok().map(|key| VerifyingKey { key, alg })
}

/// The key named `kid` when it verifies `alg`; without a `kid`, the only key that does.
fn find(keys: &HashMap<String, VerifyingKey>, kid: Option<&str>, alg: Algorithm) -> Option<VerifyingKey> {
    match kid {
        Some(kid) => keys.get(kid).filter(|k| k.alg == alg).cloned(),
        None => {
            let mut matching = keys.values().filter(|k| k.alg == alg);
            match (matching.next(), matching.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}
