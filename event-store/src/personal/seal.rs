//! The cryptography of personal fields: AES-256-GCM with a fresh random nonce per field, and
//! associated data binding each ciphertext to its place in the log.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ordo_schemas::personal::{SealedBody, SEALED_MEMBER, SEALED_V1};
use ordo_schemas::{SealedField, StreamCategory};
use serde_json::Value;
use uuid::Uuid;

/// A 256-bit key: a data subject's key or a key-encryption key. `Debug` does not show it.
/// Cheap to clone (the expanded key is shared).
#[derive(Clone)]
pub struct SecretKey(std::sync::Arc<Aes256Gcm>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// The key of 32 raw bytes, or `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == 32).then(|| Self(std::sync::Arc::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)))))
    }

    /// 32 fresh random bytes.
    pub fn generate_bytes() -> Vec<u8> {
        Aes256Gcm::generate_key(&mut OsRng).to_vec()
    }

    /// `nonce || ciphertext+tag` of `plain`, authenticated with `aad`. The 96-bit nonce is
    /// random, from the thread's CSPRNG (ChaCha, seeded and periodically reseeded by the
    /// operating system): no system call per field.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut rand::thread_rng());
        // Encryption fails only for inputs beyond GCM's 64 GiB limit.
        let ct = self.0.encrypt(&nonce, Payload { msg: plain, aad }).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// The plain bytes of `nonce || ciphertext+tag`, or `None` when they do not authenticate.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        self.0.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
    }
}

/// Where a personal field sits: the associated data of its ciphertext, so a ciphertext moved to
/// another field or stream does not decrypt. The event is not part of it, so a read model that
/// keeps the sealed value (the order's address) can have it revealed knowing only its stream.
/// The same in both stored formats: they differ only in how they spell the bytes.
pub(crate) fn field_aad(category: StreamCategory, stream_id: Uuid, field: &str) -> Vec<u8> {
    format!("ordo-personal/v1|{}|{stream_id}|{field}", category.as_str()).into_bytes()
}

/// Seals the JSON value of one field under the subject's key `kid`, in the compact format:
/// `{"sealed": "v2.<kid>.<nonce, ciphertext and tag, base64url>"}` (ADR 0035).
pub(crate) fn seal_value(key: &SecretKey, kid: Uuid, value: &Value, aad: &[u8]) -> Value {
    let plain = serde_json::to_vec(value).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(key.seal(&plain, aad));
    let mut field = serde_json::Map::with_capacity(1);
    field.insert(SEALED_MEMBER.to_owned(), Value::String(SealedField::compact(kid, &body)));
    Value::Object(field)
}

/// The JSON value inside a sealed field of either format, or `None` when it does not decrypt
/// (wrong key, altered ciphertext, moved field, unknown format).
pub(crate) fn open_value(key: &SecretKey, field: &SealedField, aad: &[u8]) -> Option<Value> {
    let sealed = match &field.body {
        SealedBody::V2(body) => URL_SAFE_NO_PAD.decode(body).ok()?,
        SealedBody::V1 { enc, n, ct } => {
            if enc != SEALED_V1 {
                return None;
            }
            let mut sealed = STANDARD.decode(n).ok()?;
            if sealed.len() != 12 {
                return None;
            }
            sealed.extend(STANDARD.decode(ct).ok()?);
            sealed
        }
    };
    let plain = key.open(&sealed, aad)?;
    serde_json::from_slice(&plain).ok()
}

/// The same sealed value spelled in the first format (`v1`): what events written before the
/// compact format hold. For tests that show those still read and verify.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn to_v1(field: &SealedField) -> Option<Value> {
    let SealedBody::V2(body) = &field.body else { return Some(field.to_value()) };
    let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (n, ct) = bytes.split_at(12);
    let v1 = SealedField {
        kid: field.kid,
        body: SealedBody::V1 { enc: SEALED_V1.to_owned(), n: STANDARD.encode(n), ct: STANDARD.encode(ct) },
    };
    Some(v1.to_value())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes(&SecretKey::generate_bytes()).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_in_its_place() {
        let (k, other) = (key(), key());
        let kid = Uuid::new_v4();
        let aad = field_aad(StreamCategory::Customer, Uuid::nil(), "email");
        let sealed = seal_value(&k, kid, &json!("ada@example.com"), &aad);
        let field = SealedField::from_value(&sealed).unwrap();
        assert_eq!(field.kid, kid);
        assert!(matches!(field.body, SealedBody::V2(_)), "written compact: {sealed}");
        assert!(!sealed.to_string().contains("ada"));
        assert_eq!(open_value(&k, &field, &aad), Some(json!("ada@example.com")));
        let v1 = SealedField::from_value(&to_v1(&field).unwrap()).unwrap();
        assert!(matches!(v1.body, SealedBody::V1 { .. }));
        assert_eq!(open_value(&k, &v1, &aad), Some(json!("ada@example.com")), "the first format opens too");
        assert_eq!(open_value(&other, &field, &aad), None);
        let moved = field_aad(StreamCategory::Customer, Uuid::nil(), "name");
        assert_eq!(open_value(&k, &field, &moved), None);
    }

    #[test]
    fn an_altered_ciphertext_does_not_open_and_nonces_are_fresh() {
        let k = key();
        let aad = b"aad";
        let a = seal_value(&k, Uuid::nil(), &json!("x"), aad);
        let b = seal_value(&k, Uuid::nil(), &json!("x"), aad);
        assert_ne!(a, b);
        let mut field = SealedField::from_value(&a).unwrap();
        let SealedBody::V2(body) = &field.body else { panic!("compact") };
        let mut bytes = URL_SAFE_NO_PAD.decode(body).unwrap();
        bytes[20] ^= 1;
        field.body = SealedBody::V2(URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(open_value(&k, &field, aad), None);
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", key()), "SecretKey(<redacted>)");
    }
}
