//! `/api/v1/api-keys` over real HTTP on both backends: create (secret once, idempotent), list,
//! get, revoke (401 within a second), what a key may grant, and `last_used_at`.

use std::time::{Duration, Instant};

use depositd_core::api_key::Scope;
use depositd_core::store::{api_keys, events};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, assert_error, both_backends};

both_backends!(
    create_list_revoke,
    what_a_key_may_grant,
    idempotent_create,
    last_use_is_noted_once_a_minute,
    a_revocation_is_refused_as_soon_as_it_commits,
);

async fn post(app: &TestApp, key: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    let request = app.client.post(app.url(path)).header("x-api-key", key);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

async fn create_list_revoke(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, admin) =
        app.merchant("Rotator", &[Scope::ApiKeysRead, Scope::ApiKeysWrite, Scope::InvoicesRead]).await;

    let response =
        post(&app, &admin, "/api/v1/api-keys", Some(json!({"scopes": ["invoices:read"], "name": "billing"}))).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        (created["object"].as_str(), created["mode"].as_str(), created["status"].as_str()),
        (Some("api_key"), Some("test"), Some("active"))
    );
    assert_eq!(created["scopes"], json!(["invoices:read"]));
    assert_eq!(created["name"], "billing");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("dk_test_") && secret.starts_with(created["display_prefix"].as_str().unwrap()));
    let admin_id = api_keys::list(&mut app.store.conn().await.unwrap(), merchant.id).await.unwrap()[0].id;
    assert_eq!(created["created_by"], format!("api_key:{admin_id}"));

    // The new key works, within its scope.
    let (status, _) = app.get_json(&secret, "/api/v1/invoices").await;
    assert_eq!(status, 200);
    assert_error(
        app.client.get(app.url("/api/v1/balances")).header("x-api-key", &secret).send().await.unwrap(),
        403,
        "insufficient_scope",
        None,
    )
    .await;

    // Listed and fetched without the secret, newest first.
    let id = created["id"].as_str().unwrap();
    let (status, listed) = app.get_json(&admin, "/api/v1/api-keys").await;
    assert_eq!(status, 200);
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], id);
    assert!(data.iter().all(|k| k.get("secret").is_none()), "{listed}");
    let (_, page) = app.get_json(&admin, "/api/v1/api-keys?limit=1").await;
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (1, Some(true)));
    let (status, fetched) = app.get_json(&admin, &format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, 200);
    assert!(fetched.get("secret").is_none());
    // The answers are what the OpenAPI document says, and so is the request.
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    crate::openapi::assert_valid(&document, "ApiKeyResource", &created);
    crate::openapi::assert_valid(&document, "ApiKeyResource", &fetched);
    crate::openapi::assert_valid(&document, "ApiKeyList", &listed);
    crate::openapi::assert_valid(&document, "CreateApiKey", &json!({"scopes": ["invoices:read"], "name": "billing"}));
    assert!(document["paths"]["/api/v1/api-keys/{id}/revoke"]["post"]["responses"].get("404").is_some());

    // Another merchant's keys are not there.
    let (_, other) = app.merchant("Other", &[Scope::ApiKeysRead, Scope::ApiKeysWrite]).await;
    let (status, _) = app.get_json(&other, &format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(status, 404);
    assert_error(
        post(&app, &other, &format!("/api/v1/api-keys/{id}/revoke"), None).await,
        404,
        "resource_missing",
        None,
    )
    .await;

    // Warm the key cache with the key, then revoke it: refused within a second.
    let (status, _) = app.get_json(&secret, "/api/v1/invoices").await;
    assert_eq!(status, 200);
    let response = post(&app, &admin, &format!("/api/v1/api-keys/{id}/revoke"), None).await;
    assert_eq!(response.status(), 200);
    let revoked: Value = response.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], format!("api_key:{admin_id}"));
    let revoked_at = Instant::now();
    loop {
        let response = app.client.get(app.url("/api/v1/invoices")).header("x-api-key", &secret).send().await.unwrap();
        if response.status() == 401 {
            assert_error(response, 401, "api_key_revoked", None).await;
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "a revoked key still works after a second");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Revoking again changes nothing and records nothing more.
    let again: Value = post(&app, &admin, &format!("/api/v1/api-keys/{id}/revoke"), None).await.json().await.unwrap();
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        events::types_for(&mut conn, id.parse().unwrap()).await.unwrap(),
        ["api_key.created", "api_key.revoked"]
    );

    assert_error(
        post(&app, &admin, "/api/v1/api-keys/not-a-uuid/revoke", None).await,
        400,
        "invalid_parameter",
        Some("id"),
    )
    .await;
}

