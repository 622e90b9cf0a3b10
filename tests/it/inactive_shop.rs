//! An inactive shop, on both backends with a real anvil chain and the real `depositd` binary:
//! `merchant deactivate` makes its API keys a 401 `merchant_inactive`, while a payment to its
//! invoice is still recorded, confirmed and credited to it (money is never lost because a shop
//! was switched off); `merchant activate` makes its keys work again.

use depositd_core::api_key::Scope;
use depositd_core::invoice::InvoiceStatus;
use depositd_core::ledger::{self, Account, AccountKind};
use depositd_core::money::BaseUnits;
use depositd_core::store::{events, invoices};
use depositd_testkit::chain::TestChain;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, assert_error, both_backends, depositd, use_test_chain};

both_backends!(an_inactive_shop_is_refused_but_its_payments_are_still_credited);

/// The dev chain of the test configuration (`anvil`).
const CHAIN: u64 = 31337;

/// Runs `depositd --database-url <db> <args>`; returns stdout, asserting success.
fn cli(db: &TestDb, args: &[&str]) -> String {
    let output = depositd().arg("--database-url").arg(db.url.expose()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "depositd {args:?} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn an_inactive_shop_is_refused_but_its_payments_are_still_credited(db: TestDb) {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut chain_config = None;
    let app = TestApp::spawn_with(&db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 2, &[("USDC", usdc)]);
        chain_config = Some(c.chains[0].clone());
    })
    .await;
    let mut watcher = app.watcher(&chain_config.unwrap());
    let (merchant, key) = app.merchant("Sleepy Shop", &Scope::ALL).await;
    let invoice = app.created_invoice(&key, json!({"amount": "25", "asset": "USDC"})).await;
    let invoice_id: Uuid = invoice["id"].as_str().unwrap().parse().unwrap();
    let invoice_path = format!("/api/v1/invoices/{invoice_id}");

    // Deactivated by name through the real binary; doing it again says so and changes nothing.
    let said = cli(&db, &["merchant", "deactivate", "--merchant", "Sleepy Shop"]);
    assert!(said.starts_with(&format!("Sleepy Shop ({}) deactivated", merchant.id)), "{said}");
    let said = cli(&db, &["merchant", "deactivate", "--merchant", &merchant.id.to_string()]);
    assert_eq!(said, format!("Sleepy Shop ({}) is already inactive: its API keys are refused", merchant.id));
    let listed = cli(&db, &["merchant", "list"]);
    assert!(listed.contains(&format!("{}\tdisabled\tSleepy Shop", merchant.id)), "{listed}");
    let unknown = depositd()
        .arg("--database-url")
        .arg(db.url.expose())
        .args(["merchant", "deactivate", "--merchant", "Nobody"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no merchant with id or name \"Nobody\""));

    // Deactivated by another process: the API honours it within a second (its cache of a known
    // key lives at most that long), so wait up to 2 s for the first refusal.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline
        && app.client.get(app.url(&invoice_path)).header("x-api-key", &key).send().await.unwrap().status() == 200
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Its key is refused everywhere, reads and writes alike.
    let refused = |response: reqwest::Response| async move {
        let body = assert_error(response, 401, "merchant_inactive", None).await;
        assert!(body["error"]["message"].as_str().unwrap().contains("inactive"), "{body}");
        assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    };
    refused(app.client.get(app.url(&invoice_path)).header("x-api-key", &key).send().await.unwrap()).await;
    refused(app.create_invoice(&key, json!({"amount": "5"})).await).await;
    refused(app.client.get(app.url("/api/v1/balances")).bearer_auth(&key).send().await.unwrap()).await;

    // The customer pays anyway: the payment is detected, confirmed and credited to the shop.
    chain.pay_token(usdc, invoice["pay"]["address"].as_str().unwrap(), 25_000_000).await;
    chain.mine(1).await;
    for _ in 0..100 {
        if !watcher.tick().await.unwrap() {
            break;
        }
    }
    let mut conn = app.store.conn().await.unwrap();
    let stored = invoices::get_any(&mut conn, invoice_id).await.unwrap().unwrap();
    assert_eq!(stored.status, InvoiceStatus::Paid);
    assert_eq!(stored.amount_paid_base_units, BaseUnits::from(25_000_000u64));
    let available = Account::merchant(merchant.id, AccountKind::Available, CHAIN, "USDC");
    // 25 USDC less the merchant's 1% fee.
    assert_eq!(ledger::balance(&mut conn, &available).await.unwrap(), BaseUnits::from(24_750_000u64));
    assert_eq!(
        events::types_for(&mut conn, invoice_id).await.unwrap(),
        ["invoice.created", "invoice.processing", "invoice.paid"]
    );
    drop(conn);
    refused(app.client.get(app.url(&invoice_path)).header("x-api-key", &key).send().await.unwrap()).await;

    // Activated again (by id): the same key works and sees the paid invoice and the credit.
    let said = cli(&db, &["merchant", "activate", "--merchant", &merchant.id.to_string()]);
    assert_eq!(said, format!("Sleepy Shop ({}) activated: its API keys work again", merchant.id));
    let said = cli(&db, &["merchant", "activate", "--merchant", "Sleepy Shop"]);
    assert_eq!(said, format!("Sleepy Shop ({}) is already active", merchant.id));
    let (status, seen) = app.get_json(&key, &invoice_path).await;
    assert_eq!((status, seen["status"].as_str(), seen["amount_paid"].as_str()), (200, Some("paid"), Some("25")));
    let (status, balances) = app.get_json(&key, "/api/v1/balances").await;
    assert_eq!(status, 200, "{balances}");
    let usdc_balance: &Value =
        balances["data"].as_array().unwrap().iter().find(|b| b["asset"] == "USDC").expect("a USDC balance");
    assert_eq!(usdc_balance["available"], "24.75", "{balances}");
    assert_eq!(app.create_invoice(&key, json!({"amount": "5"})).await.status(), 201);
}
