//! Personal data in the log, erasable by crypto-shredding (ADR 0027).
//!
//! Fields marked personal in the event schemas ([`ordo_schemas::personal_fields`]) are sealed
//! with AES-256-GCM under their data subject's key before the event is hashed, so the log and
//! its hash chain hold only ciphertext. Subject keys live in `personal_data_keys`, never in the
//! log, wrapped by a key-encryption key (KEK). Destroying a subject's key ([`PersonalData::erase`])
//! erases every field sealed with it; the chains still verify because they hash what is stored.
//!
//! The KEK comes from `ORDO_PERSONAL_DATA_KEK` (standard base64 of 32 bytes). For a rotation
//! the old one is given in `ORDO_PERSONAL_DATA_KEK_PREVIOUS` while [`PersonalData::rewrap`]
//! moves every key to the new one. When the variable is unset a development KEK is generated
//! and kept in `personal_data_dev_kek`, with a loud warning: production must set it. KEKs are
//! never logged and `Debug` does not show them.

pub(crate) mod seal;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ordo_schemas::personal::SUBJECT_FIELD;
use ordo_schemas::{personal_fields, SealedField, StreamCategory};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tokio::sync::OnceCell;
use uuid::Uuid;

pub use seal::SecretKey;

use crate::error::{AppendError, StoreError};
use crate::types::{AppendRequest, RecordedEvent};

/// The environment variable that gives the KEK (standard base64 of 32 bytes).
pub const KEK_VAR: &str = "ORDO_PERSONAL_DATA_KEK";

/// The environment variable that gives the previous KEK during a rotation.
pub const PREVIOUS_KEK_VAR: &str = "ORDO_PERSONAL_DATA_KEK_PREVIOUS";

/// How long a subject key stays cached for sealing. Reading never uses the cache, so an erasure
/// is seen at once by every reader; a field sealed meanwhile under an erased key is unreadable.
const SEAL_CACHE_TTL: Duration = Duration::from_secs(60);
const SEAL_CACHE_MAX: usize = 100_000;

/// A key-encryption key and its id (the first 8 bytes of its SHA-256, hex).
#[derive(Clone, Debug)]
struct Kek {
    id: String,
    key: SecretKey,
}

impl Kek {
    fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, StoreError> {
        let key = SecretKey::from_bytes(bytes)
            .ok_or_else(|| StoreError::Config(format!("{name} must be the base64 of exactly 32 bytes")))?;
        let digest = Sha256::new().chain_update(b"ordo-kek|").chain_update(bytes).finalize();
        Ok(Self { id: hex::encode(&digest[..8]), key })
    }

