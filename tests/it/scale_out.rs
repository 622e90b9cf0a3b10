//! Scale-out on PostgreSQL: two real `depositd run` processes on one database and one anvil chain.
//! One of them holds each chain's watcher lease; killing it with SIGKILL hands the chain to the
//! other within seconds, and every deposit is still credited exactly once, every `invoice.paid`
//! delivered, and the ledger reconciles.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use depositd_core::api_key::Scope;
use depositd_core::wallet::HdWallet;
use depositd_testkit::anvil::{AnvilOptions, free_port};
use depositd_testkit::chain::{TestChain, payer_address};
use depositd_testkit::db::merchant_with_key;
use depositd_testkit::tokens::{self, PAYER_MINT};
use depositd_testkit::webhooks::Receiver;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::cli::{Daemon, start_daemon};
use crate::helpers::{TestDb, depositd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_a_database_and_fail_over_when_the_watcher_leader_dies() {
    crate::helpers::init_tracing();
    let db = TestDb::postgres().await;
    let anvil = AnvilOptions { block_time: Some(1), ..AnvilOptions::default() };
    let chain = TestChain::start_with(anvil, &[("USD Coin", "USDC")], &[payer_address()], U256::from(PAYER_MINT))
        .await
        .unwrap();
    let usdc = chain.tokens[0];

    // One configuration, one database, one chain; each daemon has its own API port.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("chains")).unwrap();
    std::fs::write(
        dir.path().join("chains/anvil.toml"),
        format!(
            "name = \"anvil\"\nchain_id = 31337\nrpc_urls = [\"{}\"]\nconfirmations = 2\nblock_time_ms = 1000\n\
             poll_interval_ms = 250\nmax_block_range = 10000\nstart_block = 0\ntestnet = true\n\n\
             [native]\nsymbol = \"ETH\"\ndecimals = 18\n\n\
             [[tokens]]\nsymbol = \"USDC\"\naddress = \"{}\"\ndecimals = 6\n",
            chain.rpc_url(),
            usdc.to_checksum(None)
        ),
    )
    .unwrap();
    let mnemonic = HdWallet::generate_mnemonic();
    let config = dir.path().join("depositd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n\n[chains]\ndir = \"{}\"\ndefault_asset = \"USDC\"\n\n\
             [wallet]\nmnemonic = \"{}\"\n\n[webhooks]\nallow_http = true\nallow_private_targets = true\n\
             retry_schedule_secs = [1, 1, 1, 1, 1]\npoll_interval_ms = 100\n\n[invoices]\nallow_http_urls = true\n",
            db.url.expose(),
            dir.path().join("chains").display(),
            mnemonic.expose_secret()
        ),
    )
    .unwrap();
    let store = db.store().await;
    let (_, key) = merchant_with_key(&store, "Scale Shop", Decimal::ONE, &Scope::ALL).await.unwrap();
    let key = key.expose_secret().to_owned();

    let ports = [free_port().unwrap(), free_port().unwrap()];
    let daemon = |port: u16| {
        let mut command = depositd();
        command
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("DEPOSITD__API__LISTEN", format!("127.0.0.1:{port}"))
            .env("DEPOSITD__API__PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("RUST_LOG", "info");
        start_daemon(command, true)
    };
    let mut daemons: Vec<Option<Daemon>> = ports.iter().map(|p| Some(daemon(*p))).collect();
    let api = |port: u16| format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let receiver = Receiver::start().await;
    let response = client
        .post(format!("{}/api/v1/webhook-endpoints", api(ports[0])))
        .header("x-api-key", &key)
        .json(&json!({"url": receiver.url("/hooks"), "enabled_events": ["invoice.paid"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let wallet = chain.payer();
    let pay = |port: u16, n: usize| {
        let (client, key, wallet) = (client.clone(), key.clone(), wallet.clone());
        async move {
            let mut ids = Vec::new();
            for i in 0..n {
                let invoice: Value = client
                    .post(format!("{}/api/v1/invoices", api(port)))
                    .header("x-api-key", &key)
                    .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                    .json(&json!({"amount": format!("{}", 3 + i), "currency": "USD"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let to: Address = invoice["pay"]["address"].as_str().unwrap().parse().unwrap();
                let amount: U256 = invoice["pay"]["amount_base_units"].as_str().unwrap().parse().unwrap();
                tokens::transfer(&wallet, usdc, to, amount).await.unwrap();
                ids.push(invoice["id"].as_str().unwrap().to_owned());
            }
            ids
        }
    };
    let all_paid = |port: u16, ids: Vec<String>, within: Duration| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let deadline = Instant::now() + within;
            for id in ids {
                loop {
                    let invoice: Value = client
                        .get(format!("{}/api/v1/invoices/{id}", api(port)))
                        .header("x-api-key", &key)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if invoice["status"] == "paid" {
                        break;
                    }
                    assert!(Instant::now() < deadline, "invoice {id} not paid in time: {invoice}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let holds = |port: u16, lease: &'static str| {
        let client = client.clone();
        async move {
            let Ok(response) = client.get(format!("{}/metrics", api(port))).send().await else { return false };
            let text = response.text().await.unwrap_or_default();
            text.contains(&format!("depositd_lease_held{{lease=\"{lease}\"}} 1"))
        }
    };

    let mut invoices = pay(ports[1], 3).await;
    all_paid(ports[1], invoices.clone(), Duration::from_secs(40)).await;
    let leader = if holds(ports[0], "watcher:anvil").await { 0 } else { 1 };
    assert!(holds(ports[leader], "watcher:anvil").await, "one daemon holds the watcher lease");
    assert!(!holds(ports[1 - leader], "watcher:anvil").await, "and only one");

    // The leader dies without a word; the other daemon takes the chain over.
    let mut killed = daemons[leader].take().unwrap();
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    let survivor = ports[1 - leader];
    let more = pay(survivor, 3).await;
    all_paid(survivor, more.clone(), Duration::from_secs(60)).await;
    invoices.extend(more);
    assert!(holds(survivor, "watcher:anvil").await, "the survivor took the watcher lease");

    // Every invoice.paid was delivered (at least once; the webhook-id makes repeats recognisable).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: std::collections::BTreeSet<String> = receiver
            .hits()
            .iter()
            .filter(|h| h.event_type() == "invoice.paid")
            .map(|h| serde_json::from_str::<Value>(&h.body).unwrap()["data"]["id"].as_str().unwrap().to_owned())
            .collect();
        if delivered == invoices.iter().cloned().collect() {
            break;
        }
        assert!(Instant::now() < deadline, "delivered {delivered:?} of {invoices:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Each deposit credited exactly once, and the chain covers the ledger.
    let output = depositd().arg("--config").arg(&config).args(["ledger", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("OK:"), "{stdout}");
    drop(daemons);
}
