//! The watcher against a real anvil chain with real ERC-20 and native transfers, on both
//! backends: detection, confirmations, adding up, over/under/late payment, static addresses,
//! look-alike tokens, zero-value transfers, reorgs and restarts, with nothing credited twice.

use alloy::primitives::Address;
use depositd_core::api_key::Scope;
use depositd_core::config::{ChainConfig, TokenConfig};
use depositd_core::store::cursors;
use depositd_core::store::{deposits, events};
use depositd_testkit::chain::TestChain;
use depositd_testkit::tokens::OddTransferToken;
use depositd_watcher::{ChainWatcher, WatchError, WatchedSet};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, both_backends, use_test_chain};

both_backends!(
    erc20_and_native_payments_confirm_exactly_once,
    payments_add_up_and_over_under_late_are_flagged,
    static_address_deposits_and_ignored_transfers,
    a_reorg_drops_a_detected_deposit_and_a_restart_changes_nothing,
    rpc_faults_and_failover_miss_no_deposit,
    a_reorg_that_moves_a_deposit_keeps_it_one_deposit,
    a_deep_reorg_reverses_a_credited_deposit,
    a_restart_mid_backfill_credits_once,
    websocket_heads_wake_the_watcher,
    an_unrepresentable_transfer_is_rejected_not_fatal,
    a_long_range_fetched_concurrently_records_every_deposit,
    a_range_that_does_not_hold_together_is_refused,
    the_watched_set_loads_in_pages,
    a_lagging_nodes_empty_logs_lose_no_deposit,
    a_static_deposit_back_after_a_deep_reorg_pays_its_own_invoice_again,
    a_reversed_partial_payment_leaves_no_underpaid_flag,
    rescan_records_a_missed_deposit_once,
);

/// anvil (automine) with the dev tokens and a look-alike "USDC" that is not allow-listed, the
/// payer holding all three; the app watching it with 2 confirmations.
struct Setup {
    chain: TestChain,
    usdc: Address,
    usdt: Address,
    fake_usdc: Address,
    app: TestApp,
    key: String,
    config: ChainConfig,
}

async fn setup(db: &TestDb) -> Setup {
    let tokens = [("USD Coin", "USDC"), ("Tether", "USDT"), ("Fake USD Coin", "USDC")];
    let chain = TestChain::start(&tokens).await.unwrap();
    let [usdc, usdt, fake_usdc] = chain.tokens[..] else { unreachable!("three tokens deployed") };
    let mut config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 2, &[("USDC", usdc), ("USDT", usdt)]);
        config = Some(c.chains[0].clone());
    })
    .await;
    let (_, key) = app.merchant("Chain Shop", &Scope::ALL).await;
    Setup { chain, usdc, usdt, fake_usdc, app, key, config: config.unwrap() }
}

impl Setup {
    fn watcher(&self) -> ChainWatcher {
        self.app.watcher(&self.config)
    }

    /// Runs the watcher until it has caught up with the head.
    async fn catch_up(&self, watcher: &mut ChainWatcher) {
        for _ in 0..100 {
            if !watcher.tick().await.unwrap() {
                return;
            }
        }
        panic!("the watcher did not catch up");
    }

    async fn invoice(&self, body: Value) -> Value {
        self.app.created_invoice(&self.key, body).await
    }