async fn what_a_key_may_grant(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    // The default scopes cannot list or mint keys.
    let (_, ordinary) = app.merchant("Plain", &Scope::MERCHANT).await;
    assert_error(
        app.client.get(app.url("/api/v1/api-keys")).header("x-api-key", &ordinary).send().await.unwrap(),
        403,
        "insufficient_scope",
        None,
    )
    .await;
    assert_error(
        post(&app, &ordinary, "/api/v1/api-keys", Some(json!({"scopes": ["invoices:read"]}))).await,
        403,
        "insufficient_scope",
        None,
    )
    .await;

    let (_, minter) = app.merchant("Minter", &[Scope::ApiKeysWrite, Scope::InvoicesRead, Scope::Operator]).await;
    let create = |body: Value| post(&app, &minter, "/api/v1/api-keys", Some(body));
    assert_error(create(json!({"scopes": ["payouts:write"]})).await, 403, "scope_not_held", Some("scopes")).await;
    assert_error(create(json!({"scopes": ["operator"]})).await, 403, "scope_not_grantable", Some("scopes")).await;
    assert_error(
        create(json!({"scopes": ["invoices:read"], "mode": "live"})).await,
        403,
        "key_mode_mismatch",
        Some("mode"),
    )
    .await;
    assert_error(create(json!({"scopes": []})).await, 400, "parameter_missing", Some("scopes")).await;
    assert_error(create(json!({"scopes": ["invoices:fly"]})).await, 400, "invalid_scope", Some("scopes[0]")).await;
    assert_error(
        create(json!({"scopes": ["invoices:read"], "mode": "demo"})).await,
        400,
        "invalid_parameter",
        Some("mode"),
    )
    .await;
    assert_error(
        create(json!({"scopes": ["invoices:read"], "name": ""})).await,
        400,
        "invalid_parameter",
        Some("name"),
    )
    .await;
    assert_error(
        create(json!({"scopes": ["invoices:read"], "extra": 1})).await,
        400,
        "unknown_parameter",
        Some("extra"),
    )
    .await;
    // A key that can mint may pass that on, but only within what it holds.
    let response = create(json!({"scopes": ["api_keys:write", "invoices:read"]})).await;
    assert_eq!(response.status(), 201);
    let child: Value = response.json().await.unwrap();
    let child_secret = child["secret"].as_str().unwrap();
    let response = post(&app, child_secret, "/api/v1/api-keys", Some(json!({"scopes": ["ledger:read"]}))).await;
    assert_error(response, 403, "scope_not_held", Some("scopes")).await;
    // Nor may it revoke a key with more power than it has (its parent, which has operator).
    let parent_id = child["created_by"].as_str().unwrap().strip_prefix("api_key:").unwrap().to_owned();
    let response = post(&app, child_secret, &format!("/api/v1/api-keys/{parent_id}/revoke"), None).await;
    assert_error(response, 403, "scope_not_grantable", Some("scopes")).await;
}

async fn idempotent_create(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, admin) = app.merchant("Retry", &[Scope::ApiKeysWrite, Scope::InvoicesRead]).await;
    let send = |body: Value| {
        app.client
            .post(app.url("/api/v1/api-keys"))
            .header("x-api-key", &admin)
            .header("Idempotency-Key", "rotate-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"scopes": ["invoices:read"]})).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let replay = send(json!({"scopes": ["invoices:read"]})).await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    // The same key, without its secret: a secret is never stored, not even for a replay.
    assert!(first["secret"].as_str().is_some_and(|s| s.starts_with("dk_test_")));
    assert!(replay.get("secret").is_none(), "{replay}");
    let mut without_secret = first.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(replay, without_secret, "the same key: no second one");
    let mut conn = app.store.conn().await.unwrap();
    let stored: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT response_body FROM idempotency_keys").fetch_all(&mut *conn).await.unwrap();
    assert!(!stored.is_empty());
    let secret = first["secret"].as_str().unwrap();
    assert!(
        !stored.iter().any(|(body,)| body.as_deref().is_some_and(|b| b.contains(secret))),
        "the secret is not stored"
    );
    drop(conn);
    assert_eq!(api_keys::list(&mut app.store.conn().await.unwrap(), merchant.id).await.unwrap().len(), 2);
    let other = send(json!({"scopes": ["invoices:read"], "name": "x"})).await.unwrap();
    assert_error(other, 409, "idempotency_conflict", Some("Idempotency-Key")).await;
}

async fn last_use_is_noted_once_a_minute(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, secret) = app.merchant("Used", &[Scope::ApiKeysRead]).await;
    let key = secret.as_str();
    let (_, listed) = app.get_json(key, "/api/v1/api-keys").await;
    let id = listed["data"][0]["id"].as_str().unwrap().parse().unwrap();
    // The first use is written in the background.
    let started = Instant::now();
    let first = loop {
        let mut conn = app.store.conn().await.unwrap();
        if let Some(at) = api_keys::get(&mut conn, merchant.id, id).await.unwrap().unwrap().last_used_at {
            break at;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "last_used_at never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..5 {
        let (status, _) = app.get_json(key, "/api/v1/api-keys").await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = app.store.conn().await.unwrap();
    let record = api_keys::get(&mut conn, merchant.id, id).await.unwrap().unwrap();
    assert_eq!(record.last_used_at, Some(first), "uses within the minute write nothing");
    let (_, listed) = app.get_json(key, "/api/v1/api-keys").await;
    assert_eq!(listed["data"][0]["last_used_at"], first.div_euclid(1000));
}

/// A request that authenticates while a revocation is written but not yet committed reads (and
/// caches) the old row; the moment the revocation commits, the key is refused all the same.
async fn a_revocation_is_refused_as_soon_as_it_commits(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Cache Shop", &[Scope::InvoicesRead]).await;
    let id = api_keys::list(&mut app.store.conn().await.unwrap(), merchant.id).await.unwrap()[0].id;
    // Its use is noted now, so the request below only reads.
    assert_eq!(app.get_json(&key, "/api/v1/invoices").await.0, 200);
    let mut tx = app.store.begin().await.unwrap();
    depositd_core::api_keys::revoke(&mut tx, merchant.id, id, depositd_core::api_keys::Grantor::Operator)
        .await
        .unwrap();
    assert_eq!(app.get_json(&key, "/api/v1/invoices").await.0, 200, "not committed yet");
    tx.commit().await.unwrap();
    assert_eq!(app.get_json(&key, "/api/v1/invoices").await.0, 401, "refused as soon as the revocation commits");
}