    fn from_env(name: &str) -> Result<Option<Self>, StoreError> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => {
                let bytes = STANDARD
                    .decode(v.trim())
                    .map_err(|_| StoreError::Config(format!("{name} must be the base64 of exactly 32 bytes")))?;
                Self::from_bytes(&bytes, name).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// Checks the KEK variables of this process at start, so a malformed one stops it with a clear
/// message instead of failing the first append that seals a field.
///
/// # Errors
/// [`StoreError::Config`] naming the variable that is not the base64 of 32 bytes.
pub fn check_environment() -> Result<(), StoreError> {
    Kek::from_env(KEK_VAR)?;
    Kek::from_env(PREVIOUS_KEK_VAR)?;
    Ok(())
}

/// The KEKs a process knows: the current one wraps, every one unwraps.
#[derive(Debug)]
struct Keyring {
    current: Kek,
    others: Vec<Kek>,
    from_env: bool,
}

impl Keyring {
    async fn load(pool: &PgPool) -> Result<Self, StoreError> {
        let dev: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT kek FROM personal_data_dev_kek WHERE id = 1").fetch_optional(pool).await?;
        let dev = dev.map(|bytes| Kek::from_bytes(&bytes, "the development KEK")).transpose()?;
        let mut others: Vec<Kek> = Kek::from_env(PREVIOUS_KEK_VAR)?.into_iter().collect();
        if let Some(current) = Kek::from_env(KEK_VAR)? {
            others.extend(dev);
            return Ok(Self { current, others, from_env: true });
        }
        tracing::warn!(
            "{KEK_VAR} is unset: personal data keys are wrapped by a development key kept in the database; \
             production must set {KEK_VAR}"
        );
        let current = match dev {
            Some(kek) => kek,
            None => {
                sqlx::query("INSERT INTO personal_data_dev_kek (id, kek) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                    .bind(SecretKey::generate_bytes())
                    .execute(pool)
                    .await?;
                let bytes: Vec<u8> =
                    sqlx::query_scalar("SELECT kek FROM personal_data_dev_kek WHERE id = 1").fetch_one(pool).await?;
                Kek::from_bytes(&bytes, "the development KEK")?
            }
        };
        Ok(Self { current, others, from_env: false })
    }

    fn kek(&self, id: &str) -> Option<&Kek> {
        std::iter::once(&self.current).chain(&self.others).find(|k| k.id == id)
    }

    fn wrap(&self, subject: Uuid, kid: Uuid, key: &[u8]) -> Vec<u8> {
        self.current.key.seal(key, &wrap_aad(subject, kid))
    }

    fn unwrap(&self, subject: Uuid, kid: Uuid, kek_id: &str, wrapped: &[u8]) -> Result<SecretKey, StoreError> {
        let kek = self.kek(kek_id).ok_or_else(|| {
            StoreError::Config(format!(
                "the key of subject {subject} is wrapped by KEK {kek_id}, which this process does not have \
                 (set {PREVIOUS_KEK_VAR} during a rotation)"
            ))
        })?;
        kek.key
            .open(wrapped, &wrap_aad(subject, kid))
            .and_then(|bytes| SecretKey::from_bytes(&bytes))
            .ok_or_else(|| StoreError::Corrupt(format!("the key of subject {subject} does not unwrap")))
    }
}

fn wrap_aad(subject: Uuid, kid: Uuid) -> Vec<u8> {
    format!("ordo-subject-key|{subject}|{kid}").into_bytes()
}

/// A subject's key as looked up: usable, or destroyed.
#[derive(Clone, Debug)]
enum SubjectKey {
    Live { kid: Uuid, key: SecretKey },
    Erased,
}

/// One event's payload to reveal, with where it sits in the log.
pub struct Revealable<'a> {
    pub category: StreamCategory,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_type: &'a str,
    pub data: &'a mut Value,
}

impl<'a> From<&'a mut RecordedEvent> for Revealable<'a> {
    fn from(e: &'a mut RecordedEvent) -> Self {
        Self {
            category: e.stream.category,
            stream_id: e.stream.id,
            version: e.version,
            event_type: e.event_type.as_str(),
            data: &mut e.data,
        }
    }
}

/// One sealed value kept outside the log (a read model's copy), with the stream and field it
/// was sealed for.
pub struct SealedSlot<'a> {
    pub category: StreamCategory,
    pub stream_id: Uuid,
    pub field: &'a str,
    pub value: &'a mut Value,
}

/// Seals personal fields on append and reveals them on read. One per [`crate::EventStore`].
pub struct PersonalData {
    pool: PgPool,
    keyring: OnceCell<Keyring>,
    seal_cache: Mutex<HashMap<Uuid, (SubjectKey, Instant)>>,
}

impl std::fmt::Debug for PersonalData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonalData(<keys redacted>)")
    }
}