    async fn get(&self, invoice: &Value) -> Value {
        self.app.get_json(&self.key, &format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await.1
    }

    async fn metrics(&self) -> String {
        let response = self.app.client.get(self.app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        response.text().await.unwrap()
    }

    /// The full reconciliation (store and chain) passes; returns its report.
    async fn reconciles(&self) -> String {
        let state = &self.app.state;
        let outcome = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
        assert!(outcome.is_ok(), "{}", outcome.render());
        outcome.render()
    }

    /// The merchant's balance of `kind` in `asset`, in display units.
    async fn balance(&self, asset: &str, kind: &str) -> String {
        let (_, balances) = self.app.get_json(&self.key, "/api/v1/balances").await;
        let row = balances["data"].as_array().unwrap().iter().find(|b| b["asset"] == asset).unwrap().clone();
        row[kind].as_str().unwrap().to_owned()
    }

    /// The invoice's ledger entries, oldest first.
    async fn ledger(&self, invoice: &Value) -> Vec<Value> {
        let path = format!("/api/v1/ledger?invoice_id={}", invoice["id"].as_str().unwrap());
        let (status, list) = self.app.get_json(&self.key, &path).await;
        assert_eq!(status, 200, "{list}");
        let mut entries = list["data"].as_array().unwrap().clone();
        entries.reverse();
        entries
    }

    async fn events(&self, invoice: &Value) -> Vec<String> {
        let mut conn = self.app.store.conn().await.unwrap();
        events::types_for(&mut conn, invoice["id"].as_str().unwrap().parse().unwrap()).await.unwrap()
    }
}

fn address(invoice: &Value) -> &str {
    invoice["pay"]["address"].as_str().unwrap()
}

async fn erc20_and_native_payments_confirm_exactly_once(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let usdc_invoice = s.invoice(json!({"amount": "19.99"})).await;
    let eth_invoice = s.invoice(json!({"amount": "30", "asset": "ETH"})).await;

    // automine: each transaction is its own block. With 2 confirmations a payment is credited
    // once one more block is on top of its block.
    s.chain.pay_token(s.usdc, address(&usdc_invoice), 19_990_000).await;
    s.catch_up(&mut watcher).await;
    let usdc = s.get(&usdc_invoice).await;
    assert_eq!(usdc["status"], "processing");
    assert_eq!(usdc["payments"][0]["state"], "detected");
    assert_eq!(usdc["payments"][0]["amount"], "19.99");
    assert_eq!(usdc["payments"][0]["confirmations"], 1);

    s.chain.pay_native(address(&eth_invoice), 10_000_000_000_000_000).await;
    s.catch_up(&mut watcher).await;
    assert_eq!(s.get(&usdc_invoice).await["status"], "paid");
    assert_eq!(s.get(&eth_invoice).await["status"], "processing");

    s.chain.mine(1).await;
    s.catch_up(&mut watcher).await;
    let usdc = s.get(&usdc_invoice).await;
    assert_eq!(
        (usdc["status"].as_str(), usdc["amount_paid"].as_str(), usdc["amount_due"].as_str()),
        (Some("paid"), Some("19.99"), Some("0"))
    );
    assert_eq!(usdc["payment_flags"], json!([]));
    assert_eq!(usdc["payments"][0]["state"], "confirmed");
    assert!(usdc["finished_at"].is_i64());
    let eth = s.get(&eth_invoice).await;
    assert_eq!(
        (eth["status"].as_str(), eth["amount_paid_base_units"].as_str()),
        (Some("paid"), Some("10000000000000000"))
    );
    assert!(eth["payments"][0]["log_index"].as_i64().unwrap() < 0, "native transfers use a negative index");
    assert_eq!(s.events(&usdc_invoice).await, ["invoice.created", "invoice.processing", "invoice.paid"]);

    // Replaying everything from genesis (a restart with a lost cursor) credits nothing twice.
    sqlx::query("DELETE FROM chain_cursors").execute(s.app.store.pool()).await.unwrap();
    let mut fresh = s.watcher();
    s.chain.mine(3).await;
    s.catch_up(&mut fresh).await;
    let again = s.get(&usdc_invoice).await;
    assert_eq!((again["amount_paid"].as_str(), again["payments"].as_array().unwrap().len()), (Some("19.99"), 1));
    assert_eq!(s.events(&usdc_invoice).await, ["invoice.created", "invoice.processing", "invoice.paid"]);

    // The ledger: pending on detection, then credit and the merchant's 1% fee, once each even
    // after the replay; balances say what is spendable; everything reconciles with the chain.
    let types: Vec<String> =
        s.ledger(&usdc_invoice).await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["deposit_pending", "deposit_credit", "fee"]);
    assert_eq!(s.balance("USDC", "available").await, "19.7901");
    assert_eq!(s.balance("ETH", "available").await, "0.0099");
    assert_eq!(s.balance("USDC", "pending").await, "0");
    let report = s.reconciles().await;
    assert!(report.contains("anvil USDC: ledger holds 19.99"), "{report}");
    // The deposits API: chain, confirmations and the entries the deposit caused.
    let path = format!("/api/v1/deposits?invoice_id={}", usdc_invoice["id"].as_str().unwrap());
    let (_, deposits) = s.app.get_json(&s.key, &path).await;
    let deposit = &deposits["data"][0];
    assert_eq!(
        (deposit["state"].as_str(), deposit["chain"].as_str()),
        (Some("confirmed"), Some("anvil")),
        "{deposits}"
    );
    assert!(deposit["confirmations"].as_u64().unwrap() >= 2, "{deposit}");
    let entry_types: Vec<&str> =
        deposit["ledger_entries"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(entry_types, ["deposit_pending", "deposit_credit", "fee"]);
    let (status, one) = s.app.get_json(&s.key, &format!("/api/v1/deposits/{}", deposit["id"].as_str().unwrap())).await;
    assert_eq!((status, &one["tx_hash"]), (200, &deposit["tx_hash"]));
}

async fn payments_add_up_and_over_under_late_are_flagged(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let split = s.invoice(json!({"amount": "10"})).await;
    let over = s.invoice(json!({"amount": "10", "asset": "USDT"})).await;
    let late = s.invoice(json!({"amount": "5", "expires_in": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(depositd_api::expiry::expire_once(&s.app.state).await.unwrap(), 1);

    s.chain.pay_token(s.usdc, address(&split), 4_000_000).await;
    s.chain.pay_token(s.usdt, address(&over), 12_000_000).await;
    s.chain.pay_token(s.usdc, address(&late), 5_000_000).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;

    let partial = s.get(&split).await;
    assert_eq!((partial["status"].as_str(), partial["amount_due"].as_str()), (Some("pending"), Some("6")));
    assert_eq!(partial["payment_flags"], json!(["underpaid"]));
    let overpaid = s.get(&over).await;
    assert_eq!((overpaid["status"].as_str(), overpaid["payment_flags"].clone()), (Some("paid"), json!(["overpaid"])));
    let paid_late = s.get(&late).await;
    assert_eq!(
        (paid_late["status"].as_str(), paid_late["payment_flags"].clone()),
        (Some("paid"), json!(["paid_late"]))
    );
    assert!(s.events(&late).await.contains(&"invoice.paid_late".to_owned()));

    // The rest arrives: the two payments add up.
    s.chain.pay_token(s.usdc, address(&split), 6_000_000).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;
    let done = s.get(&split).await;
    assert_eq!(
        (done["status"].as_str(), done["amount_paid"].as_str(), done["payment_flags"].clone()),
        (Some("paid"), Some("10"), json!([]))
    );
    assert_eq!(done["payments"].as_array().unwrap().len(), 2);
}

async fn static_address_deposits_and_ignored_transfers(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let rail: Value =
        s.app.create_static_address(&s.key, json!({"customer_id": "player-1"})).await.json().await.unwrap();
    let rail_address = rail["address"].as_str().unwrap();
    let invoice = s.invoice(json!({"amount": "10"})).await;

    s.chain.pay_token(s.usdc, rail_address, 7_000_000).await;
    s.chain.pay_token(s.usdc, rail_address, 3_000_000).await;
    // Noise: a look-alike "USDC" and a zero-value transfer of the real one, to the invoice.
    s.chain.pay_token(s.fake_usdc, address(&invoice), 10_000_000).await;
    s.chain.pay_token(s.usdc, address(&invoice), 0).await;
    // A USDT payment to a USDC invoice is recorded but not credited.
    s.chain.pay_token(s.usdt, address(&invoice), 10_000_000).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;

    let (_, paid) = s.app.get_json(&s.key, "/api/v1/invoices?customer_id=player-1").await;
    let amounts: Vec<&str> = paid["data"].as_array().unwrap().iter().map(|i| i["amount"].as_str().unwrap()).collect();
    assert_eq!(amounts, ["3", "7"], "one paid invoice per deposit, newest first");
    assert!(
        paid["data"].as_array().unwrap().iter().all(|i| i["status"] == "paid" && i["static_address_id"] == rail["id"])
    );

    let untouched = s.get(&invoice).await;
    assert_eq!((untouched["status"].as_str(), untouched["amount_paid"].as_str()), (Some("pending"), Some("0")));
    let mut conn = s.app.store.conn().await.unwrap();
    let all = deposits::all_on_chain(&mut conn, 31337).await.unwrap();
    assert_eq!(all.len(), 3, "the look-alike and the zero-value transfer are not deposits: {all:#?}");
    let rejected: Vec<_> = all.iter().filter(|d| d.state == depositd_core::deposit::DepositState::Rejected).collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reject_reason.as_deref(), Some("paid in USDT but expected USDC"));
    // The alert metric says so, with bounded labels.
    let metrics = s.metrics().await;
    assert!(metrics.contains(r#"depositd_deposits_rejected_total{chain="anvil",reason="wrong_asset"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"depositd_deposits_total{asset="USDC",chain="anvil",state="confirmed"} 2"#),
        "{metrics}"
    );
}

async fn a_reorg_drops_a_detected_deposit_and_a_restart_changes_nothing(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.catch_up(&mut watcher).await;
    assert_eq!(s.get(&invoice).await["status"], "processing");

    // Replace the payment's block (the head) with an empty one, then grow the new chain.
    s.chain.rpc("anvil_reorg", json!([1, []])).await;
    s.chain.mine(3).await;
    s.catch_up(&mut watcher).await;
    let dropped = s.get(&invoice).await;
    assert_eq!((dropped["status"].as_str(), dropped["amount_paid"].as_str()), (Some("pending"), Some("0")));
    assert_eq!(dropped["payments"][0]["state"], "reorged", "recorded, not deleted");

    // Paid again for real; a new watcher (a restart) replays nothing twice.
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(2).await;
    let mut restarted = s.watcher();
    s.catch_up(&mut restarted).await;
    s.catch_up(&mut watcher).await;
    let paid = s.get(&invoice).await;
    assert_eq!((paid["status"].as_str(), paid["amount_paid"].as_str()), (Some("paid"), Some("10")));
    let states: Vec<&str> = paid["payments"].as_array().unwrap().iter().map(|p| p["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["reorged", "confirmed"]);
}

/// A JSON-RPC proxy in front of anvil that misbehaves on a schedule: 429 with Retry-After,
/// answers slower than the watcher's timeout, malformed JSON, and an eth_getLogs range limit.
async fn faulty_proxy(upstream: String, faults: std::sync::Arc<std::sync::atomic::AtomicU64>) -> String {
    use std::sync::atomic::Ordering;
    let client = reqwest::Client::new();
    let handler = move |body: axum::body::Bytes| {
        let (client, upstream, faults) = (client.clone(), upstream.clone(), faults.clone());
        async move {
            use axum::response::IntoResponse;
            let n = faults.fetch_add(1, Ordering::SeqCst);
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if request["method"] == "eth_getLogs" {
                let block = |key: &str| {
                    u64::from_str_radix(
                        request["params"][0][key].as_str().unwrap_or("0x0").trim_start_matches("0x"),
                        16,
                    )
                    .unwrap_or(0)
                };
                if block("toBlock") - block("fromBlock") + 1 > 3 {
                    let error = json!({"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32005, "message": "query exceeds max block range 3"}});
                    return axum::Json(error).into_response();
                }
            }
            match n % 10 {
                3 if n < 40 => {
                    return (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down")
                        .into_response();
                }
                5 => tokio::time::sleep(std::time::Duration::from_millis(700)).await,
                7 => {
                    return (axum::http::StatusCode::OK, [("content-type", "application/json")], "{not json")
                        .into_response();
                }
                _ => {}
            }
            let answer =
                client.post(&upstream).header("content-type", "application/json").body(body).send().await.unwrap();
            (axum::http::StatusCode::OK, [("content-type", "application/json")], answer.bytes().await.unwrap())
                .into_response()
        }
    };
    let app = axum::Router::new().route("/", axum::routing::post(handler));
    format!("http://{}/", depositd_testkit::http::serve(app).await)
}

async fn rpc_faults_and_failover_miss_no_deposit(db: TestDb) {
    let mut s = setup(&db).await;
    let faults = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let proxy = faulty_proxy(s.chain.rpc_url(), faults.clone()).await;
    // The first endpoint is dead: every step starts by failing over.
    let dead = format!("http://127.0.0.1:{}", depositd_testkit::anvil::free_port().unwrap());
    s.config.rpc_urls = vec![dead.into(), proxy.into()];
    s.config.rpc_timeout_ms = 400;
    s.config.max_block_range = 50;

    let mut invoices = Vec::new();
    for amount in ["1", "2", "3", "4", "5"] {
        let invoice = s.invoice(json!({"amount": amount})).await;
        s.chain.pay_token(s.usdc, address(&invoice), amount.parse::<u64>().unwrap() * 1_000_000).await;
        invoices.push(invoice);
    }
    s.chain.mine(2).await;

    let mut watcher = s.watcher();
    let mut failures = 0;
    let mut caught_up = false;
    for _ in 0..200 {
        match watcher.tick().await {
            Ok(false) => {
                caught_up = true;
                break;
            }
            Ok(true) => {}
            Err(_) => failures += 1, // A step that ran out of retries is simply redone.
        }
    }
    assert!(caught_up, "the watcher never caught up ({failures} failed steps)");
    assert!(faults.load(std::sync::atomic::Ordering::SeqCst) > 20, "the proxy was exercised");
    for (invoice, amount) in invoices.iter().zip(["1", "2", "3", "4", "5"]) {
        let current = s.get(invoice).await;
        assert_eq!(
            (current["status"].as_str(), current["amount_paid"].as_str()),
            (Some("paid"), Some(amount)),
            "{current}"
        );
        assert_eq!(current["payments"].as_array().unwrap().len(), 1, "credited exactly once");
    }
}

impl Setup {
    /// Pays with a token transfer and returns the signed raw transaction (to replay it in a reorg).
    async fn pay_token_raw(&self, token: Address, to: &str, base_units: u64) -> String {
        let hash = self.chain.pay_token(token, to, base_units).await;
        let raw = self.chain.rpc("eth_getRawTransactionByHash", json!([hash])).await;
        raw.as_str().unwrap().to_owned()
    }
}

async fn a_reorg_that_moves_a_deposit_keeps_it_one_deposit(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let invoice = s.invoice(json!({"amount": "10"})).await;
    let raw = s.pay_token_raw(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(1).await;
    let before = s.get(&invoice).await;
    s.catch_up(&mut watcher).await;
    assert_eq!(s.get(&invoice).await["status"], "paid");
    let old_block = s.get(&invoice).await["payments"][0]["block_number"].as_u64().unwrap();

    // Replace the last two blocks; the payment is re-included one block later than before.
    s.chain.rpc("anvil_reorg", json!([2, [[raw, 1]]])).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;
    let after = s.get(&invoice).await;
    assert_eq!((after["status"].as_str(), after["amount_paid"].as_str()), (Some("paid"), Some("10")), "{after}");
    let payments = after["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 1, "the same (tx, log index) is the same deposit: {payments:#?}");
    assert_eq!(payments[0]["state"], "confirmed");
    assert_eq!(payments[0]["block_number"].as_u64().unwrap(), old_block + 1, "moved to its new block");
    // It had 2 confirmations when the depth-2 reorg moved it: the new chain holds the same
    // transfer at the same position, so it keeps its one credit in its new block; no reversal is
    // posted or announced (reversing could take money already swept).
    let mut conn = s.app.store.conn().await.unwrap();
    let deposit_id = payments[0]["id"].as_str().unwrap().parse().unwrap();
    let history = events::types_for(&mut conn, deposit_id).await.unwrap();
    assert_eq!(history, ["deposit.detected", "deposit.confirmed"]);
    let entries = s.ledger(&after).await;
    let types: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["deposit_pending", "deposit_credit", "fee"], "credited once, nothing reversed");
    assert_eq!(before["status"], "pending");
}

async fn a_deep_reorg_reverses_a_credited_deposit(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(3).await;
    s.catch_up(&mut watcher).await;
    assert_eq!(s.get(&invoice).await["status"], "paid");

    // A reorg deeper than the 2 confirmations takes the credited payment away.
    s.chain.rpc("anvil_reorg", json!([5, []])).await;
    s.chain.mine(1).await;
    s.catch_up(&mut watcher).await;
    let reversed = s.get(&invoice).await;
    assert_eq!(
        (reversed["status"].as_str(), reversed["amount_paid"].as_str()),
        (Some("pending"), Some("0")),
        "{reversed}"
    );
    assert_eq!(reversed["payments"][0]["state"], "reversed", "recorded, not deleted");
    assert!(reversed["finished_at"].is_null());
    let mut conn = s.app.store.conn().await.unwrap();
    let deposit_id = reversed["payments"][0]["id"].as_str().unwrap().parse().unwrap();
    let types = events::types_for(&mut conn, deposit_id).await.unwrap();
    assert_eq!(types, ["deposit.detected", "deposit.confirmed", "deposit.reversed"]);
    // In the ledger the reversal is three reversing entries, newest first, each pointing at what
    // it undoes; nothing was deleted, and the balances are back to zero.
    let entries = s.ledger(&invoice).await;
    let types: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["deposit_pending", "deposit_credit", "fee", "reversal", "reversal", "reversal"]);
    for (reversal, original) in [(3, 2), (4, 1), (5, 0)] {
        assert_eq!(entries[reversal]["reverses_entry_id"], entries[original]["id"]);
    }
    assert_eq!((s.balance("USDC", "available").await, s.balance("USDC", "pending").await), ("0".into(), "0".into()));
    s.reconciles().await;
    let metrics = s.metrics().await;
    assert!(metrics.contains(r#"depositd_deposits_total{asset="USDC",chain="anvil",state="reversed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"depositd_chain_reorgs_total{chain="anvil"} 1"#), "{metrics}");
    assert!(metrics.contains("depositd_chain_reorg_depth_max{chain=\"anvil\"} "), "{metrics}");
}

async fn a_restart_mid_backfill_credits_once(db: TestDb) {
    let mut s = setup(&db).await;
    s.config.max_block_range = 2;
    let mut invoices = Vec::new();
    for _ in 0..4 {
        let invoice = s.invoice(json!({"amount": "1"})).await;
        s.chain.pay_token(s.usdc, address(&invoice), 1_000_000).await;
        invoices.push(invoice);
    }
    s.chain.mine(2).await;
    // Two short steps, then the process "dies" and a new one takes over from the cursor.
    let mut first = s.watcher();
    assert!(first.tick().await.unwrap(), "more to do after one 2-block step");
    assert!(first.tick().await.unwrap());
    drop(first);
    let mut second = s.watcher();
    s.catch_up(&mut second).await;
    for invoice in &invoices {
        let current = s.get(invoice).await;
        assert_eq!(
            (current["status"].as_str(), current["payments"].as_array().unwrap().len()),
            (Some("paid"), 1),
            "{current}"
        );
    }
    let mut conn = s.app.store.conn().await.unwrap();
    assert_eq!(deposits::all_on_chain(&mut conn, 31337).await.unwrap().len(), 4);
}

async fn websocket_heads_wake_the_watcher(db: TestDb) {
    let mut s = setup(&db).await;
    // Polling once a minute: only newHeads over the WebSocket can make this quick.
    s.config.ws_url = Some(s.chain.ws_url().into());
    s.config.poll_interval_ms = 60_000;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(s.watcher().run(shutdown.clone()));
    let invoice = s.invoice(json!({"amount": "10"})).await;
    // Let the watcher take its first step and subscribe before the payment lands.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(1).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if s.get(&invoice).await["status"] == "paid" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not paid: the WebSocket heads did not wake the watcher");
        // New heads keep coming, as on a live chain.
        s.chain.mine(1).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

async fn an_unrepresentable_transfer_is_rejected_not_fatal(db: TestDb) {
    let mut s = setup(&db).await;
    // An allow-listed token whose Transfer logs carry 64 bytes of data instead of one uint256.
    let provider = s.chain.payer();
    let odd = OddTransferToken::deploy(&provider).await.unwrap();
    s.config.tokens.push(TokenConfig { symbol: "ODD".into(), address: *odd.address(), decimals: 6 });
    let mut watcher = s.watcher();
    let invoice = s.invoice(json!({"amount": "10"})).await;
    let to: Address = address(&invoice).parse().unwrap();
    odd.emitOddTransfer(to).send().await.unwrap().get_receipt().await.unwrap();
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(2).await;
    s.catch_up(&mut watcher).await;

    // The real payment is credited; the odd one is on record with its reason, and counted.
    let paid = s.get(&invoice).await;
    assert_eq!((paid["status"].as_str(), paid["amount_paid"].as_str()), (Some("paid"), Some("10")));
    let mut conn = s.app.store.conn().await.unwrap();
    let all = deposits::all_on_chain(&mut conn, 31337).await.unwrap();
    let odd_deposit = all.iter().find(|d| d.asset == "ODD").expect("the odd transfer is recorded");
    assert_eq!(odd_deposit.state, depositd_core::deposit::DepositState::Rejected);
    assert_eq!(odd_deposit.reject_reason.as_deref(), Some("Transfer data is 64 bytes, not a 32-byte uint256"));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"depositd_deposits_rejected_total{chain="anvil",reason="undecodable_value"} 1"#),
        "{metrics}"
    );
}

async fn a_long_range_fetched_concurrently_records_every_deposit(db: TestDb) {
    let mut s = setup(&db).await;
    // Fewer calls in flight than blocks in the range: the blocks arrive in several waves, and
    // the receipts of the native transfers too.
    s.config.rpc_concurrency = 3;
    let mut paid = Vec::new();
    for round in 0..4u64 {
        let usdc = s.invoice(json!({"amount": (round + 1).to_string()})).await;
        s.chain.pay_token(s.usdc, address(&usdc), (round + 1) * 1_000_000).await;
        paid.push((usdc, (round + 1).to_string()));
        s.chain.mine(5).await;
        let eth = s.invoice(json!({"amount": "30", "asset": "ETH"})).await;
        s.chain.pay_native(address(&eth), 10_000_000_000_000_000).await;
        paid.push((eth, "0.01".to_owned())); // 30 USD at 3,000 USD/ETH, paid in ETH.
        s.chain.mine(3).await;
    }
    s.chain.mine(2).await;
    let head = s.chain.rpc("eth_blockNumber", json!([])).await;
    let head = u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert!(head > 40, "a range of many blocks: {head}");

    // One step covers the whole chain (max_block_range is far above the head).
    let mut watcher = s.watcher();
    assert!(!watcher.tick().await.unwrap(), "one step scans blocks 0..={head}");
    for (invoice, amount) in &paid {
        let current = s.get(invoice).await;
        assert_eq!(
            (current["status"].as_str(), current["amount_paid"].as_str()),
            (Some("paid"), Some(amount.as_str())),
            "{current}"
        );
        assert_eq!(current["payments"].as_array().unwrap().len(), 1, "credited exactly once");
    }
    let mut conn = s.app.store.conn().await.unwrap();
    assert_eq!(deposits::all_on_chain(&mut conn, 31337).await.unwrap().len(), 8);
    let cursor = cursors::get(&mut conn, 31337).await.unwrap().unwrap();
    assert_eq!(cursor.block_number, head);
    let metrics = s.metrics().await;
    let scanned = format!("depositd_chain_blocks_scanned_total{{chain=\"anvil\"}} {}", head + 1);
    assert!(metrics.contains(&scanned), "{metrics}");
}

/// A JSON-RPC proxy in front of anvil that tampers with answers while `mode` says so: 1 = every
/// `eth_getLogs` log names another block hash than its block's; 2 = block `target`'s header names
/// another parent; 3 = a lagging node behind a load balancer: every `eth_getLogs` over a block
/// range answers "no logs" (by block hash, EIP-234, it answers truly); 4 = the same, and it does
/// not have the blocks at all: by hash it answers as geth does ("unknown block"), and it has no
/// receipts; 5 = range and by-hash answers both say "no logs" (as some clients answer an unknown
/// block hash), receipts are true. 0 passes everything through.
async fn tampering_proxy(upstream: String, mode: std::sync::Arc<std::sync::atomic::AtomicU64>, target: u64) -> String {
    use std::sync::atomic::Ordering;
    let client = reqwest::Client::new();
    let other_hash = format!("0x{}", "11".repeat(32));
    let handler = move |body: axum::body::Bytes| {
        let (client, upstream, mode, other_hash) = (client.clone(), upstream.clone(), mode.clone(), other_hash.clone());
        async move {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer =
                client.post(&upstream).header("content-type", "application/json").body(body).send().await.unwrap();
            let mut answer: Value = answer.json().await.unwrap();
            match (mode.load(Ordering::SeqCst), request["method"].as_str()) {
                (1, Some("eth_getLogs")) => {
                    for log in answer["result"].as_array_mut().into_iter().flatten() {
                        log["blockHash"] = json!(other_hash);
                    }
                }
                (2, Some("eth_getBlockByNumber")) if answer["result"]["number"] == json!(format!("{target:#x}")) => {
                    answer["result"]["parentHash"] = json!(other_hash);
                }
                (3..=5, Some("eth_getLogs")) if request["params"][0].get("blockHash").is_none() => {
                    answer["result"] = json!([]);
                }
                (4, Some("eth_getLogs")) => {
                    answer = json!({"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32000, "message": "unknown block"}});
                }
                (4, Some("eth_getBlockReceipts")) => {
                    answer["result"] = Value::Null;
                }
                (5, Some("eth_getLogs")) => {
                    answer["result"] = json!([]);
                }
                _ => {}
            }
            axum::Json(answer)
        }
    };
    let app = axum::Router::new().route("/", axum::routing::post(handler));
    format!("http://{}/", depositd_testkit::http::serve(app).await)
}

async fn a_range_that_does_not_hold_together_is_refused(db: TestDb) {
    use std::sync::atomic::Ordering;
    let mut s = setup(&db).await;
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.mine(4).await;
    let payment = s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(4).await;
    let receipt = s.chain.rpc("eth_getTransactionReceipt", json!([payment])).await;
    let paid_in = u64::from_str_radix(receipt["blockNumber"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let mode = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    s.config.rpc_urls = vec![tampering_proxy(s.chain.rpc_url(), mode.clone(), paid_in).await.into()];
    s.config.rpc_concurrency = 4;
    let mut watcher = s.watcher();

    // The payment's log names a block hash the fetched header does not have.
    mode.store(1, Ordering::SeqCst);
    match watcher.tick().await {
        Err(WatchError::Inconsistent(why)) => assert!(why.contains("another block hash"), "{why}"),
        other => panic!("a log from another block was accepted: {other:?}"),
    }
    // The payment's block does not build on the block before it.
    mode.store(2, Ordering::SeqCst);
    match watcher.tick().await {
        Err(WatchError::Inconsistent(why)) => assert!(why.contains("does not follow"), "{why}"),
        other => panic!("a broken chain of blocks was accepted: {other:?}"),
    }
    {
        let mut conn = s.app.store.conn().await.unwrap();
        assert!(deposits::all_on_chain(&mut conn, 31337).await.unwrap().is_empty(), "nothing recorded");
        assert!(cursors::get(&mut conn, 31337).await.unwrap().is_none(), "the cursor did not move");
    }
    assert_eq!(s.get(&invoice).await["status"], "pending");

    // Honest answers again: the same range is scanned and the payment credited once.
    mode.store(0, Ordering::SeqCst);
    s.catch_up(&mut watcher).await;
    let paid = s.get(&invoice).await;
    assert_eq!((paid["status"].as_str(), paid["payments"].as_array().unwrap().len()), (Some("paid"), 1), "{paid}");
}

async fn the_watched_set_loads_in_pages(db: TestDb) {
    let s = setup(&db).await;
    let mut invoices = Vec::new();
    for _ in 0..5 {
        invoices.push(s.invoice(json!({"amount": "1"})).await);
    }
    let rail: Value =
        s.app.create_static_address(&s.key, json!({"customer_id": "player-1"})).await.json().await.unwrap();
    let rail_address = rail["address"].as_str().unwrap().to_owned();
    let mut ours: Vec<Address> = invoices.iter().map(|i| address(i).parse().unwrap()).collect();
    ours.push(rail_address.parse().unwrap());
    let count = |pool: &sqlx::AnyPool| {
        let pool = pool.clone();
        async move {
            let (rows,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM deposit_addresses").fetch_one(&pool).await.unwrap();
            rows as usize
        }
    };

    // Two addresses per query: loading six or more takes several pages, and loads every one.
    let mut conn = s.app.store.conn().await.unwrap();
    let mut set = WatchedSet::with_page_size(2);
    let stored = count(s.app.store.pool()).await;
    assert!(stored >= 6, "{stored}");
    assert_eq!(set.refresh(&mut conn).await.unwrap(), stored);
    assert_eq!(set.len(), stored);
    assert!(ours.iter().all(|a| set.contains(a)), "every page was loaded");
    assert!(!set.contains(&Address::ZERO));
    // Then only what is new.
    let later = s.invoice(json!({"amount": "1"})).await;
    let added = set.refresh(&mut conn).await.unwrap();
    assert!(added >= 1 && set.len() == stored + added, "{added}");
    assert!(set.contains(&address(&later).parse().unwrap()));
    drop(conn);

    // A watcher loading its set two addresses at a time finds payments to addresses of its first
    // and last pages, to an invoice and to the static address.
    s.chain.pay_token(s.usdc, address(&invoices[0]), 1_000_000).await;
    s.chain.pay_token(s.usdc, address(&later), 1_000_000).await;
    s.chain.pay_token(s.usdc, &rail_address, 2_000_000).await;
    s.chain.mine(2).await;
    let mut watcher = s.watcher().with_watched_page_size(2);
    s.catch_up(&mut watcher).await;
    for invoice in [&invoices[0], &later] {
        let paid = s.get(invoice).await;
        assert_eq!((paid["status"].as_str(), paid["payments"].as_array().unwrap().len()), (Some("paid"), 1), "{paid}");
    }
    let (_, rail_invoices) = s.app.get_json(&s.key, "/api/v1/invoices?customer_id=player-1").await;
    let amounts: Vec<&str> =
        rail_invoices["data"].as_array().unwrap().iter().map(|i| i["amount"].as_str().unwrap()).collect();
    assert_eq!(amounts, ["2"], "{rail_invoices}");
    assert_eq!(s.get(&invoices[1]).await["status"], "pending");
}

async fn a_lagging_nodes_empty_logs_lose_no_deposit(db: TestDb) {
    use std::sync::atomic::Ordering;
    let mut s = setup(&db).await;
    let mode = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    s.config.rpc_urls = vec![tampering_proxy(s.chain.rpc_url(), mode.clone(), 0).await.into()];
    let mut watcher = s.watcher();

    // Every range answer says "no logs": the blocks' blooms say otherwise, and the payment is
    // found by asking for its block by hash.
    mode.store(3, Ordering::SeqCst);
    let first = s.invoice(json!({"amount": "10"})).await;
    s.chain.mine(2).await;
    s.chain.pay_token(s.usdc, address(&first), 10_000_000).await;
    s.chain.mine(3).await;
    s.catch_up(&mut watcher).await;
    let paid = s.get(&first).await;
    assert_eq!((paid["status"].as_str(), paid["amount_paid"].as_str()), (Some("paid"), Some("10")), "{paid}");
    assert_eq!(paid["payments"].as_array().unwrap().len(), 1, "{paid}");
    let metrics = s.metrics().await;
    let rechecked = metrics
        .lines()
        .find(|l| l.starts_with(r#"depositd_chain_logs_rechecked_blocks_total{chain="anvil"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(rechecked >= 1, "the suspect block was asked again by hash: {metrics}");

    // By hash it says "no logs" too, as some clients answer for a block they lack: the block's
    // receipts show the payment.
    mode.store(5, Ordering::SeqCst);
    let third = s.invoice(json!({"amount": "3"})).await;
    s.chain.pay_token(s.usdc, address(&third), 3_000_000).await;
    s.chain.mine(3).await;
    s.catch_up(&mut watcher).await;
    let paid = s.get(&third).await;
    assert_eq!((paid["status"].as_str(), paid["payments"].as_array().unwrap().len()), (Some("paid"), 1), "{paid}");

    // A node that does not have the blocks at all: the watcher does not move past the payment.
    mode.store(4, Ordering::SeqCst);
    let second = s.invoice(json!({"amount": "5"})).await;
    s.chain.pay_token(s.usdc, address(&second), 5_000_000).await;
    let before_payment = {
        let mut conn = s.app.store.conn().await.unwrap();
        cursors::get(&mut conn, 31337).await.unwrap().unwrap().block_number
    };
    s.chain.mine(3).await;
    for _ in 0..2 {
        assert!(watcher.tick().await.is_err(), "a range whose logs cannot be vouched for is refused");
    }
    {
        let mut conn = s.app.store.conn().await.unwrap();
        let cursor = cursors::get(&mut conn, 31337).await.unwrap().unwrap().block_number;
        assert_eq!(cursor, before_payment, "the cursor stayed before the payment's block");
    }
    assert_eq!(s.get(&second).await["status"], "pending");

    // The node catches up: the payment is credited, once.
    mode.store(0, Ordering::SeqCst);
    s.catch_up(&mut watcher).await;
    let paid = s.get(&second).await;
    assert_eq!((paid["status"].as_str(), paid["payments"].as_array().unwrap().len()), (Some("paid"), 1), "{paid}");
    s.reconciles().await;
}

async fn a_static_deposit_back_after_a_deep_reorg_pays_its_own_invoice_again(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let rail: Value =
        s.app.create_static_address(&s.key, json!({"customer_id": "player-9"})).await.json().await.unwrap();
    let rail_address = rail["address"].as_str().unwrap().to_owned();
    let raw = s.pay_token_raw(s.usdc, &rail_address, 7_000_000).await;
    s.chain.mine(3).await;
    s.catch_up(&mut watcher).await;
    let before = s.app.get_json(&s.key, "/api/v1/invoices?customer_id=player-9").await.1["data"].clone();
    assert_eq!(before.as_array().unwrap().len(), 1, "{before}");
    let invoice_id = before[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(before[0]["status"], "paid");
    let credited = s.balance("USDC", "available").await;

    // A reorg deeper than the confirmations takes the deposit away: its invoice is cancelled,
    // not left "expired" with nothing paid.
    s.chain.rpc("anvil_reorg", json!([5, []])).await;
    s.chain.mine(1).await;
    s.catch_up(&mut watcher).await;
    let gone = s.app.get_json(&s.key, "/api/v1/invoices?customer_id=player-9").await.1["data"].clone();
    assert_eq!(gone.as_array().unwrap().len(), 1, "{gone}");
    assert_eq!((gone[0]["status"].as_str(), gone[0]["amount_paid"].as_str()), (Some("cancelled"), Some("0")), "{gone}");

    // The same transaction is mined again: it pays the same invoice, not a second one.
    s.chain.rpc("anvil_reorg", json!([1, [[raw, 0]]])).await;
    s.chain.mine(3).await;
    s.catch_up(&mut watcher).await;
    let back = s.app.get_json(&s.key, "/api/v1/invoices?customer_id=player-9").await.1["data"].clone();
    assert_eq!(back.as_array().unwrap().len(), 1, "one invoice per deposit: {back}");
    assert_eq!(back[0]["id"].as_str(), Some(invoice_id.as_str()), "the same invoice");
    assert_eq!((back[0]["status"].as_str(), back[0]["amount_paid"].as_str()), (Some("paid"), Some("7")), "{back}");
    let events = s.events(&back[0]).await;
    let paid = events.iter().filter(|e| *e == "invoice.paid").count();
    assert_eq!(paid, 2, "one invoice.paid per life of the deposit: {events:?}");
    assert_eq!(s.balance("USDC", "available").await, credited, "credited once, net");
    s.reconciles().await;
}

async fn a_reversed_partial_payment_leaves_no_underpaid_flag(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.pay_token(s.usdc, address(&invoice), 4_000_000).await;
    s.chain.mine(3).await;
    s.catch_up(&mut watcher).await;
    let partial = s.get(&invoice).await;
    assert_eq!(partial["status"], "pending");
    assert_eq!(partial["payment_flags"], json!(["underpaid"]), "{partial}");

    s.chain.rpc("anvil_reorg", json!([5, []])).await;
    s.chain.mine(1).await;
    s.catch_up(&mut watcher).await;
    let reversed = s.get(&invoice).await;
    assert_eq!(
        (reversed["status"].as_str(), reversed["amount_paid"].as_str()),
        (Some("pending"), Some("0")),
        "{reversed}"
    );
    assert_eq!(reversed["payment_flags"], json!([]), "nothing is paid, so nothing is underpaid: {reversed}");
}

async fn rescan_records_a_missed_deposit_once(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.watcher();
    let invoice = s.invoice(json!({"amount": "10"})).await;
    s.chain.mine(1).await;
    s.catch_up(&mut watcher).await;
    let start = {
        let mut conn = s.app.store.conn().await.unwrap();
        cursors::get(&mut conn, 31337).await.unwrap().unwrap().block_number
    };
    s.chain.pay_token(s.usdc, address(&invoice), 10_000_000).await;
    s.chain.mine(3).await;
    // The watcher "misses" the payment: it records the blocks and moves its cursor past them
    // with no deposit, as a node that lied about their logs would have made it do.
    let head = s.chain.rpc("eth_blockNumber", json!([])).await;
    let head = u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let block = s.chain.rpc("eth_getBlockByNumber", json!([format!("{head:#x}"), false])).await;
    {
        let mut conn = s.app.store.conn().await.unwrap();
        let mut refs = Vec::new();
        for number in start + 1..=head {
            let b = s.chain.rpc("eth_getBlockByNumber", json!([format!("{number:#x}"), false])).await;
            refs.push(depositd_core::store::blocks::BlockRef {
                number,
                hash: b["hash"].as_str().unwrap().to_owned(),
                parent_hash: b["parentHash"].as_str().unwrap().to_owned(),
            });
        }
        depositd_core::store::blocks::save(&mut conn, 31337, &refs).await.unwrap();
        cursors::set(
            &mut conn,
            &cursors::ChainCursor {
                chain_id: 31337,
                block_number: head,
                block_hash: block["hash"].as_str().unwrap().to_owned(),
            },
        )
        .await
        .unwrap();
    }
    s.catch_up(&mut watcher).await;
    assert_eq!(s.get(&invoice).await["status"], "pending", "missed");
    // Reconciliation finds it: the address holds money the ledger does not explain.
    let state = &s.app.state;
    let found = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
    assert!(!found.is_ok(), "the missed deposit fails the check: {}", found.render());
    let report = found.render();
    assert!(report.contains(address(&invoice)), "the address is named: {report}");

    // A rescan above the cursor is refused; one of the missed range records the payment, and a
    // second one changes nothing.
    let mut rescanner = s.watcher();
    let refused = rescanner.rescan(start, head + 10).await.unwrap_err();
    assert!(refused.to_string().contains("cursor"), "{refused}");
    let done = rescanner.rescan(start, head).await.unwrap();
    assert_eq!((done.transfers, done.recorded), (1, 1), "{done:?}");
    let again = rescanner.rescan(start, head).await.unwrap();
    assert_eq!((again.transfers, again.recorded), (1, 0), "{again:?}");
    s.chain.mine(1).await;
    s.catch_up(&mut watcher).await;
    let paid = s.get(&invoice).await;
    assert_eq!((paid["status"].as_str(), paid["payments"].as_array().unwrap().len()), (Some("paid"), 1), "{paid}");
    s.reconciles().await;
}
