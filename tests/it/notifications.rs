//! Receipts, merchant notifications and balance events (issue 23), on both backends, against
//! real parts: anvil pays, the watcher credits, a real SMTP conversation over TCP with
//! testkit's `SmtpServer` (which counts a message only once it answered `250`), the real
//! `depositd` binary killed mid-send, and testkit's webhook receiver.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::providers::Provider;
use depositd_core::api_key::Scope;
use depositd_core::config::{ChainConfig, SmtpSettings, SmtpTls};
use depositd_core::store::chain_txs;
use depositd_core::store::emails::{self, EmailKind, EmailRecord};
use depositd_testkit::chain::TestChain;
use depositd_testkit::smtp::{Mail, SmtpServer};
use depositd_testkit::webhooks::Receiver;
use depositd_webhooks::{Deliverer, Mailer};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, both_backends, depositd, use_test_chain};

both_backends!(
    receipts_are_sent_once_across_a_mailer_killed_mid_send,
    a_disabled_webhook_endpoint_notifies_the_merchant,
    without_smtp_paying_works_and_no_email_is_queued,
    balance_updated_reports_credit_fee_payout_and_reversal_in_order,
);

const CONFIRMATIONS: u64 = 2;
const OWNER: &str = "owner@shop.example";
const SMTP_PASSWORD: &str = "SmtpPw9d1e7Secret";

struct Setup {
    chain: TestChain,
    usdc: Address,
    app: TestApp,
    key: String,
    merchant: Uuid,
    config: ChainConfig,
}

async fn setup(db: &TestDb) -> Setup {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, CONFIRMATIONS, &[("USDC", usdc)]);
        c.settings.webhooks.allow_http = true;
        c.settings.webhooks.allow_private_targets = true;
        c.settings.webhooks.retry_schedule_secs = vec![0, 0, 0];
        config = Some(c.chains[0].clone());
    })
    .await;
    let (merchant, key) = app.merchant("Mail Shop", &Scope::ALL).await;
    Setup { chain, usdc, app, key, merchant: merchant.id, config: config.unwrap() }
}

impl Setup {
    async fn invoice(&self, body: Value) -> Value {
        let response = self.app.create_invoice(&self.key, body).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.app.get_json(&self.key, path).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn set_owner_email(&self) {
        let mut conn = self.app.store.conn().await.unwrap();
        emails::set_notification_email(&mut conn, self.merchant, Some(OWNER)).await.unwrap();
    }

    async fn emails(&self) -> Vec<EmailRecord> {
        let mut conn = self.app.store.conn().await.unwrap();
        emails::all(&mut conn).await.unwrap()
    }

    /// Pays each `(amount in USD, base units)` to a fresh USDC invoice with a customer e-mail,
    /// confirms them all, and returns the invoices.
    async fn pay(&self, amounts: &[(&str, u64)]) -> Vec<Value> {
        let mut watcher = self.app.watcher(&self.config);
        let mut invoices = Vec::new();
        for (i, (amount, units)) in amounts.iter().enumerate() {
            let invoice = self
                .invoice(json!({
                    "amount": amount, "currency": "USD", "asset": "USDC",
                    "customer_email": format!("payer{i}@example.com"), "description": format!("Order {i}"),
                }))
                .await;
            self.chain.pay_token(self.usdc, invoice["pay"]["address"].as_str().unwrap(), *units).await;
            invoices.push(invoice);
        }
        self.chain.mine(CONFIRMATIONS).await;
        while watcher.tick().await.unwrap() {}
        for invoice in &invoices {
            let current = self.get(&format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await;
            assert_eq!(current["status"], "paid", "{current}");
        }
        invoices
    }

    fn deliverer(&self) -> Deliverer {
        let state = &self.app.state;
        Deliverer::new(
            state.store.clone(),
            &state.wallet,
            state.config.settings.webhooks.clone(),
            state.metrics.clone(),
        )
    }

    async fn drain(&self, worker: &Deliverer) {
        for _ in 0..200 {
            if worker.tick().await.unwrap() == 0 {
                return;
            }
        }
        panic!("the webhook queue did not drain");
    }

    /// A configuration file for the real binary on the test's database and wallet, with `[smtp]`
    /// at `port` (plain, with credentials, short timeouts).
    fn write_config(&self, dir: &Path, port: u16) -> PathBuf {
        let config = dir.join("depositd.toml");
        let mnemonic = self.app.state.config.settings.wallet.mnemonic().unwrap();
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"{}\"\n\n[wallet]\nmnemonic = \"{}\"\n\n[smtp]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 tls = \"none\"\nusername = \"mailer\"\npassword = \"{SMTP_PASSWORD}\"\n\
                 from = \"Mail Shop <receipts@shop.example>\"\ntimeout_secs = 5\nretry_schedule_secs = [1, 1, 1]\n\
                 poll_interval_ms = 200\n",
                self.app.state.config.settings.database.url.expose(),
                mnemonic.expose_secret()
            ),
        )
        .unwrap();
        config
    }
}