impl PersonalData {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, keyring: OnceCell::new(), seal_cache: Mutex::new(HashMap::new()) }
    }

    async fn keyring(&self) -> Result<&Keyring, StoreError> {
        self.keyring.get_or_try_init(|| Keyring::load(&self.pool)).await
    }

    /// Seals the personal fields of every event in `requests`, in place. The data subject is the
    /// payload's `customer_id`, or for an order event without one (free text) the customer of
    /// the order, read from its `OrderPlaced`. Answers, per request, why it cannot be appended:
    /// its customer's data was erased, or no customer is known for the event. Free text of an
    /// order whose customer was erased is written as `null` (erased) instead: the order's
    /// lifecycle goes on without it. Every request is refused when the keys cannot be read.
    pub(crate) async fn seal_requests(&self, requests: &mut [AppendRequest]) -> Vec<Option<AppendError>> {
        let mut refused: Vec<Option<AppendError>> = requests.iter().map(|_| None).collect();
        let mut orders = HashMap::new();
        let mut unknown_orders = HashSet::new();
        for request in requests.iter() {
            for append in request.appends.iter().filter(|a| a.stream.category == StreamCategory::Order) {
                for event in &append.events {
                    if let Some(s) = subject_of(&event.data) {
                        orders.insert(append.stream.id, s);
                    }
                }
            }
        }
        for request in requests.iter() {
            for append in &request.appends {
                for event in &append.events {
                    let fields = personal_fields(append.stream.category, &event.event_type);
                    let sealing = fields.iter().any(|f| needs_sealing(event.data.get(f.as_str())));
                    if sealing
                        && subject_of(&event.data).is_none()
                        && append.stream.category == StreamCategory::Order
                        && !orders.contains_key(&append.stream.id)
                    {
                        unknown_orders.insert(append.stream.id);
                    }
                }
            }
        }
        if !unknown_orders.is_empty() {
            match self.order_customers(&unknown_orders.into_iter().collect::<Vec<_>>()).await {
                Ok(found) => orders.extend(found),
                Err(e) => {
                    tracing::error!(error = %e, "customers of orders not available");
                    return requests
                        .iter()
                        .map(|_| Some(AppendError::Unavailable("personal data keys".into())))
                        .collect();
                }
            }
        }
        let subject_for = |stream: crate::StreamRef, data: &Value| -> Option<(Uuid, bool)> {
            match subject_of(data) {
                Some(s) => Some((s, false)),
                None if stream.category == StreamCategory::Order => orders.get(&stream.id).map(|s| (*s, true)),
                None => None,
            }
        };
        let mut subjects = HashSet::new();
        for (request, refusal) in requests.iter().zip(refused.iter_mut()) {
            for append in &request.appends {
                for event in &append.events {
                    let fields = personal_fields(append.stream.category, &event.event_type);
                    if !fields.iter().any(|f| needs_sealing(event.data.get(f.as_str()))) {
                        continue;
                    }
                    match subject_for(append.stream, &event.data) {
                        Some((s, _)) => {
                            subjects.insert(s);
                        }
                        None => {
                            *refusal = Some(AppendError::Invalid(
                                "personal fields need the customer_id of the payload or order",
                            ))
                        }
                    }
                }
            }
        }
        if subjects.is_empty() {
            return refused;
        }
        let keys = match self.keys_for_sealing(subjects.into_iter().collect()).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::error!(error = %e, "personal data keys not available");
                return requests.iter().map(|_| Some(AppendError::Unavailable("personal data keys".into()))).collect();
            }
        };
        for (request, refusal) in requests.iter_mut().zip(refused.iter_mut()) {
            if refusal.is_some() {
                continue;
            }
            for append in &mut request.appends {
                let stream = append.stream;
                for event in &mut append.events {
                    let fields = personal_fields(stream.category, &event.event_type);
                    let Some((subject, of_order)) = subject_for(stream, &event.data) else { continue };
                    for field in fields {
                        let Some(value) = event.data.get_mut(field.as_str()) else { continue };
                        if !needs_sealing(Some(value)) {
                            continue;
                        }
                        match keys.get(&subject) {
                            Some(SubjectKey::Live { kid, key }) => {
                                let aad = seal::field_aad(stream.category, stream.id, field);
                                *value = seal::seal_value(key, *kid, value, &aad);
                            }
                            _ if of_order => *value = Value::Null,
                            _ => *refusal = Some(AppendError::SubjectErased(subject)),
                        }
                    }
                }
            }
        }
        refused
    }

    /// The customer of each order in `orders` that was placed, read from its `OrderPlaced`.
    async fn order_customers(&self, orders: &[Uuid]) -> Result<HashMap<Uuid, Uuid>, StoreError> {
        // One probe of the (category, stream_id, version) index per order: with `stream_id = ANY`
        // the planner could scan every order's events and filter them.
        let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT o.id, e.customer FROM UNNEST($1::uuid[]) AS o(id) CROSS JOIN LATERAL ( \
                 SELECT data ->> 'customer_id' AS customer FROM events \
                 WHERE category = 'order' AND stream_id = o.id AND version = 1 AND event_type = 'OrderPlaced' \
                 LIMIT 1) e",
        )
        .bind(orders)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(order, customer)| Some((order, Uuid::parse_str(customer.as_deref()?).ok()?)))
            .collect())
    }

    /// The keys of `subjects`, made now for subjects that have none yet.
    async fn keys_for_sealing(&self, subjects: Vec<Uuid>) -> Result<HashMap<Uuid, SubjectKey>, StoreError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.seal_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for s in subjects {
                match cache.get(&s) {
                    Some((key, at)) if at.elapsed() < SEAL_CACHE_TTL => {
                        out.insert(s, key.clone());
                    }
                    _ => missing.push(s),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let ring = self.keyring().await?;
        let mut found = self.load_keys("subject_id", &missing).await?;
        let new: Vec<Uuid> = missing.iter().filter(|s| !found.contains_key(s)).copied().collect();
        if !new.is_empty() {
            let kids: Vec<Uuid> = new.iter().map(|_| Uuid::new_v4()).collect();
            let wrapped: Vec<Vec<u8>> =
                new.iter().zip(&kids).map(|(s, kid)| ring.wrap(*s, *kid, &SecretKey::generate_bytes())).collect();
            let kek_ids: Vec<&str> = new.iter().map(|_| ring.current.id.as_str()).collect();
            sqlx::query(
                "INSERT INTO personal_data_keys (subject_id, kid, kek_id, wrapped) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bytea[]) \
                 ON CONFLICT (subject_id) DO NOTHING",
            )
            .bind(&new)
            .bind(&kids)
            .bind(&kek_ids)
            .bind(&wrapped)
            .execute(&self.pool)
            .await?;
            found.extend(self.load_keys("subject_id", &new).await?);
        }
        let mut cache = self.seal_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > SEAL_CACHE_MAX {
            cache.clear();
        }
        for (subject, row) in found {
            let key = row.unwrap_with(ring, subject)?;
            cache.insert(subject, (key.clone(), Instant::now()));
            out.insert(subject, key);
        }
        Ok(out)
    }

    /// Rows of `personal_data_keys` whose `column` (`subject_id` or `kid`) is in `ids`.
    async fn load_keys(&self, column: &str, ids: &[Uuid]) -> Result<HashMap<Uuid, KeyRow>, StoreError> {
        let sql = match column {
            "kid" => "SELECT subject_id, kid, kek_id, wrapped FROM personal_data_keys WHERE kid = ANY($1)",
            _ => "SELECT subject_id, kid, kek_id, wrapped FROM personal_data_keys WHERE subject_id = ANY($1)",
        };
        let rows = sqlx::query(sql).bind(ids).fetch_all(&self.pool).await?;
        let mut out = HashMap::new();
        for row in rows {
            let r = KeyRow {
                subject: row.try_get("subject_id")?,
                kid: row.try_get("kid")?,
                kek_id: row.try_get("kek_id")?,
                wrapped: row.try_get("wrapped")?,
            };
            out.insert(if column == "kid" { r.kid } else { r.subject }, r);
        }
        Ok(out)
    }

    /// Replaces every sealed personal field in `items` by its value, or by `null` when the
    /// subject's key was destroyed. Answers, per item, the field that does not decrypt (an
    /// altered or moved ciphertext), naming the stream and version; such a field is left sealed.
    ///
    /// # Errors
    /// When the keys cannot be read.
    pub async fn reveal(&self, items: &mut [Revealable<'_>]) -> Result<Vec<Option<String>>, StoreError> {
        let mut slots = Vec::new();
        let mut owner = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            let fields = personal_fields(item.category, item.event_type);
            let Value::Object(map) = &mut *item.data else { continue };
            for (name, value) in map.iter_mut() {
                if fields.iter().any(|f| f == name) {
                    owner.push((i, item.version));
                    slots.push(SealedSlot { category: item.category, stream_id: item.stream_id, field: name, value });
                }
            }
        }
        let failed = self.reveal_slots(&mut slots).await?;
        let mut problems: Vec<Option<String>> = items.iter().map(|_| None).collect();
        for (slot, (i, version)) in failed.into_iter().zip(owner) {
            if let Some(field) = slot {
                problems[i] = Some(format!("{field} version {version} does not decrypt (altered or moved)"));
            }
        }
        Ok(problems)
    }

    /// Replaces each sealed value by its value, or by `null` once its key was destroyed; values
    /// that are not sealed stay as they are. Answers, per slot, a description of a sealed value
    /// that does not decrypt (left sealed).
    ///
    /// # Errors
    /// When the keys cannot be read.
    pub async fn reveal_slots(&self, slots: &mut [SealedSlot<'_>]) -> Result<Vec<Option<String>>, StoreError> {
        let mut problems: Vec<Option<String>> = slots.iter().map(|_| None).collect();
        let kids: HashSet<Uuid> =
            slots.iter().filter_map(|s| SealedField::from_value(s.value)).map(|f| f.kid).collect();
        if kids.is_empty() {
            return Ok(problems);
        }
        let ring = self.keyring().await?;
        let rows = self.load_keys("kid", &kids.into_iter().collect::<Vec<_>>()).await?;
        let mut keys = HashMap::new();
        for (kid, row) in &rows {
            keys.insert(*kid, row.unwrap_with(ring, row.subject)?);
        }
        for (slot, problem) in slots.iter_mut().zip(problems.iter_mut()) {
            let Some(sealed) = SealedField::from_value(slot.value) else { continue };
            match keys.get(&sealed.kid) {
                Some(SubjectKey::Live { key, .. }) => {
                    let aad = seal::field_aad(slot.category, slot.stream_id, slot.field);
                    match seal::open_value(key, &sealed, &aad) {
                        Some(plain) => *slot.value = plain,
                        None => {
                            *problem =
                                Some(format!("personal field {} of {} {}", slot.field, slot.category, slot.stream_id))
                        }
                    }
                }
                _ => *slot.value = Value::Null,
            }
        }
        Ok(problems)
    }

    /// Reveals the personal fields of recorded events in place (see [`PersonalData::reveal`]).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming the first event whose field does not decrypt.
    pub async fn reveal_recorded(&self, events: &mut [RecordedEvent]) -> Result<(), StoreError> {
        let mut items: Vec<Revealable<'_>> = events.iter_mut().map(Revealable::from).collect();
        match self.reveal(&mut items).await?.into_iter().flatten().next() {
            Some(problem) => Err(StoreError::Corrupt(problem)),
            None => Ok(()),
        }
    }

    /// Destroys the subject's key: every field sealed with it is erased, and no new key is made
    /// for the subject. Idempotent.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn erase(&self, subject: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO personal_data_keys (subject_id, kid, erased_at) VALUES ($1, $2, now()) \
             ON CONFLICT (subject_id) DO UPDATE SET wrapped = NULL, kek_id = NULL, \
             erased_at = COALESCE(personal_data_keys.erased_at, now())",
        )
        .bind(subject)
        .bind(Uuid::new_v4())
        .execute(&self.pool)
        .await?;
        self.seal_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&subject);
        Ok(())
    }

    /// Moves every key wrapped by another KEK (the previous one, or the development KEK) to the
    /// current one; afterwards the previous KEK may be dropped. Refused without
    /// `ORDO_PERSONAL_DATA_KEK`. Returns how many keys were rewrapped.
    ///
    /// # Errors
    /// When a key is wrapped by a KEK this process does not have, or the database fails.
    pub async fn rewrap(&self) -> Result<u64, StoreError> {
        let ring = self.keyring().await?;
        if !ring.from_env {
            return Err(StoreError::Config(format!("rewrapping needs {KEK_VAR}")));
        }
        let rows = sqlx::query(
            "SELECT subject_id, kid, kek_id, wrapped FROM personal_data_keys \
             WHERE wrapped IS NOT NULL AND kek_id <> $1",
        )
        .bind(&ring.current.id)
        .fetch_all(&self.pool)
        .await?;
        let mut done = 0;
        for row in rows {
            let (subject, kid): (Uuid, Uuid) = (row.try_get("subject_id")?, row.try_get("kid")?);
            let (kek_id, wrapped): (String, Vec<u8>) = (row.try_get("kek_id")?, row.try_get("wrapped")?);
            let kek = ring.kek(&kek_id).ok_or_else(|| {
                StoreError::Config(format!("the key of subject {subject} is wrapped by unknown KEK {kek_id}"))
            })?;
            let key = kek
                .key
                .open(&wrapped, &wrap_aad(subject, kid))
                .ok_or_else(|| StoreError::Corrupt(format!("the key of subject {subject} does not unwrap")))?;
            done += sqlx::query(
                "UPDATE personal_data_keys SET kek_id = $1, wrapped = $2 \
                 WHERE subject_id = $3 AND kek_id = $4 AND wrapped IS NOT NULL",
            )
            .bind(&ring.current.id)
            .bind(ring.wrap(subject, kid, &key))
            .bind(subject)
            .bind(&kek_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        sqlx::query("DELETE FROM personal_data_dev_kek").execute(&self.pool).await?;
        Ok(done)
    }
}

/// Destroys the key of every subject whose stream records a `PersonalDataErased` event: after a
/// backup taken before an erasure is restored, this erases that subject again. Part of
/// [`crate::migrate`]. Returns how many keys were destroyed now.
///
/// # Errors
/// When the database fails.
pub async fn erase_recorded(pool: &PgPool) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO personal_data_keys (subject_id, kid, erased_at) \
         SELECT subject_id, gen_random_uuid(), now() FROM \
           (SELECT DISTINCT stream_id AS subject_id FROM events \
            WHERE category = 'customer' AND event_type = 'PersonalDataErased') erased \
         ON CONFLICT (subject_id) DO UPDATE SET wrapped = NULL, kek_id = NULL, erased_at = now() \
         WHERE personal_data_keys.wrapped IS NOT NULL",
    )
    .execute(pool)
    .await?
    .rows_affected();
    if done > 0 {
        tracing::warn!(keys = done, "destroyed the keys of subjects erased in the log (a restored backup?)");
    }
    Ok(done)
}

