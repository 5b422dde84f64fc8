//! The event signing key: the relay signs every message it publishes (HMAC-SHA256 of the message
//! value, hex, in the `ordo-signature` header) and the projectors apply only messages whose
//! signature verifies, so a well-formed message written to a topic by anyone else is
//! dead-lettered instead of changing a read model (ADR 0022).
//!
//! The key comes from `ORDO_EVENT_SIGNING_KEY` (at least 32 bytes; every relay and projector must
//! be given the same one) or, when that is unset, from the one-row table `event_signing_key`,
//! created with a random key by whichever process needs it first. The key is never logged.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use crate::error::StoreError;

/// The environment variable that gives the key.
pub const KEY_VAR: &str = "ORDO_EVENT_SIGNING_KEY";

/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A key that signs and verifies message values. `Debug` does not show it.
#[derive(Clone)]
pub struct SigningKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A key from raw bytes.
    ///
    /// # Errors
    /// [`StoreError::Config`] when it is shorter than [`MIN_KEY_LEN`].
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, StoreError> {
        let key = key.into();
        if key.len() < MIN_KEY_LEN {
            return Err(StoreError::Config(format!("{KEY_VAR} must be at least {MIN_KEY_LEN} bytes")));
        }
        Ok(Self { key })
    }

    /// The key of `ORDO_EVENT_SIGNING_KEY`, or `None` when it is unset or empty.
    ///
    /// # Errors
    /// When it is set but too short.
    pub fn from_env() -> Result<Option<Self>, StoreError> {
        match std::env::var(KEY_VAR) {
            Ok(v) if !v.is_empty() => Self::new(v.into_bytes()).map(Some),
            _ => Ok(None),
        }
    }

    /// The key of `ORDO_EVENT_SIGNING_KEY`, or else the one stored in the database (created now
    /// with a random key if there is none yet).
    ///
    /// # Errors
    /// When the variable is set but too short, or the database cannot be reached.
    pub async fn load(pool: &PgPool) -> Result<Self, StoreError> {
        if let Some(key) = Self::from_env()? {
            return Ok(key);
        }
        let fresh: Vec<u8> =
            uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).copied().collect();
        sqlx::query("INSERT INTO event_signing_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(&fresh)
            .execute(pool)
            .await?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM event_signing_key WHERE id = 1").fetch_one(pool).await?;
        Self::new(key)
    }

    /// The signature of `value`: HMAC-SHA256, lower-case hex.
    pub fn sign(&self, value: &[u8]) -> String {
        hex::encode(self.mac(value).finalize().into_bytes())
    }

    /// Whether `signature` (hex) is this key's signature of `value` (compared in constant time).
    pub fn verify(&self, value: &[u8], signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(bytes) => self.mac(value).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn mac(&self, value: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(value);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_value_and_key() {
        let key = SigningKey::new(vec![7u8; 32]).unwrap();
        let other = SigningKey::new(vec![8u8; 32]).unwrap();
        let sig = key.sign(b"value");
        assert!(key.verify(b"value", &sig));
        assert!(!key.verify(b"value!", &sig));
        assert!(!other.verify(b"value", &sig));
        assert!(!key.verify(b"value", "not hex"));
        assert!(!key.verify(b"value", ""));
    }

    #[test]
    fn a_short_key_is_refused_and_debug_hides_the_key() {
        assert!(SigningKey::new(vec![1u8; 31]).is_err());
        let key = SigningKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
        assert!(!format!("{key:?}").contains("0123"));
    }
}
