//! The whole daemon in-process, as `depositd run` builds and runs it (`Daemon::build` with the API
//! on port 0, then `run` under a token the test holds), on both backends: an invoice created over
//! HTTP and paid on anvil turns `paid` and its webhook is delivered; cancelling the token stops
//! every component and `run` returns `Ok`; a component that fails stops the others and makes
//! `run` an error. (What only a real process can show, a SIGKILL or a signal, stays with the
//! tests that spawn the binary: `chaos.rs`, `cli.rs`, `dev.rs`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use depositd::cli::Component;
use depositd::daemon::Daemon;
use depositd_core::api_key::Scope;
use depositd_core::config::{Config, TokenConfig};
use depositd_testkit::chain::TestChain;
use depositd_testkit::db::merchant_with_key;
use depositd_testkit::webhooks::Receiver;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestDb, both_backends, test_config};
use crate::webhooks::verify_official;

both_backends!(
    the_whole_daemon_takes_a_payment_and_stops_on_its_token,
    a_failing_component_stops_the_daemon_with_an_error,
);

/// A merchant (1% fee) and an API key with every scope, written before the daemon starts.
async fn merchant_key(db: &TestDb) -> String {
    let store = db.store().await;
    let (_, key) = merchant_with_key(&store, "Daemon Shop", rust_decimal::Decimal::ONE, &Scope::ALL).await.unwrap();
    store.close().await;
    key.expose_secret().to_owned()
}

/// The test configuration with the API on 127.0.0.1:0 and webhooks allowed to a local receiver.
fn daemon_config(db: &TestDb) -> Config {
    let mut config = test_config(db);
    config.settings.api.listen = "127.0.0.1:0".parse().unwrap();
    config.settings.webhooks.allow_http = true;
    config.settings.webhooks.allow_private_targets = true;
    config
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Nothing answers at `addr` any more (a fresh client: no kept-alive connection to reuse).
async fn assert_api_gone(addr: SocketAddr) {
    let answer = reqwest::Client::new().get(url(addr, "/healthz")).send().await;
    assert!(answer.is_err(), "the API still answers after run returned: {answer:?}");
}

async fn the_whole_daemon_takes_a_payment_and_stops_on_its_token(db: TestDb) {
    // anvil (automine) with a USDC the payer holds.
    let anvil = TestChain::start(&[("USD Coin", "USDC")]).await.expect("anvil starts (npm install provides it)");
    let usdc = anvil.tokens[0];
    let key = merchant_key(&db).await;
    let mut config = daemon_config(&db);
    let chain = &mut config.chains[0];
    chain.rpc_urls = vec![anvil.rpc_url().into()];
    chain.confirmations = 2;
    chain.start_block = Some(0);
    chain.tokens = vec![TokenConfig { symbol: "USDC".into(), address: usdc, decimals: 6 }];

    // Every component, as `depositd run` starts them.
    let daemon = Daemon::build(config, &[]).await.expect("the daemon builds");
    let addr = daemon.api_addr().expect("the API is one of the components");
    assert_ne!(addr.port(), 0, "the bound port, not the one asked for");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(daemon.run(shutdown.clone()));

    let client = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let response = client
        .post(url(addr, "/api/v1/webhook-endpoints"))
        .header("x-api-key", &key)
        .json(&json!({"url": receiver.url("/hooks"), "enabled_events": ["invoice.paid"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: Value = response.json().await.unwrap();
    let secret = endpoint["secret"].as_str().expect("the endpoint's secret is shown at creation").to_owned();

    let response = client
        .post(url(addr, "/api/v1/invoices"))
        .header("x-api-key", &key)
        .json(&json!({"amount": "19.99", "currency": "USD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let invoice: Value = response.json().await.unwrap();
    assert_eq!(invoice["pay"]["asset"], "USDC");

    // Pay on chain and mine the confirmations.
    let amount: u64 = invoice["pay"]["amount_base_units"].as_str().unwrap().parse().unwrap();
    anvil.pay_token(usdc, invoice["pay"]["address"].as_str().unwrap(), amount).await;
    anvil.mine(2).await;

    // The watcher credits it; the webhook worker delivers `invoice.paid`, signed.
    let invoice_url = url(addr, &format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current: Value =
            client.get(&invoice_url).header("x-api-key", &key).send().await.unwrap().json().await.unwrap();
        if current["status"] == "paid" {
            assert_eq!(current["amount_paid"], "19.99");
            break;
        }
        assert!(Instant::now() < deadline, "the invoice was not paid within 60 s: {current}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !receiver.hits().iter().any(|h| h.event_type() == "invoice.paid") {
        assert!(Instant::now() < deadline, "invoice.paid was not delivered within 20 s: {:?}", receiver.hits());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(verify_official(&secret, &receiver.hits()), ["invoice.paid"]);

    // The token stops every component; `run` returns Ok and the API is gone.
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the daemon stops within 30 s of its token")
        .expect("no component panicked");
    stopped.expect("a stop asked for by the token is a clean one");
    assert_api_gone(addr).await;
}

async fn a_failing_component_stops_the_daemon_with_an_error(db: TestDb) {
    // No chain needed: the API and the invoice expiry task.
    let daemon = Daemon::build(daemon_config(&db), &[Component::Api, Component::Expiry]).await.unwrap();
    let addr = daemon.api_addr().unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(daemon.run(shutdown.clone()));
    let client = reqwest::Client::new();
    let health = client.get(url(addr, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // The database loses the table the expiry task works on: its next pass fails, which must
    // take the whole daemon down with an error naming it (never a daemon running half-alive).
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(db.url.expose()).await.unwrap();
    sqlx::query("ALTER TABLE invoices RENAME TO invoices_gone").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let stopped = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("a failed component stops the daemon within 30 s")
        .expect("no component panicked");
    let error = stopped.expect_err("a failed component makes run an error");
    assert!(format!("{error:#}").contains("Expiry failed"), "{error:#}");
    assert!(shutdown.is_cancelled(), "the failure cancelled the token the other components run under");
    assert_api_gone(addr).await;
}
