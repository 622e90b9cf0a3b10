//! Test and live keys over real HTTP, on both backends: a `dk_test_` key creates invoices,
//! static addresses, payouts and refunds only on testnet chains and a `dk_live_` key only on
//! mainnet chains; the other way is a 403 `key_mode_mismatch` naming the chain and the key
//! mode. Reads are not restricted.
//!
//! The mainnet is the shipped `chains/base.toml` (testnet = false) beside the dev chain, its RPC
//! pointed at a closed port: nothing here needs a chain, and nothing may reach the real one.

use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::config::ChainConfig;
use depositd_core::money::BaseUnits;
use depositd_core::store::{api_keys, invoices};
use depositd_core::time::now_ms;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, assert_error, both_backends};

both_backends!(keys_create_only_on_chains_of_their_mode, a_key_that_names_no_chain_gets_one_of_its_mode);

const LIVE_ON_ANVIL: &str = "a live key (dk_live_) cannot create on testnet chain anvil; use a test key (dk_test_)";
const TEST_ON_BASE: &str = "a test key (dk_test_) cannot create on mainnet chain base; use a live key (dk_live_)";

/// EIP-55's own example address.
const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

/// The app with the dev chain (`anvil`, a testnet, the default) and Base mainnet enabled.
async fn spawn(db: &TestDb) -> TestApp {
    let mut base = ChainConfig::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chains/base.toml"))
        .expect("the shipped base.toml loads");
    assert!(!base.testnet, "base is a mainnet");
    base.rpc_urls = vec!["http://127.0.0.1:1".into()];
    TestApp::spawn_with(db, |config| config.chains.push(base)).await
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url(path)).header("x-api-key", key).json(&body).send().await.unwrap()
}

/// Asserts a 403 `key_mode_mismatch` with `param` and exactly `message`.
async fn mismatch(response: reqwest::Response, param: Option<&str>, message: &str) {
    let body = assert_error(response, 403, "key_mode_mismatch", param).await;
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    assert_eq!(body["error"]["message"], message, "{body}");
}

