//! Personal fields sealed under per-customer keys: what is stored, what reads back, erasure,
//! re-erasure after a restore, KEK rotation and tampering.

use ordo_event_store::testing::{sealed_as_v1, TestDb};
use ordo_event_store::verify::{prove_digest, verify, LinkProblem};
use ordo_event_store::{AppendError, ExpectedVersion, NewEvent, StreamRef};
use ordo_schemas::{Actor, EventMetadata, StreamCategory};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn meta() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::new_v4(),
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::system(),
        traceparent: None,
        tracestate: None,
    }
}

fn address() -> Value {
    json!({"line1": "Invalidenstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"})
}

fn registered(customer: Uuid, email: &str) -> NewEvent {
    NewEvent {
        event_type: "CustomerRegistered".into(),
        schema_version: 1,
        data: json!({"customer_id": customer, "name": "Ada Lovelace", "email": email, "shipping_address": address()}),
        metadata: meta(),
    }
}

fn placed(order: Uuid, customer: Uuid) -> NewEvent {
    NewEvent {
        event_type: "OrderPlaced".into(),
        schema_version: 1,
        data: json!({
            "order_id": order, "customer_id": customer, "merchant_id": Uuid::new_v4(),
            "lines": [{"product_id": Uuid::new_v4(), "sku": "TS-1", "name": "T-shirt", "quantity": 2,
                       "unit_price": {"amount_minor": 500, "currency": "EUR"},
                       "line_total": {"amount_minor": 1000, "currency": "EUR"}}],
            "total": {"amount_minor": 1000, "currency": "EUR"},
            "shipping_address": address()
        }),
        metadata: meta(),
    }
}

/// A customer and one order of it, appended; returns both streams.
async fn customer_with_order(db: &TestDb, email: &str) -> (StreamRef, StreamRef) {
    let customer = StreamRef::new(StreamCategory::Customer, Uuid::new_v4());
    let order = StreamRef::new(StreamCategory::Order, Uuid::new_v4());
    let store = db.store();
    store.append(customer, ExpectedVersion::NoStream, vec![registered(customer.id, email)]).await.unwrap();
    store.append(order, ExpectedVersion::NoStream, vec![placed(order.id, customer.id)]).await.unwrap();
    (customer, order)
}

fn unique_email() -> String {
    format!("erase-{}@example.com", Uuid::new_v4().simple())
}

/// Every row of every table holding `needle` anywhere in its text form, as `table: count`.
async fn tables_containing(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for table in tables {
        // the table name comes from the catalog, quoted by the database; the needle is bound
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"))
            .bind(needle)
            .fetch_one(pool)
            .await
            .unwrap();
        if n > 0 {
            found.push(format!("{table}: {n}"));
        }
    }
    found
}

#[tokio::test]
async fn personal_fields_are_stored_sealed_and_read_back_with_the_key() {
    let db = TestDb::new().await;
    let email = unique_email();
    let (customer, order) = customer_with_order(&db, &email).await;
    let store = db.store();

    let mut events = store.read_stream(customer, 1).await.unwrap();
    let stored = &events[0].data;
    for field in ["name", "email", "shipping_address"] {
        let text = stored[field]["sealed"].as_str().unwrap_or_default();
        assert!(text.starts_with("v2."), "{field} sealed in the compact format: {stored}");
    }
    assert_eq!(stored["customer_id"], json!(customer.id), "the subject stays in clear");
    assert!(tables_containing(&db.pool, &email).await.is_empty(), "no table holds the email in clear");
    assert!(tables_containing(&db.pool, "Invalidenstr").await.is_empty());

    store.personal().reveal_recorded(&mut events).await.unwrap();
    assert_eq!(events[0].data["email"], json!(email));
    assert_eq!(events[0].data["shipping_address"], address());
    let mut orders = store.read_stream(order, 1).await.unwrap();
    assert_eq!(orders[0].data["total"]["amount_minor"], 1000, "figures stay in clear");
    store.personal().reveal_recorded(&mut orders).await.unwrap();
    assert_eq!(orders[0].data["shipping_address"], address());
    assert!(verify(&db.pool, None, None).await.unwrap().ok);
}

