//! Static addresses over real HTTP on both backends, and the paid invoice auto-created for a deposit.

use depositd_core::money::BaseUnits;
use depositd_core::store::{events, static_addresses};
use serde_json::{Value, json};

use crate::helpers::{TEST_USDC, TestApp, TestDb, assert_error, both_backends};

both_backends!(create_list_disable, a_deposit_auto_creates_a_paid_invoice);

async fn create_list_disable(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Rails", &depositd_core::api_key::Scope::ALL).await;
    let post = |body: Value| app.create_static_address(&key, body);

    let created: Value =
        post(json!({"customer_id": "cust-1", "metadata": {"tier": "gold"}})).await.json().await.unwrap();
    assert_eq!(created["object"], "static_address");
    assert_eq!(
        (created["status"].as_str(), created["asset"].as_str(), created["chain_id"].as_u64()),
        (Some("active"), Some("USDC"), Some(31337))
    );
    assert_eq!(created["token_address"], TEST_USDC);
    let address = created["address"].as_str().unwrap();
    assert_eq!(created["payment_uri"], format!("ethereum:{TEST_USDC}@31337/transfer?address={address}"));
    let second: Value = post(json!({"customer_id": "cust-2", "asset": "ETH"})).await.json().await.unwrap();
    assert_ne!(second["address"], created["address"], "each static address is its own HD address");
    assert_eq!(second["payment_uri"], format!("ethereum:{}@31337", second["address"].as_str().unwrap()));

    let id = created["id"].as_str().unwrap();
    let (status, fetched) = app.get_json(&key, &format!("/api/v1/static-addresses/{id}")).await;
    assert_eq!((status, &fetched), (200, &created));
    let (_, all) = app.get_json(&key, "/api/v1/static-addresses").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let (_, one) = app.get_json(&key, "/api/v1/static-addresses?customer_id=cust-2&limit=1").await;
    assert_eq!((one["data"][0]["customer_id"].as_str(), one["has_more"].as_bool()), (Some("cust-2"), Some(false)));

    let disabled: Value = app
        .client
        .post(app.url(&format!("/api/v1/static-addresses/{id}/disable")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disabled["status"], "disabled");
    assert!(disabled["disabled_at"].is_i64());
    let (_, active) = app.get_json(&key, "/api/v1/static-addresses?status=active").await;
    assert_eq!(active["data"].as_array().unwrap().len(), 1);
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        events::types_for(&mut conn, id.parse().unwrap()).await.unwrap(),
        ["static_address.created", "static_address.disabled"]
    );
    drop(conn);
    // Concurrent disables of one address: each answers the disabled address, and the store's
    // compare-and-set lets exactly one of them record `static_address.disabled`.
    let second_id = second["id"].as_str().unwrap();
    let disable = || {
        app.client
            .post(app.url(&format!("/api/v1/static-addresses/{second_id}/disable")))
            .header("x-api-key", &key)
            .send()
    };
    let (a, b, c) = tokio::join!(disable(), disable(), disable());
    for answer in [a, b, c] {
        let answer: Value = answer.unwrap().json().await.unwrap();
        assert_eq!(answer["status"], "disabled", "{answer}");
    }
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        events::types_for(&mut conn, second_id.parse().unwrap()).await.unwrap(),
        ["static_address.created", "static_address.disabled"]
    );
    drop(conn);
    // The interleaving made certain: the second disable starts while the first is uncommitted
    // (on PostgreSQL it read the address as active and waits for the row; on SQLite it waits for
    // the write lock), and is told that it changed nothing once the first commits.
    let third: Value = post(json!({"customer_id": "cust-race"})).await.json().await.unwrap();
    let third_id: uuid::Uuid = third["id"].as_str().unwrap().parse().unwrap();
    let merchant_id = merchant.id;
    let mut first = app.store.begin().await.unwrap();
    let config = app.state.config.clone();
    let done = depositd_core::static_addresses::disable(&mut first, &config, merchant_id, third_id).await.unwrap();
    assert!(done.unwrap().changed);
    let (store, config2) = (app.store.clone(), config.clone());
    let second_disable = tokio::spawn(async move {
        let mut tx = store.begin().await.unwrap();
        let done = depositd_core::static_addresses::disable(&mut tx, &config2, merchant_id, third_id).await.unwrap();
        tx.commit().await.unwrap();
        done.unwrap().changed
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    first.commit().await.unwrap();
    assert!(!second_disable.await.unwrap(), "the second disable changed nothing");
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        events::types_for(&mut conn, third_id).await.unwrap(),
        ["static_address.created", "static_address.disabled"]
    );
    drop(conn);

    assert_error(post(json!({})).await, 400, "parameter_missing", Some("customer_id")).await;
    assert_error(post(json!({"customer_id": "c", "asset": "DOGE"})).await, 400, "unsupported_asset", Some("asset"))
        .await;
    assert_error(
        post(json!({"customer_id": "c", "callback_url": "http://x.example"})).await,
        400,
        "invalid_url",
        Some("callback_url"),
    )
    .await;
    assert_error(post(json!({"customer_id": "c", "memo": "x"})).await, 400, "unknown_parameter", Some("memo")).await;

    // Idempotent creation: the same key yields the same address.
    let idem = |body: Value| {
        app.client
            .post(app.url("/api/v1/static-addresses"))
            .header("x-api-key", &key)
            .header("Idempotency-Key", "rail-1")
            .json(&body)
            .send()
    };
    let a = idem(json!({"customer_id": "cust-3"})).await.unwrap().text().await.unwrap();
    let b = idem(json!({"customer_id": "cust-3"})).await.unwrap().text().await.unwrap();
    assert_eq!(a, b);
}

async fn a_deposit_auto_creates_a_paid_invoice(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Top-ups", &depositd_core::api_key::Scope::ALL).await;
    let created: Value = app
        .create_static_address(&key, json!({"customer_id": "player-9", "metadata": {"account": "A-9"}}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().parse().unwrap();

    let mut tx = app.store.begin().await.unwrap();
    let rail = static_addresses::get(&mut tx, merchant.id, id).await.unwrap().unwrap();
    let asset = app.state.config.chains[0].asset("USDC").unwrap();
    let first =
        static_addresses::create_deposit_invoice(&mut tx, &rail, asset, BaseUnits::from(25_500_000)).await.unwrap();
    let second =
        static_addresses::create_deposit_invoice(&mut tx, &rail, asset, BaseUnits::from(1_000_000)).await.unwrap();
    tx.commit().await.unwrap();
    assert_ne!(first.id, second.id, "one invoice per deposit");

    let (status, invoice) = app.get_json(&key, &format!("/api/v1/invoices/{}", first.id)).await;
    assert_eq!(status, 200);
    assert_eq!(invoice["status"], "paid");
    assert_eq!((invoice["amount"].as_str(), invoice["currency"].as_str()), (Some("25.5"), Some("USDC")));
    assert_eq!(invoice["static_address_id"], created["id"]);
    assert_eq!(invoice["pay"]["address"], created["address"]);
    assert_eq!((invoice["amount_paid"].as_str(), invoice["amount_due"].as_str()), (Some("25.5"), Some("0")));
    assert_eq!((invoice["fee"].as_str(), invoice["merchant_amount"].as_str()), (Some("0.255"), Some("25.245")));
    assert_eq!(invoice["customer_id"], "player-9");
    assert_eq!(invoice["metadata"], json!({"account": "A-9"}));
    assert!(invoice["finished_at"].is_i64());
    let (_, list) = app.get_json(&key, "/api/v1/invoices?customer_id=player-9&status=paid").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
}