async fn created(response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

async fn keys_create_only_on_chains_of_their_mode(db: TestDb) {
    let app = spawn(&db).await;
    let (merchant, test_key) = app.merchant("Two Mode Shop", &Scope::ALL).await;
    let live_key = {
        let mut conn = app.store.conn().await.unwrap();
        let (_, key) = api_keys::create(&mut conn, merchant.id, KeyMode::Live, &Scope::ALL, None).await.unwrap();
        key.expose_secret().to_owned()
    };
    assert!(live_key.starts_with("dk_live_") && test_key.starts_with("dk_test_"));

    // Invoices: on the dev chain for the test key only, on Base for the live key only. `param`
    // is the field that named the chain (a request that names none: see the test below).
    let on_anvil = created(app.create_invoice(&test_key, json!({"amount": "10", "asset": "USDC"})).await).await;
    assert_eq!(on_anvil["pay"]["chain"], "anvil");
    mismatch(
        app.create_invoice(&live_key, json!({"amount": "10", "chain": "anvil"})).await,
        Some("chain"),
        LIVE_ON_ANVIL,
    )
    .await;
    mismatch(
        app.create_invoice(&test_key, json!({"amount": "10", "chain": "base"})).await,
        Some("chain"),
        TEST_ON_BASE,
    )
    .await;
    let on_base =
        created(app.create_invoice(&live_key, json!({"amount": "10", "chain": "base", "asset": "USDC"})).await).await;
    assert_eq!((on_base["pay"]["chain"].as_str(), on_base["pay"]["asset"].as_str()), (Some("base"), Some("USDC")));
    // An unknown chain is still the 400 it was, whatever the key.
    assert_error(
        app.create_invoice(&live_key, json!({"amount": "10", "chain": "nope"})).await,
        400,
        "unsupported_chain",
        Some("chain"),
    )
    .await;

    // Static addresses.
    let path = "/api/v1/static-addresses";
    created(post(&app, &test_key, path, json!({"customer_id": "c1"})).await).await;
    mismatch(
        post(&app, &live_key, path, json!({"customer_id": "c2", "chain": "anvil"})).await,
        Some("chain"),
        LIVE_ON_ANVIL,
    )
    .await;
    mismatch(
        post(&app, &test_key, path, json!({"customer_id": "c3", "chain": "base"})).await,
        Some("chain"),
        TEST_ON_BASE,
    )
    .await;
    let static_on_base =
        created(post(&app, &live_key, path, json!({"customer_id": "c3", "chain": "base"})).await).await;
    assert_eq!(static_on_base["chain"], "base");

    // Payouts: past the mode check the live key on Base meets the next rule (its balance), and
    // the test key on the dev chain likewise.
    let path = "/api/v1/payouts";
    let payout = |chain: Option<&str>| {
        let mut body = json!({"asset": "USDC", "amount": "1", "destination": DEST});
        if let Some(chain) = chain {
            body["chain"] = chain.into();
        }
        body
    };
    mismatch(post(&app, &live_key, path, payout(Some("anvil"))).await, Some("chain"), LIVE_ON_ANVIL).await;
    mismatch(post(&app, &test_key, path, payout(Some("base"))).await, Some("chain"), TEST_ON_BASE).await;
    assert_error(post(&app, &live_key, path, payout(Some("base"))).await, 400, "insufficient_funds", Some("amount"))
        .await;
    assert_error(post(&app, &test_key, path, payout(None)).await, 400, "insufficient_funds", Some("amount")).await;

    // Refunds: the chain is the invoice's (param null).
    for (invoice, key, wrong_key, message) in
        [(&on_anvil, &test_key, &live_key, LIVE_ON_ANVIL), (&on_base, &live_key, &test_key, TEST_ON_BASE)]
    {
        mark_paid(&app, merchant.id, invoice).await;
        let path = format!("/api/v1/invoices/{}/refunds", invoice["id"].as_str().unwrap());
        mismatch(post(&app, wrong_key, &path, json!({"amount": "1", "address": DEST})).await, None, message).await;
        assert_error(
            post(&app, key, &path, json!({"amount": "1", "address": DEST})).await,
            400,
            "insufficient_funds",
            Some("amount"),
        )
        .await;
    }

    // Reads are not restricted: either key reads what the other created.
    for key in [&test_key, &live_key] {
        for invoice in [&on_anvil, &on_base] {
            let (status, seen) =
                app.get_json(key, &format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await;
            assert_eq!((status, &seen["id"]), (200, &invoice["id"]));
        }
        let (status, list) = app.get_json(key, "/api/v1/invoices").await;
        assert_eq!((status, list["data"].as_array().unwrap().len()), (200, 2), "{list}");
        let (status, list) = app.get_json(key, "/api/v1/static-addresses").await;
        assert_eq!((status, list["data"].as_array().unwrap().len()), (200, 2), "{list}");
    }
    // Nothing was made by a refused request.
    let mut conn = app.store.conn().await.unwrap();
    let all = invoices::list(&mut conn, merchant.id, &Default::default(), 100).await.unwrap();
    assert_eq!(all.len(), 2);
}

/// A request that names no chain (and seeds 003 and 004 have no `chain` field) gets the default
/// chain when it suits the key's mode, else the first enabled chain of the key's mode; a server
/// with no chain of that mode answers 403 with a null `param`.
async fn a_key_that_names_no_chain_gets_one_of_its_mode(db: TestDb) {
    let app = spawn(&db).await;
    let (merchant, test_key) = app.merchant("Default Chain Shop", &Scope::ALL).await;
    let live_key = {
        let mut conn = app.store.conn().await.unwrap();
        let (_, key) = api_keys::create(&mut conn, merchant.id, KeyMode::Live, &Scope::ALL, None).await.unwrap();
        key.expose_secret().to_owned()
    };
    let chain_of = |invoice: Value| {
        let app = &app;
        let key = test_key.clone();
        async move {
            let (_, full) = app.get_json(&key, &format!("/api/v1/invoices/{}", invoice.as_str().unwrap())).await;
            full["pay"]["chain"].as_str().unwrap().to_owned()
        }
    };
    let on_test = created(app.create_invoice(&test_key, json!({"amount": "10"})).await).await;
    assert_eq!(chain_of(on_test["id"].clone()).await, "anvil", "the default suits a test key");
    let on_live = created(app.create_invoice(&live_key, json!({"amount": "10"})).await).await;
    assert_eq!(chain_of(on_live["id"].clone()).await, "base", "the first mainnet for a live key");

    let seed_003 = json!({"amount": "15.00", "currency_code": "USD", "customer_id": "u1", "external_id": "o1"});
    let response = post(&app, &live_key, "/api/v1/create-invoice", seed_003).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(chain_of(body["invoice_id"].clone()).await, "base");
    let seed_004 = json!({"amount": 5000, "currency": "usd", "return_url": "https://shop.example.com/done"});
    let response = post(&app, &live_key, "/api/v1/hosted-payments", seed_004.clone()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(chain_of(body["id"].clone()).await, "base");
    let static_address =
        created(post(&app, &live_key, "/api/v1/static-addresses", json!({"customer_id": "c9"})).await).await;
    assert_eq!(static_address["chain"], "base");
    let payout = json!({"asset": "USDC", "amount": "1", "destination": DEST});
    assert_error(post(&app, &live_key, "/api/v1/payouts", payout).await, 400, "insufficient_funds", Some("amount"))
        .await;

    // The dev chain alone: nothing suits a live key.
    let plain = TestApp::spawn(&db).await;
    mismatch(plain.create_invoice(&live_key, json!({"amount": "10"})).await, None, LIVE_ON_ANVIL).await;
    mismatch(post(&plain, &live_key, "/api/v1/hosted-payments", seed_004).await, None, LIVE_ON_ANVIL).await;
    mismatch(
        post(&plain, &live_key, "/api/v1/static-addresses", json!({"customer_id": "c8"})).await,
        None,
        LIVE_ON_ANVIL,
    )
    .await;
}

/// Marks `invoice` paid in full in the store (as a confirmed payment would), so it can be refunded.
async fn mark_paid(app: &TestApp, merchant_id: Uuid, invoice: &Value) {
    let id: Uuid = invoice["id"].as_str().unwrap().parse().unwrap();
    let mut conn = app.store.conn().await.unwrap();
    let read = invoices::get(&mut conn, merchant_id, id).await.unwrap().unwrap();
    let mut paid = read.clone();
    paid.amount_paid_base_units = BaseUnits::from(10_000_000u64);
    paid.status = depositd_core::invoice::InvoiceStatus::Paid;
    paid.finished_at = Some(now_ms());
    invoices::update_payment_state(&mut conn, &read, &paid).await.unwrap();
}