#[tokio::test]
async fn fields_sealed_in_the_first_format_still_read_verify_and_erase() {
    let db = TestDb::new().await;
    let email = unique_email();
    let (customer, _) = customer_with_order(&db, &email).await;
    let store = db.store();
    // An event as written before the compact format: the same ciphertexts, spelled as `v1`
    // objects. Already sealed, the store keeps them as they are.
    let mut old = store.read_stream(customer, 1).await.unwrap().remove(0).data;
    for field in ["name", "email", "shipping_address"] {
        old[field] = sealed_as_v1(&old[field]).unwrap();
    }
    let event = NewEvent { data: old.clone(), ..registered(customer.id, "unused@example.com") };
    store.append(customer, ExpectedVersion::Exact(1), vec![event]).await.unwrap();

    let mut events = store.read_stream(customer, 1).await.unwrap();
    assert_eq!(events[1].data, old, "stored as written");
    assert_eq!(events[1].data["email"]["enc"], "v1");
    assert!(verify(&db.pool, None, None).await.unwrap().ok, "the first format verifies");
    store.personal().reveal_recorded(&mut events).await.unwrap();
    assert_eq!(events[0].data, events[1].data, "both formats read back the same");
    assert_eq!(events[1].data["email"], json!(email));
    assert_eq!(events[1].data["shipping_address"], address());

    store.personal().erase(customer.id).await.unwrap();
    let mut events = store.read_stream(customer, 1).await.unwrap();
    store.personal().reveal_recorded(&mut events).await.unwrap();
    assert_eq!(events[1].data["email"], Value::Null, "erased in the first format too");
    assert!(verify(&db.pool, None, None).await.unwrap().ok);
}

