//! The creating request's path, on both backends: an `Idempotency-Key` is claimed inside the
//! work's one write transaction (concurrent claims of one key wait for the owner and then replay
//! or proceed), and a known API key is authenticated from a cache that still honours a
//! revocation or a shop's deactivation made by another process within a second.

use std::time::Duration;

use depositd_core::api_key::Scope;
use depositd_core::store::api_keys;
use depositd_core::store::idempotency::{self, Claim};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, assert_error, both_backends, depositd};

both_backends!(
    a_claim_commits_with_the_work_and_a_concurrent_claim_waits_for_it,
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
