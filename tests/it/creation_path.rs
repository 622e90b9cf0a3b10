//! The creating request's path, on both backends: an `Idempotency-Key` is claimed inside the
//! work's one write transaction (concurrent claims of one key wait for the owner and then replay
//! or proceed), and a known API key is authenticated from a cache that still honours a
//! revocation or a shop's deactivation made by another process within a second.

use std::time::Duration;

use std::collections::HashSet;

use depositd_core::api_key::Scope;
use depositd_core::invoice::InvoiceDetails;
use depositd_core::invoicing::{self, InvoiceRequest, InvoicingError};
use depositd_core::store::idempotency::{self, Claim, Completed, Presented};
use depositd_core::store::{StoreError, api_keys, events, merchants};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, assert_error, both_backends, depositd};

both_backends!(
    a_claim_commits_with_the_work_and_a_concurrent_claim_waits_for_it,
    invoices_made_together_each_get_their_own_answer,
    a_batch_with_a_taken_external_id_or_key_writes_nothing,
    concurrent_creations_answer_as_each_would_alone,
    a_revocation_by_another_process_is_honoured_within_a_second,
    a_deactivation_by_another_process_is_honoured_within_a_second,
);

async fn a_claim_commits_with_the_work_and_a_concurrent_claim_waits_for_it(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Claims", &Scope::ALL).await;
    let store = app.store.clone();
    let m = merchant.id;

    // Nothing recorded: the lookup lets the request proceed.
    let mut conn = store.conn().await.unwrap();
    assert_eq!(idempotency::lookup(&mut conn, m, "k1", "ep", "h").await.unwrap(), None);
    drop(conn);

    // The owner claims in its transaction; a concurrent claim of the same key waits for it and,
    // once the owner commits its completed record, replays it.
    let mut owner = store.begin().await.unwrap();
    assert_eq!(idempotency::claim(&mut owner, m, "k1", "ep", "h").await.unwrap(), Claim::Owned);
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let claim = idempotency::claim(&mut tx, m, "k1", "ep", "h").await.unwrap();
            tx.rollback().await.unwrap();
            claim
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "a concurrent claim waits for the owner's transaction");
    // Uncommitted, the claim is invisible to others.
    let mut conn = store.conn().await.unwrap();
    assert_eq!(idempotency::lookup(&mut conn, m, "k1", "ep", "h").await.unwrap(), None);
    drop(conn);
    idempotency::complete(&mut owner, m, "k1", 201, r#"{"id":"x"}"#).await.unwrap();
    owner.commit().await.unwrap();
    assert_eq!(waiter.await.unwrap(), Claim::Replay { status: 201, body: r#"{"id":"x"}"#.into() });
    let mut conn = store.conn().await.unwrap();
    assert_eq!(
        idempotency::lookup(&mut conn, m, "k1", "ep", "h").await.unwrap(),
        Some(Claim::Replay { status: 201, body: r#"{"id":"x"}"#.into() })
    );
    assert_eq!(idempotency::lookup(&mut conn, m, "k1", "ep", "other").await.unwrap(), Some(Claim::Mismatch));
    assert_eq!(idempotency::lookup(&mut conn, m, "k1", "elsewhere", "h").await.unwrap(), Some(Claim::Mismatch));
    drop(conn);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(idempotency::claim(&mut tx, m, "k1", "ep", "other").await.unwrap(), Claim::Mismatch);
    tx.rollback().await.unwrap();

    // An owner that fails (rolls back, or is dropped as a crash would) leaves nothing: the waiter
    // becomes the owner.
    let mut owner = store.begin().await.unwrap();
    assert_eq!(idempotency::claim(&mut owner, m, "k2", "ep", "h").await.unwrap(), Claim::Owned);
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let claim = idempotency::claim(&mut tx, m, "k2", "ep", "h").await.unwrap();
            idempotency::complete(&mut tx, m, "k2", 201, "second").await.unwrap();
            tx.commit().await.unwrap();
            claim
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(owner);
    assert_eq!(waiter.await.unwrap(), Claim::Owned);
    let mut conn = store.conn().await.unwrap();
    assert_eq!(
        idempotency::lookup(&mut conn, m, "k2", "ep", "h").await.unwrap(),
        Some(Claim::Replay { status: 201, body: "second".into() })
    );
    // Keys are per merchant.
    assert_eq!(idempotency::lookup(&mut conn, Uuid::now_v7(), "k2", "ep", "h").await.unwrap(), None);

    // A record past its retention binds nothing: the key is claimed afresh, for any request.
    sqlx::query("UPDATE idempotency_keys SET expires_at = 1 WHERE idempotency_key = 'k2'")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(idempotency::lookup(&mut conn, m, "k2", "ep", "another").await.unwrap(), None);
    drop(conn);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(idempotency::claim(&mut tx, m, "k2", "ep", "another").await.unwrap(), Claim::Owned);
    idempotency::complete(&mut tx, m, "k2", 201, "third").await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(
        idempotency::lookup(&mut conn, m, "k2", "ep", "another").await.unwrap(),
        Some(Claim::Replay { status: 201, body: "third".into() })
    );
}

/// Runs `depositd --database-url <db> <args>` (another process on the same database).
fn cli(db: &TestDb, args: &[&str]) {
    let output = depositd().arg("--database-url").arg(db.url.expose()).args(args).output().unwrap();
    assert!(output.status.success(), "depositd {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Polls `GET /api/v1/invoices` with `key` for up to 2 s until it is refused; returns the refusal.
async fn refused_within_two_seconds(app: &TestApp, key: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let response = app.client.get(app.url("/api/v1/invoices")).header("x-api-key", key).send().await.unwrap();
        if response.status() != 200 || tokio::time::Instant::now() >= deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_revocation_by_another_process_is_honoured_within_a_second(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Revoked Elsewhere", &Scope::ALL).await;
    let (_, other_key) = app.merchant("Untouched", &Scope::ALL).await;
    // Known (cached) keys.
    assert_eq!(app.create_invoice(&key, json!({"amount": "10"})).await.status(), 201);
    assert_eq!(app.get_json(&other_key, "/api/v1/invoices").await.0, 200);
    let key_id = api_keys::list(&mut app.store.conn().await.unwrap(), merchant.id).await.unwrap()[0].id;
    cli(&db, &["api-key", "revoke", &key_id.to_string()]);
    assert_error(refused_within_two_seconds(&app, &key).await, 401, "api_key_revoked", None).await;
    // Refused from then on, on every route; other keys are unaffected.
    assert_error(app.create_invoice(&key, json!({"amount": "10"})).await, 401, "api_key_revoked", None).await;
    assert_eq!(app.create_invoice(&other_key, json!({"amount": "10"})).await.status(), 201);
}

async fn a_deactivation_by_another_process_is_honoured_within_a_second(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Closed Elsewhere", &Scope::ALL).await;
    assert_eq!(app.create_invoice(&key, json!({"amount": "10"})).await.status(), 201);
    cli(&db, &["merchant", "deactivate", "--merchant", &merchant.id.to_string()]);
    assert_error(refused_within_two_seconds(&app, &key).await, 401, "merchant_inactive", None).await;
    assert_error(app.create_invoice(&key, json!({"amount": "10"})).await, 401, "merchant_inactive", None).await;
    // Failures are not cached: activated again (elsewhere too), the key works again.
    cli(&db, &["merchant", "activate", "--merchant", &merchant.id.to_string()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut status = 0;
    while tokio::time::Instant::now() < deadline {
        status = app.create_invoice(&key, json!({"amount": "10"})).await.status().as_u16();
        if status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 201, "the key works again once its shop is active");
}

fn request(amount: &str, currency: &str, external_id: Option<&str>, callback_url: Option<&str>) -> InvoiceRequest {
    InvoiceRequest {
        amount: amount.parse().unwrap(),
        currency: Some(currency.into()),
        external_id: external_id.map(str::to_owned),
        details: InvoiceDetails { callback_url: callback_url.map(str::to_owned), ..InvoiceDetails::default() },
        ..InvoiceRequest::default()
    }
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.store.pool()).await.unwrap();
    n
}

/// The group commit's core: requests made in one transaction each get their invoice (its own
/// address, its fee, its `invoice.created` and deliveries) or their own error.
async fn invoices_made_together_each_get_their_own_answer(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Together", &Scope::ALL).await;
    let callback = "https://example.com/callback";
    let mut tx = app.store.begin().await.unwrap();
    let made = invoicing::create_many(
        &mut tx,
        app.state.invoicing(),
        vec![
            (&merchant, request("10", "USD", Some("a"), None)),
            (&merchant, request("10", "XYZ", None, None)),
            (&merchant, request("25", "USD", Some("b"), Some(callback))),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(made.len(), 3);
    assert!(matches!(made[1], Err(InvoicingError::UnsupportedCurrency(_))), "{:?}", made[1].as_ref().err());
    let (a, a_resource) = made[0].as_ref().unwrap();
    let (b, _) = made[2].as_ref().unwrap();
    assert_ne!(a.address, b.address);
    assert_ne!(a.deposit_address_id, b.deposit_address_id);
    assert_eq!(a_resource.id, a.id);
    let mut conn = app.store.conn().await.unwrap();
    // Each one's own fee, by the merchant's schedule for its asset.
    assert_ne!(a.amount_base_units, b.amount_base_units);
    for invoice in [a, b] {
        let schedule = merchants::fee_schedule(&mut conn, &merchant, &invoice.asset, invoice.decimals).await.unwrap();
        assert_eq!(invoice.fee_base_units, schedule.fee_on(invoice.amount_base_units).unwrap());
        assert!(!invoice.fee_base_units.is_zero());
    }
    for invoice in [a, b] {
        let stored = depositd_core::store::invoices::get(&mut conn, merchant.id, invoice.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.address, stored.amount_base_units, stored.fee_base_units, stored.external_id.clone()),
            (invoice.address, invoice.amount_base_units, invoice.fee_base_units, invoice.external_id.clone())
        );
        assert_eq!(events::types_for(&mut conn, invoice.id).await.unwrap(), vec!["invoice.created".to_owned()]);
    }
    drop(conn);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM invoices").await, 2, "the refused request made nothing");
    // Only b has a callback URL: one delivery, to it.
    let deliveries: Vec<(String,)> =
        sqlx::query_as("SELECT url FROM webhook_deliveries").fetch_all(app.store.pool()).await.unwrap();
    assert_eq!(deliveries, vec![(callback.to_owned(),)]);
}

/// What fails a batch fails all of it: an `external_id` taken twice in it (the group commit never
/// puts two in one batch, nor one the merchant has: that is the request's own 409). Nothing of
/// it stays. And the batch's keys: claimed together, a taken one left out, a refused request's
/// claim released.
async fn a_batch_with_a_taken_external_id_or_key_writes_nothing(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Taken", &Scope::ALL).await;
    let mut tx = app.store.begin().await.unwrap();
    invoicing::create(&mut tx, app.state.invoicing(), &merchant, request("10", "USD", Some("order-1"), None))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (addresses, events_before) = (
        count(&app, "SELECT COUNT(*) FROM deposit_addresses WHERE pooled = 0").await,
        count(&app, "SELECT COUNT(*) FROM events").await,
    );

    // One the merchant has: that request's own error, the others are made.
    let mut tx = app.store.begin().await.unwrap();
    let made = invoicing::create_many(
        &mut tx,
        app.state.invoicing(),
        vec![
            (&merchant, request("10", "USD", Some("order-1"), None)),
            (&merchant, request("10", "XYZ", Some("order-1"), None)),
        ],
    )
    .await
    .unwrap();
    // (Its own fields are judged first, as when the insert came last.)
    assert!(matches!(made[0], Err(InvoicingError::ExternalIdTaken)), "{:?}", made[0].as_ref().err());
    assert!(matches!(made[1], Err(InvoicingError::UnsupportedCurrency(_))), "{:?}", made[1].as_ref().err());
    tx.rollback().await.unwrap();
    // Twice in one batch: the batch fails.
    let mut tx = app.store.begin().await.unwrap();
    let batch = invoicing::create_many(
        &mut tx,
        app.state.invoicing(),
        vec![
            (&merchant, request("10", "USD", Some("order-2"), None)),
            (&merchant, request("10", "USD", Some("order-2"), None)),
        ],
    )
    .await;
    assert!(matches!(batch, Err(StoreError::Conflict("external_id"))), "{:?}", batch.err());
    tx.rollback().await.unwrap();
    assert_eq!(count(&app, "SELECT COUNT(*) FROM invoices").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM deposit_addresses WHERE pooled = 0").await, addresses);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM events").await, events_before);

    // Keys: a batch claims the keys no one holds, and one recorded before is not claimed again.
    let m = merchant.id;
    let key = |key, request_hash| Presented { merchant_id: m, key, endpoint: "ep", request_hash };
    let mut tx = app.store.begin().await.unwrap();
    assert_eq!(idempotency::claim_many(&mut tx, &[key("k1", "h1")]).await.unwrap(), vec![(m, "k1".to_owned())]);
    let done = Completed { merchant_id: m, key: "k1", status: 201, body: "one" };
    idempotency::complete_many(&mut tx, &[done]).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = app.store.begin().await.unwrap();
    let claimed = idempotency::claim_many(&mut tx, &[key("k2", "h1"), key("k1", "h2")]).await.unwrap();
    assert_eq!(claimed, vec![(m, "k2".to_owned())], "k1 is taken");
    // Completing a key this transaction did not claim is refused.
    assert!(idempotency::complete_many(&mut tx, &[Completed { key: "k9", ..done }]).await.is_err());
    tx.rollback().await.unwrap();
    // A claim released in its transaction (its request was refused) leaves no record.
    let mut tx = app.store.begin().await.unwrap();
    idempotency::claim_many(&mut tx, &[key("k3", "h1")]).await.unwrap();
    idempotency::release_many(&mut tx, &[(m, "k3")]).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        idempotency::lookup(&mut conn, m, "k1", "ep", "h1").await.unwrap(),
        Some(Claim::Replay { status: 201, body: "one".into() })
    );
    assert_eq!(idempotency::lookup(&mut conn, m, "k2", "ep", "h1").await.unwrap(), None, "rolled back");
    assert_eq!(idempotency::lookup(&mut conn, m, "k3", "ep", "h1").await.unwrap(), None, "released");
}

/// Many creations at once over HTTP (the group commit batches what arrives together): each
/// answers as it would alone. Distinct keys make distinct invoices; one key shared by many
/// makes one invoice and replays it; one `external_id` shared by many makes one invoice and
/// the rest get its conflict; a request refused for its own fields leaves its key free for the
/// corrected retry.
async fn concurrent_creations_answer_as_each_would_alone(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Crowd", &Scope::ALL).await;
    let post = |idem: String, body: serde_json::Value| {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/invoices"), key.clone());
        async move {
            let response = client
                .post(url)
                .header("x-api-key", key)
                .header("Idempotency-Key", idem)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body: serde_json::Value = response.json().await.unwrap();
            (status, replayed, body)
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..48 {
        let (idem, body) = match i % 4 {
            0 => (format!("distinct-{i}"), json!({"amount": format!("{}", 10 + i)})),
            1 => ("shared".to_owned(), json!({"amount": "7"})),
            2 => (format!("ext-{i}"), json!({"amount": "5", "external_id": "order-x"})),
            _ => (format!("bad-{i}"), json!({"amount": "5", "currency": "XYZ"})),
        };
        let request = post(idem, body);
        tasks.spawn(async move { (i, request.await) });
    }
    let answers = tasks.join_all().await;
    let mut ids = HashSet::new();
    let mut addresses = HashSet::new();
    let mut shared = HashSet::new();
    let (mut ext_made, mut ext_refused) = (0, 0);
    for (i, (status, _, body)) in answers {
        match i % 4 {
            0 => {
                assert_eq!(status, 201, "{body}");
                // Its own answer, not another request's of the batch.
                let amount: rust_decimal::Decimal = body["amount"].as_str().unwrap().parse().unwrap();
                assert_eq!(amount, (10 + i).into(), "{body}");
                assert!(ids.insert(body["id"].as_str().unwrap().to_owned()));
                assert!(addresses.insert(body["pay"]["address"].as_str().unwrap().to_owned()));
            }
            1 => {
                assert_eq!(status, 201, "{body}");
                shared.insert(body.to_string());
            }
            2 if status == 201 => ext_made += 1,
            2 => {
                assert_eq!((status, body["error"]["code"].as_str()), (409, Some("external_id_conflict")), "{body}");
                ext_refused += 1;
            }
            _ => assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unsupported_currency")), "{body}"),
        }
    }
    assert_eq!(shared.len(), 1, "one key shared by 12 requests: one response, replayed");
    assert_eq!((ext_made, ext_refused), (1, 11));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM invoices").await, 12 + 1 + 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM events WHERE event_type = 'invoice.created'").await, 14);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM deposit_addresses WHERE pooled = 0").await,
        14,
        "no address taken and lost"
    );
    // Every key made replays its own invoice; a refused one is free for the corrected request.
    for i in (0..48).step_by(4) {
        let (status, replayed, body) = post(format!("distinct-{i}"), json!({"amount": format!("{}", 10 + i)})).await;
        assert_eq!((status, replayed), (201, true));
        assert!(ids.contains(body["id"].as_str().unwrap()));
        let (status, replayed, body) = post(format!("bad-{}", i + 3), json!({"amount": "5"})).await;
        assert_eq!((status, replayed), (201, false), "{body}");
    }
}