struct KeyRow {
    subject: Uuid,
    kid: Uuid,
    kek_id: Option<String>,
    wrapped: Option<Vec<u8>>,
}

impl KeyRow {
    fn unwrap_with(&self, ring: &Keyring, subject: Uuid) -> Result<SubjectKey, StoreError> {
        match (&self.kek_id, &self.wrapped) {
            (Some(kek_id), Some(wrapped)) => {
                Ok(SubjectKey::Live { kid: self.kid, key: ring.unwrap(subject, self.kid, kek_id, wrapped)? })
            }
            _ => Ok(SubjectKey::Erased),
        }
    }
}

/// Whether an event of `request` carries a personal field in clear (an append that bypasses
/// sealing must refuse it).
pub(crate) fn holds_clear_personal_data(request: &AppendRequest) -> bool {
    request.appends.iter().any(|a| {
        a.events.iter().any(|e| {
            personal_fields(a.stream.category, &e.event_type).iter().any(|f| needs_sealing(e.data.get(f.as_str())))
        })
    })
}

/// A present, non-null value that is not sealed yet.
fn needs_sealing(value: Option<&Value>) -> bool {
    matches!(value, Some(v) if !v.is_null() && SealedField::from_value(v).is_none())
}

fn subject_of(data: &Value) -> Option<Uuid> {
    data.get(SUBJECT_FIELD).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok())
}