/// `depositd run --only mail` with `config`, its output to `log`.
fn spawn_mailer(config: &Path, log: &Path) -> std::process::Child {
    let out = std::fs::File::create(log).unwrap();
    depositd()
        .arg("--config")
        .arg(config)
        .args(["run", "--only", "mail"])
        .env("RUST_LOG", "debug")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("the depositd binary starts")
}

fn to(mail: &Mail) -> &str {
    mail.to.first().map(String::as_str).unwrap_or_default()
}

async fn receipts_are_sent_once_across_a_mailer_killed_mid_send(db: TestDb) {
    let s = setup(&db).await;
    // This process writes as one with [smtp] configured does.
    s.app.store.set_mail_enabled(true);
    s.set_owner_email().await;
    let amounts = [("10.5", 10_500_000u64), ("20", 20_000_000), ("7.25", 7_250_000)];
    let invoices = s.pay(&amounts).await;

    // Each paid invoice queued a receipt to its customer and a notification to the merchant,
    // in the transaction that paid it.
    let queued = s.emails().await;
    assert_eq!(queued.len(), 6, "{queued:#?}");
    assert!(queued.iter().all(|e| e.state == "pending" && e.attempt_count == 0));

    // The mailer (the real binary) sends the first e-mail; the server reads it to its end and
    // holds its answer; the mailer is killed meanwhile. The server never acknowledged it, so it
    // counts nothing, and the daemon recorded nothing.
    let server = SmtpServer::start().await;
    server.hold_next();
    let dir = tempfile::tempdir().unwrap();
    let config = s.write_config(dir.path(), server.port());
    let mut first = spawn_mailer(&config, &dir.path().join("first.log"));
    assert!(server.until_held(Duration::from_secs(60)).await, "the mailer never sent a message");
    first.kill().unwrap(); // SIGKILL, mid-send
    first.wait().unwrap();
    assert!(server.mails().is_empty());
    assert!(s.emails().await.iter().all(|e| e.state == "pending" && e.attempt_count == 0));

    // Restarted, it sends every e-mail, the interrupted one again once its claim has run out.
    let mut second = spawn_mailer(&config, &dir.path().join("second.log"));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = s.emails().await;
        if rows.iter().all(|e| e.state == "sent") {
            break;
        }
        assert!(Instant::now() < deadline, "not every e-mail was sent within 90 s: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing more goes out after every row is sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A clean stop this time (SIGTERM), so its log is complete.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(second.wait().unwrap().success());

    let mails = server.mails();
    assert_eq!(mails.len(), 6, "{mails:#?}");
    let rows = s.emails().await;
    assert!(rows.iter().all(|e| e.attempt_count == 1), "one recorded attempt each: {rows:#?}");
    for (i, (invoice, (_, units))) in invoices.iter().zip(amounts).enumerate() {
        let id = invoice["id"].as_str().unwrap();
        let paid = depositd_core::money::BaseUnits::from(units).to_display(6);
        // Exactly one receipt per paid invoice, to its customer, with the amount paid.
        let receipts: Vec<&Mail> = mails.iter().filter(|m| to(m) == format!("payer{i}@example.com")).collect();
        assert_eq!(receipts.len(), 1, "invoice {i}: {receipts:#?}");
        let body = receipts[0].body();
        assert!(body.contains(&format!("Invoice: {id}")), "{body}");
        assert!(body.contains(&format!("Paid: {paid} USDC on anvil")), "{body}");
        assert!(body.contains(&format!("For: Order {i}")), "{body}");
        let subject = receipts[0].header("Subject").unwrap();
        assert!(subject.contains(&format!("{paid} USDC")), "{subject}");
        assert_eq!(receipts[0].from, "receipts@shop.example");
        // Its Message-ID is fixed by its row: a resend would carry the same one.
        let row = rows.iter().find(|r| r.dedupe_key == format!("receipt:{id}")).unwrap();
        assert_eq!(row.kind, EmailKind::Receipt);
        assert_eq!(receipts[0].header("Message-ID").unwrap(), format!("<{}@shop.example>", row.id));
        // And one notification to the merchant.
        let notices: Vec<&Mail> =
            mails.iter().filter(|m| to(m) == OWNER && m.body().contains(&format!("Invoice {id} was paid"))).collect();
        assert_eq!(notices.len(), 1, "invoice {i}");
        assert!(notices[0].body().contains(&format!("Paid: {paid} USDC on anvil")), "{}", notices[0].body());
    }
    let mut ids: Vec<String> = mails.iter().map(|m| m.header("Message-ID").unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);

    // The server was logged into with the configured credentials; the password is in no log line.
    assert!(!server.logins().is_empty());
    assert!(server.logins().iter().all(|l| l == &format!("mailer:{SMTP_PASSWORD}")));
    for log in ["first.log", "second.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(text.contains("starting depositd"), "{log} is the daemon's log: {text}");
        assert!(!text.contains(SMTP_PASSWORD), "{log} shows the SMTP password: {text}");
    }
}

async fn a_disabled_webhook_endpoint_notifies_the_merchant(db: TestDb) {
    let s = setup(&db).await;
    s.app.store.set_mail_enabled(true);
    s.set_owner_email().await;
    let receiver = Receiver::start().await;
    let gone = receiver.url("/gone");
    let response = s
        .app
        .client
        .post(s.app.url("/api/v1/webhook-endpoints"))
        .header("x-api-key", &s.key)
        .json(&json!({"url": gone, "enabled_events": ["invoice.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: Value = response.json().await.unwrap();
    s.invoice(json!({"amount": "5", "currency": "USD", "asset": "USDC"})).await;
    s.drain(&s.deliverer()).await;

    // 410 Gone disabled the endpoint; its event queued one e-mail to the merchant (and the
    // unpaid invoice none).
    let rows = s.emails().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!((rows[0].kind, rows[0].recipient.as_str()), (EmailKind::WebhookEndpointDisabled, OWNER));

    // The mailer, in-process, sends it over SMTP.
    let server = SmtpServer::start().await;
    let settings = SmtpSettings {
        host: "127.0.0.1".into(),
        port: server.port(),
        tls: SmtpTls::None,
        username: None,
        password: None,
        from: "notifications@shop.example".into(),
        timeout_secs: 5,
        retry_schedule_secs: vec![1],
        poll_interval_ms: 100,
    };
    let mailer = Mailer::new(s.app.store.clone(), &settings).unwrap();
    assert_eq!(mailer.tick().await.unwrap(), 1);
    assert_eq!(mailer.tick().await.unwrap(), 0, "sent once, nothing more due");
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(to(&mails[0]), OWNER);
    assert_eq!(mails[0].header("Subject").unwrap(), format!("Webhook endpoint disabled: {gone}"));
    let body = mails[0].body();
    assert!(body.contains(endpoint["id"].as_str().unwrap()) && body.contains("410"), "{body}");
    assert_eq!(s.emails().await[0].state, "sent");
}

async fn without_smtp_paying_works_and_no_email_is_queued(db: TestDb) {
    let s = setup(&db).await;
    // No [smtp]: the store was opened as every process without it opens it.
    s.set_owner_email().await;
    s.pay(&[("3", 3_000_000)]).await;
    assert!(s.emails().await.is_empty());
}

async fn balance_updated_reports_credit_fee_payout_and_reversal_in_order(db: TestDb) {
    let s = setup(&db).await;
    let receiver = Receiver::start().await;
    let response = s
        .app
        .client
        .post(s.app.url("/api/v1/webhook-endpoints"))
        .header("x-api-key", &s.key)
        .json(&json!({"url": receiver.url("/balances"), "enabled_events": ["balance.updated"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut watcher = s.app.watcher(&s.config);

    // 20 USDC paid (pending, then credit and the 1% fee on confirmation).
    let invoice = s.invoice(json!({"amount": "20", "currency": "USD", "asset": "USDC"})).await;
    s.chain.pay_token(s.usdc, invoice["pay"]["address"].as_str().unwrap(), 20_000_000).await;
    let paid_block = s.chain.provider().get_block_number().await.unwrap();
    s.chain.mine(CONFIRMATIONS).await;
    while watcher.tick().await.unwrap() {}
    // A payout of 5 USDC reserves it.
    {
        let mut conn = s.app.store.conn().await.unwrap();
        chain_txs::store_fee_estimate(&mut conn, s.config.chain_id, 1_000_000_000, 1_000_000_000).await.unwrap();
    }
    let response = s
        .app
        .client
        .post(s.app.url("/api/v1/payouts"))
        .header("x-api-key", &s.key)
        .json(&json!({"asset": "USDC", "amount": "5", "destination": "0x000000000000000000000000000000000000dEaD"}))
        .send()
        .await
        .unwrap();
    let payout: Value = response.json().await.unwrap();
    assert_eq!(payout["status"], "pending", "{payout}");
    // A reorg deeper than the confirmations takes the payment away: its entries are reversed.
    let head = s.chain.provider().get_block_number().await.unwrap();
    s.chain.rpc("anvil_reorg", json!([head - paid_block + 1, []])).await;
    s.chain.mine(1).await;
    while watcher.tick().await.unwrap() {}

    s.drain(&s.deliverer()).await;
    let events: Vec<Value> = receiver.hits().iter().map(|h| h.event()).collect();
    assert!(events.iter().all(|e| e["type"] == "balance.updated"), "{events:#?}");
    let types: Vec<&str> = events.iter().map(|e| e["data"]["entry"]["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["deposit_pending", "deposit_credit", "fee", "payout_reserve", "reversal", "reversal", "reversal"],
        "{events:#?}"
    );
    // Delivered in the order recorded: event ids (time-ordered) and entry ids ascend.
    for pair in events.windows(2) {
        assert!(pair[0]["id"].as_str() < pair[1]["id"].as_str());
        assert!(pair[0]["data"]["entry"]["id"].as_str() < pair[1]["data"]["entry"]["id"].as_str());
    }
    // The reversals undo the fee, the credit and the pending entry, newest first.
    let entry_id = |i: usize| events[i]["data"]["entry"]["id"].clone();
    assert_eq!(events[4]["data"]["entry"]["reverses_entry_id"], entry_id(2));
    assert_eq!(events[5]["data"]["entry"]["reverses_entry_id"], entry_id(1));
    assert_eq!(events[6]["data"]["entry"]["reverses_entry_id"], entry_id(0));

    // Each carries the merchant's postings and the balances right after it, exact.
    let balance = |i: usize, kind: &str| -> String {
        let balances = events[i]["data"]["balances"].as_array().unwrap();
        assert_eq!(balances.len(), 1, "one asset touched");
        assert_eq!(
            (balances[0]["asset"].as_str(), balances[0]["chain_id"].as_u64()),
            (Some("USDC"), Some(s.config.chain_id))
        );
        balances[0][format!("{kind}_base_units")].as_str().unwrap().to_owned()
    };
    let posting = |i: usize, account: &str| -> String {
        let postings = events[i]["data"]["entry"]["postings"].as_array().unwrap();
        let p =
            postings.iter().find(|p| p["account"] == account).unwrap_or_else(|| panic!("{account} in {postings:?}"));
        p["amount_base_units"].as_str().unwrap().to_owned()
    };
    assert_eq!((balance(0, "pending"), balance(0, "available")), ("20000000".into(), "0".into()));
    assert_eq!(posting(0, "pending"), "20000000");
    assert_eq!((balance(1, "pending"), balance(1, "available")), ("0".into(), "20000000".into()));
    assert_eq!((posting(1, "pending"), posting(1, "available")), ("-20000000".into(), "20000000".into()));
    assert_eq!((posting(2, "available"), balance(2, "available")), ("-200000".into(), "19800000".into()));
    assert_eq!((balance(3, "available"), balance(3, "reserved")), ("14800000".into(), "5000000".into()));
    assert_eq!(posting(3, "reserved"), "5000000");
    // The fee comes back, the credit is taken (what available lacks is owed), pending empties.
    assert_eq!(balance(4, "available"), "15000000");
    assert_eq!((balance(5, "available"), balance(5, "receivable")), ("0".into(), "5000000".into()));
    assert_eq!((balance(6, "pending"), balance(6, "reserved")), ("0".into(), "5000000".into()));
    // The last event's balances are the API's.
    let listed = s.get("/api/v1/balances").await;
    let usdc = listed["data"].as_array().unwrap().iter().find(|b| b["asset"] == "USDC").unwrap().clone();
    for kind in ["available", "pending", "reserved", "in_transit", "receivable"] {
        assert_eq!(usdc[format!("{kind}_base_units")].as_str().unwrap(), balance(6, kind), "{kind}");
    }
    assert!(events.iter().all(|e| e["data"]["merchant_id"] == json!(s.merchant)));
}