#[tokio::test]
async fn erasing_destroys_the_key_and_every_chain_and_earlier_digest_still_verifies() {
    let db = TestDb::new().await;
    let (customer, order) = customer_with_order(&db, &unique_email()).await;
    let store = db.store();
    let before = hex::encode(&store.read_stream(customer, 1).await.unwrap()[0].hash);

    store.personal().erase(customer.id).await.unwrap();

    let mut events = store.read_stream(customer, 1).await.unwrap();
    store.personal().reveal_recorded(&mut events).await.unwrap();
    for field in ["name", "email", "shipping_address"] {
        assert_eq!(events[0].data[field], Value::Null, "{field} erased");
    }
    let mut orders = store.read_stream(order, 1).await.unwrap();
    store.personal().reveal_recorded(&mut orders).await.unwrap();
    assert_eq!(orders[0].data["shipping_address"], Value::Null);
    assert_eq!(orders[0].data["total"]["amount_minor"], 1000);
    assert!(verify(&db.pool, None, None).await.unwrap().ok);
    let proof = prove_digest(&db.pool, customer, 1, &before).await.unwrap();
    assert!(proof.extends, "a digest taken before the erasure still proves the history: {proof:?}");
    let wrapped: Option<Vec<u8>> = sqlx::query_scalar("SELECT wrapped FROM personal_data_keys WHERE subject_id = $1")
        .bind(customer.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(wrapped, None, "the key is gone from its table");

    let err = store.append(order, ExpectedVersion::Any, vec![placed(order.id, customer.id)]).await.unwrap_err();
    assert!(matches!(err, AppendError::SubjectErased(id) if id == customer.id), "{err:?}");
}

#[tokio::test]
async fn a_restored_key_of_a_customer_erased_in_the_log_is_destroyed_again_by_migrate() {
    let db = TestDb::new().await;
    let (customer, _) = customer_with_order(&db, &unique_email()).await;
    // a backup taken now still has the key; the log it is restored with records the erasure
    let erased = NewEvent {
        event_type: "PersonalDataErased".into(),
        schema_version: 1,
        data: json!({"customer_id": customer.id, "reason": "ticket 1", "erased_by": Actor::system()}),
        metadata: meta(),
    };
    db.store().append(customer, ExpectedVersion::Exact(1), vec![erased]).await.unwrap();
    let mut events = db.store().read_stream(customer, 1).await.unwrap();
    db.store().personal().reveal_recorded(&mut events).await.unwrap();
    assert_ne!(events[0].data["name"], Value::Null, "the key was never destroyed");

    ordo_event_store::migrate(&db.pool).await.unwrap();

    let mut events = db.store().read_stream(customer, 1).await.unwrap();
    db.store().personal().reveal_recorded(&mut events).await.unwrap();
    assert_eq!(events[0].data["name"], Value::Null);
    assert_eq!(ordo_event_store::personal::erase_recorded(&db.pool).await.unwrap(), 0, "idempotent");
}

#[tokio::test]
async fn a_tampered_ciphertext_fails_verification_and_decryption_naming_the_version() {
    let db = TestDb::new().await;
    let (customer, _) = customer_with_order(&db, &unique_email()).await;
    let store = db.store();
    let more = NewEvent {
        event_type: "PersonalDataErased".into(),
        schema_version: 1,
        data: json!({"customer_id": customer.id, "reason": "x", "erased_by": Actor::system()}),
        metadata: meta(),
    };
    store.append(customer, ExpectedVersion::Exact(1), vec![more]).await.unwrap();
    let email = store.read_stream(customer, 1).await.unwrap()[0].data["email"].clone();
    let name = store.read_stream(customer, 1).await.unwrap()[0].data["name"].clone();
    // the name's ciphertext copied over the email's: well-formed, but not the email's
    assert_ne!(email, name);
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    sqlx::query("UPDATE events SET data = jsonb_set(data, '{email}', $2) WHERE stream_id = $1 AND version = 1")
        .bind(customer.id)
        .bind(&name)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    let report = verify(&db.pool, None, None).await.unwrap();
    assert_eq!(report.broken.len(), 1, "{:?}", report.broken);
    assert_eq!((report.broken[0].stream_id, report.broken[0].version), (customer.id, 1));
    assert!(matches!(report.broken[0].problem, LinkProblem::HashMismatch { .. }));
    let mut events = store.read_stream(customer, 1).await.unwrap();
    let err = store.personal().reveal_recorded(&mut events).await.unwrap_err().to_string();
    assert!(err.contains("email") && err.contains("version 1"), "{err}");
}

#[tokio::test]
async fn events_without_personal_fields_append_and_read_as_before() {
    let db = TestDb::new().await;
    let s = crate::product();
    db.store().append(s, ExpectedVersion::NoStream, vec![crate::event(1)]).await.unwrap();
    let mut events = db.store().read_stream(s, 1).await.unwrap();
    let before = events[0].data.clone();
    db.store().personal().reveal_recorded(&mut events).await.unwrap();
    assert_eq!(events[0].data, before);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM personal_data_keys").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 0, "no key for events without personal data");
}

#[tokio::test]
async fn a_kek_rotation_rewraps_every_key_and_the_old_kek_can_then_be_dropped() {
    use base64::Engine;
    use ordo_event_store::personal::{KEK_VAR, PREVIOUS_KEK_VAR};
    let b64 = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    let db = TestDb::new().await;
    // nextest runs each test in its own process, so the environment is this test's own
    std::env::set_var(KEK_VAR, b64(1));
    let (customer, _) = customer_with_order(&db, &unique_email()).await;

    std::env::set_var(KEK_VAR, b64(2));
    let store = db.store();
    let mut events = store.read_stream(customer, 1).await.unwrap();
    assert!(store.personal().reveal_recorded(&mut events).await.is_err(), "the new KEK alone cannot unwrap");
    std::env::set_var(PREVIOUS_KEK_VAR, b64(1));
    let store = db.store();
    assert_eq!(store.personal().rewrap().await.unwrap(), 1);

    std::env::remove_var(PREVIOUS_KEK_VAR);
    let store = db.store();
    let mut events = store.read_stream(customer, 1).await.unwrap();
    store.personal().reveal_recorded(&mut events).await.unwrap();
    assert_eq!(events[0].data["name"], "Ada Lovelace");
    std::env::remove_var(KEK_VAR);
}

#[tokio::test]
async fn an_append_in_a_callers_transaction_refuses_personal_fields_in_clear() {
    let db = TestDb::new().await;
    let customer = StreamRef::new(StreamCategory::Customer, Uuid::new_v4());
    let mut tx = db.pool.begin().await.unwrap();
    let append = ordo_event_store::StreamAppend {
        stream: customer,
        expected: ExpectedVersion::NoStream,
        events: vec![registered(customer.id, &unique_email())],
    };
    let err = ordo_event_store::EventStore::append_in(&mut tx, vec![append], None).await.unwrap_err();
    assert!(matches!(err, AppendError::Invalid(_)), "{err:?}");
}