/// Re-applies erasures a restored log does not hold: for every `PersonalDataErased` envelope in
/// `register` (an `ordo export` of the live log, or the `ordo.customers` topic, taken after the
/// backup) whose customer's stream has no such event, the same erasure is appended again (same
/// reason and actor, caused by the original event) and the customer's key destroyed. Returns how
/// many erasures were re-applied. Idempotent.
///
/// # Errors
/// When the database fails.
pub async fn reapply_erasures(
    store: &crate::EventStore,
    register: impl IntoIterator<Item = ordo_schemas::EventEnvelope>,
) -> Result<u64, StoreError> {
    let mut done = 0;
    for envelope in register {
        if envelope.category != StreamCategory::Customer || envelope.event_type != "PersonalDataErased" {
            continue;
        }
        let stream = crate::StreamRef::new(StreamCategory::Customer, envelope.stream_id);
        let recorded: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE category = 'customer' AND stream_id = $1 \
             AND event_type = 'PersonalDataErased')",
        )
        .bind(stream.id)
        .fetch_one(store.pool())
        .await?;
        if !recorded {
            let original = &envelope.metadata.metadata;
            let metadata = ordo_schemas::EventMetadata {
                event_id: Uuid::new_v4(),
                correlation_id: original.correlation_id,
                causation_id: Some(original.event_id),
                actor: original.actor,
                traceparent: None,
                tracestate: None,
            };
            let event = crate::NewEvent {
                event_type: envelope.event_type.clone(),
                schema_version: envelope.schema_version,
                data: envelope.data.clone(),
                metadata,
            };
            match store.append(stream, crate::ExpectedVersion::Any, vec![event]).await {
                Ok(_) => done += 1,
                Err(AppendError::Store(e)) => return Err(e),
                Err(e) => return Err(StoreError::Corrupt(format!("erasure of {stream} not re-applied: {e}"))),
            }
        }
        store.personal().erase(stream.id).await?;
    }
    Ok(done)
}
