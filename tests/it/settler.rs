//! The settler against a real anvil chain, on both backends: token and native sweeps (with gas
//! top-ups), payouts and refunds sent and confirmed with the ledger right, pass-through invoices
//! forwarded exactly, a stuck transaction replaced with higher fees, an outside send detected,
//! and a crash at each step of sending that still pays exactly once with no nonce gap.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use depositd_core::api_key::Scope;
use depositd_core::chain_tx::{Purpose, TxState};
use depositd_core::config::ChainConfig;
use depositd_core::store::chain_txs;
use depositd_core::store::events;
use depositd_settler::{CrashPoint, SettleError, Settler};
use depositd_testkit::chain::{TestChain, payer_address};
use depositd_watcher::ChainWatcher;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, both_backends, use_test_chain};

both_backends!(
    token_deposits_are_swept_and_a_payout_confirms_with_the_ledger_right,
    native_deposits_are_swept_and_a_native_payout_charges_the_real_gas,
    a_pass_through_invoice_forwards_the_merchant_amount_exactly,
    a_refund_returns_money_and_marks_the_invoice,
    a_stuck_transaction_is_replaced_with_higher_fees,
    a_crash_at_any_step_pays_exactly_once_with_no_nonce_gap,
    an_outside_send_from_the_treasury_pauses_it,
    a_native_pass_through_is_forwarded_and_its_gas_top_up_is_no_payment,
    an_outside_transaction_that_takes_a_payouts_nonce_fails_it_only_after_an_operator_looks,
    a_refused_broadcast_is_retried_at_once_and_never_holds_up_later_nonces,
    a_confirmed_payout_a_deep_reorg_took_away_is_sent_again_once,
    a_reorged_away_payout_is_sent_again_however_far_the_head_ran,
    a_reorged_away_payout_is_sent_again_by_a_settler_that_was_down,
    a_reorged_away_token_payout_mined_again_at_another_price_posts_what_the_chain_charged,
    a_reorged_away_native_payout_mined_again_at_another_price_charges_the_merchant_once,
    a_reorged_away_payout_that_reverts_when_sent_again_is_not_released_a_second_time,
    a_confirmed_payout_a_deep_reorg_moves_to_a_later_block_is_confirmed_again_at_its_new_cost,
    a_confirmed_native_payout_moved_to_a_cheaper_block_keeps_the_merchants_charge,
);

const CONFIRMATIONS: u64 = 2;

struct Setup {
    chain: TestChain,
    usdc: Address,
    app: TestApp,
    key: String,
    config: ChainConfig,
}

async fn setup(db: &TestDb) -> Setup {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, CONFIRMATIONS, &[("USDC", usdc)]);
        c.settings.settler.bump_after_blocks = 2;
        config = Some(c.chains[0].clone());
    })
    .await;
    let config = config.unwrap();
    let treasury = app.state.wallet.treasury_address();
    depositd::dev::fund_treasury(&app.store, &config, treasury, 10_000_000_000_000_000_000).await.unwrap();
    let (_, key) = app.merchant("Settler Shop", &Scope::ALL).await;
    Setup { chain, usdc, app, key, config }
}

impl Setup {
    fn treasury(&self) -> Address {
        self.app.state.wallet.treasury_address()
    }

    /// Watcher, settler, one more block; until `done` holds (at most 40 rounds).
    async fn run_until<F, Fut>(&self, watcher: &mut ChainWatcher, settler: &mut Settler, what: &str, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::helpers::settle_until(&self.chain, watcher, settler, 40, what, done).await;
    }

    async fn invoice(&self, body: Value) -> Value {
        self.app.created_invoice(&self.key, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.app.get_json(&self.key, path).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn post(&self, path: &str, idempotency_key: &str, body: Value) -> (u16, Value) {
        let response = self
            .app
            .client
            .post(self.app.url(path))
            .header("x-api-key", &self.key)
            .header("idempotency-key", idempotency_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn payout(&self, body: Value) -> Value {
        let (status, payout) = self.post("/api/v1/payouts", &uuid::Uuid::now_v7().to_string(), body).await;
        assert_eq!(status, 201, "{payout}");
        payout
    }

    async fn usdc_of(&self, owner: Address) -> U256 {
        self.chain.token_balance(self.usdc, owner).await
    }

    /// The merchant's balance of `kind` in `asset`, as the API shows it.
    async fn balance(&self, asset: &str, kind: &str) -> String {
        let balances = self.get("/api/v1/balances").await;
        let row = balances["data"].as_array().unwrap().iter().find(|b| b["asset"] == asset).cloned();
        row.map(|r| r[kind].as_str().unwrap().to_owned()).unwrap_or_else(|| "0".into())
    }

    async fn reconciles(&self) {
        let state = &self.app.state;
        let outcome = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
        assert!(outcome.is_ok(), "{}", outcome.render());
    }

    async fn payout_status(&self, payout: &Value) -> String {
        let body = self.get(&format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await;
        body["status"].as_str().unwrap().to_owned()
    }

    async fn transactions(&self) -> Vec<depositd_core::chain_tx::ChainTx> {
        let mut conn = self.app.store.conn().await.unwrap();
        let mut all =
            chain_txs::touching(&mut conn, self.config.chain_id, &self.treasury().to_checksum(None)).await.unwrap();
        all.sort_by_key(|t| t.nonce);
        all
    }

    /// No outgoing transaction is open (every one confirmed or failed).
    async fn all_settled(&self) -> bool {
        let mut conn = self.app.store.conn().await.unwrap();
        chain_txs::open(&mut conn, self.config.chain_id).await.unwrap().is_empty()
    }

    async fn event_types(&self, resource_id: &str) -> Vec<String> {
        let mut conn = self.app.store.conn().await.unwrap();
        events::types_for(&mut conn, resource_id.parse().unwrap()).await.unwrap()
    }

    /// The treasury's nonces: every one the chain used is one depositd assigned, in order.
    async fn assert_no_nonce_gap(&self) {
        let treasury = self.treasury();
        let used = self.chain.provider().get_transaction_count(treasury).await.unwrap();
        let mut conn = self.app.store.conn().await.unwrap();
        let signers = chain_txs::signers(&mut conn, self.config.chain_id).await.unwrap();
        let (_, next, paused) =
            signers.iter().find(|(a, _, _)| *a == treasury.to_checksum(None)).expect("the treasury signed").clone();
        assert_eq!(paused, None);
        assert_eq!(next, used, "stored next nonce equals the chain's");
        let mut nonces: Vec<u64> = self
            .transactions()
            .await
            .into_iter()
            .filter(|t| t.signer_address == treasury.to_checksum(None))
            .filter_map(|t| t.nonce)
            .collect();
        nonces.sort();
        assert_eq!(nonces, (0..used).collect::<Vec<_>>(), "one transaction per nonce, no gap");
    }
}

/// A paid USDC invoice for `amount` whole USDC, confirmed and credited.
async fn paid_usdc_invoice(s: &Setup, watcher: &mut ChainWatcher, amount: &str, units: u64) -> Value {
    let invoice = s.invoice(json!({"amount": amount, "currency": "USD", "asset": "USDC"})).await;
    s.chain.pay_token(s.usdc, invoice["pay"]["address"].as_str().unwrap(), units).await;
    s.chain.mine(CONFIRMATIONS).await;
    while watcher.tick().await.unwrap() {}
    let body = s.get(&format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await;
    assert_eq!(body["status"], "paid", "{body}");
    body
}

async fn token_deposits_are_swept_and_a_payout_confirms_with_the_ledger_right(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let invoice = paid_usdc_invoice(&s, &mut watcher, "100", 100_000_000).await;
    let address: Address = invoice["pay"]["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(s.balance("USDC", "available").await, "99"); // 1% fee

    // Sweep: a gas top-up from the treasury, then the whole token balance to the treasury.
    s.run_until(&mut watcher, &mut settler, "the USDC sweep", || async {
        s.usdc_of(address).await.is_zero() && s.all_settled().await
    })
    .await;
    assert_eq!(s.usdc_of(s.treasury()).await, U256::from(100_000_000u64));
    let purposes: Vec<Purpose> = s.transactions().await.iter().map(|t| t.purpose).collect();
    assert_eq!(purposes, vec![Purpose::GasTopup], "the treasury signed only the top-up");
    s.reconciles().await;

    // A payout of 40 USDC to a fresh address.
    let destination = PrivateKeySigner::random().address();
    let payout = s.payout(json!({"asset": "USDC", "amount": "40", "destination": destination.to_checksum(None)})).await;
    assert_eq!(payout["status"], "pending");
    assert_eq!(s.balance("USDC", "available").await, "59");
    assert_eq!(s.balance("USDC", "reserved").await, "40");
    s.run_until(&mut watcher, &mut settler, "the payout", || async { s.payout_status(&payout).await == "confirmed" })
        .await;
    assert_eq!(s.usdc_of(destination).await, U256::from(40_000_000u64), "exactly the amount, once");
    assert_eq!(s.balance("USDC", "available").await, "59");
    assert_eq!(s.balance("USDC", "reserved").await, "0");
    let body = s.get(&format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await;
    assert!(body["tx_hash"].as_str().is_some_and(|h| h.len() == 66), "{body}");
    assert_eq!(
        s.event_types(payout["id"].as_str().unwrap()).await,
        vec!["payout.created", "payout.sent", "payout.confirmed"]
    );
    s.reconciles().await;
    s.assert_no_nonce_gap().await;

    // With deposits, sweeps and a payout behind it, the exposition passes Prometheus's linter.
    let response = s.app.client.get(s.app.url("/metrics")).send().await.unwrap();
    let exposition = response.text().await.unwrap();
    for metric in [
        "depositd_deposits_total",
        "depositd_settler_transactions_total",
        "depositd_api_requests_total",
        "depositd_rpc_requests_total{chain=\"anvil\",endpoint=\"0\",method=\"eth_getLogs\",result=\"ok\"}",
        "depositd_chain_blocks_scanned_total",
        "depositd_chain_logs_scanned_total",
        "depositd_deposit_detection_seconds_bucket",
        "depositd_deposit_confirmation_to_credit_seconds_count{chain=\"anvil\"} 1",
        "depositd_invoices{status=\"paid\"} 1",
        "depositd_hot_wallet_balance{asset=\"ETH\",chain=\"anvil\"}",
    ] {
        assert!(exposition.contains(metric), "{metric} missing");
    }
    crate::helpers::assert_promtool_accepts(&exposition);
}

async fn native_deposits_are_swept_and_a_native_payout_charges_the_real_gas(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    // 3000 USD at 3000 USD/ETH: 1 ETH.
    let invoice = s.invoice(json!({"amount": "3000", "currency": "USD", "asset": "ETH"})).await;
    let address: Address = invoice["pay"]["address"].as_str().unwrap().parse().unwrap();
    s.chain.pay_native(invoice["pay"]["address"].as_str().unwrap(), 1_000_000_000_000_000_000).await;
    s.chain.mine(CONFIRMATIONS).await;
    let treasury_before = s.chain.native_balance(s.treasury()).await;
    s.run_until(&mut watcher, &mut settler, "the ETH sweep", || async {
        let mut conn = s.app.store.conn().await.unwrap();
        let swept = chain_txs::touching(&mut conn, s.config.chain_id, &address.to_checksum(None)).await.unwrap();
        swept.iter().any(|t| t.purpose == Purpose::Sweep && t.state == TxState::Confirmed)
    })
    .await;
    // The balance less its exact fee: what stays behind is the unused part of the gas budget.
    let gained = s.chain.native_balance(s.treasury()).await - treasury_before;
    let left = s.chain.native_balance(address).await;
    assert!(gained > U256::from(990_000_000_000_000_000u64), "swept {gained}");
    assert!(left < U256::from(10_000_000_000_000_000u64), "left {left}");
    s.reconciles().await;

    let destination = PrivateKeySigner::random().address();
    let payout = s.payout(json!({"asset": "ETH", "amount": "0.5", "destination": destination.to_checksum(None)})).await;
    let reserve: U256 = payout["network_fee_reserve_base_units"].as_str().unwrap().parse().unwrap();
    assert!(!reserve.is_zero());
    s.run_until(&mut watcher, &mut settler, "the ETH payout", || async {
        s.payout_status(&payout).await == "confirmed"
    })
    .await;
    assert_eq!(s.chain.native_balance(destination).await, U256::from(500_000_000_000_000_000u64));
    let body = s.get(&format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await;
    let charged: U256 = body["network_fee_base_units"].as_str().unwrap().parse().unwrap();
    let receipt = s
        .chain
        .provider()
        .get_transaction_receipt(body["tx_hash"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(charged, U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price), "the real gas");
    assert!(charged <= reserve);
    // 1 ETH less the 1% fee, the payout and its real gas.
    let expected = U256::from(990_000_000_000_000_000u64) - U256::from(500_000_000_000_000_000u64) - charged;
    let available = s.balance("ETH", "available").await;
    assert_eq!(available, depositd_core::money::BaseUnits(expected).to_display(18));
    assert_eq!(s.balance("ETH", "reserved").await, "0");
    s.reconciles().await;
    s.assert_no_nonce_gap().await;
}

async fn a_pass_through_invoice_forwards_the_merchant_amount_exactly(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let merchant_wallet = PrivateKeySigner::random().address();
    let invoice = s
        .invoice(json!({
            "amount": "50", "currency": "USD", "asset": "USDC",
            "receiver_override": true, "receiver_override_address": merchant_wallet.to_checksum(None),
        }))
        .await;
    let merchant_amount: U256 = invoice["merchant_amount_base_units"].as_str().unwrap().parse().unwrap();
    let fee: U256 = invoice["fee_base_units"].as_str().unwrap().parse().unwrap();
    assert_eq!(merchant_amount + fee, U256::from(50_000_000u64));
    s.chain.pay_token(s.usdc, invoice["pay"]["address"].as_str().unwrap(), 50_000_000).await;
    s.chain.mine(CONFIRMATIONS).await;
    s.run_until(&mut watcher, &mut settler, "the forward", || async {
        s.event_types(invoice["id"].as_str().unwrap()).await.contains(&"invoice.paid".to_owned())
            && s.all_settled().await
            && !s.usdc_of(merchant_wallet).await.is_zero()
            && s.usdc_of(invoice["pay"]["address"].as_str().unwrap().parse().unwrap()).await.is_zero()
    })
    .await;
    assert_eq!(s.usdc_of(merchant_wallet).await, merchant_amount, "the merchant amount, exactly");
    assert_eq!(s.usdc_of(s.treasury()).await, fee, "the fee, exactly");
    assert_eq!(s.balance("USDC", "available").await, "0", "pass-through never grows the spendable balance");
    assert_eq!(s.balance("USDC", "in_transit").await, "0");
    let mut conn = s.app.store.conn().await.unwrap();
    let forwarded: Vec<depositd_core::chain_tx::ChainTx> =
        chain_txs::touching(&mut conn, s.config.chain_id, invoice["pay"]["address"].as_str().unwrap())
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.purpose == Purpose::Passthrough)
            .collect();
    assert_eq!(forwarded.len(), 1);
    let tx_id = forwarded[0].id.to_string();
    assert_eq!(s.event_types(&tx_id).await, vec!["settlement.forwarded"]);
    drop(conn);
    s.reconciles().await;
}

async fn a_refund_returns_money_and_marks_the_invoice(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let invoice = paid_usdc_invoice(&s, &mut watcher, "20", 20_000_000).await;
    let id = invoice["id"].as_str().unwrap();
    let payer = payer_address();
    let before = s.usdc_of(payer).await;
    let (status, refund) = s
        .post(
            &format!("/api/v1/invoices/{id}/refunds"),
            "refund-1",
            json!({"amount": "5", "address": payer.to_checksum(None)}),
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    s.run_until(&mut watcher, &mut settler, "the refund", || async { s.payout_status(&refund).await == "confirmed" })
        .await;
    assert_eq!(s.usdc_of(payer).await - before, U256::from(5_000_000u64));
    let body = s.get(&format!("/api/v1/invoices/{id}")).await;
    assert_eq!(body["status"], "partially_refunded", "{body}");
    assert!(s.event_types(id).await.contains(&"invoice.refunded".to_owned()));
    s.reconciles().await;
}

async fn a_stuck_transaction_is_replaced_with_higher_fees(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    paid_usdc_invoice(&s, &mut watcher, "30", 30_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the sweep", || async {
        !s.usdc_of(s.treasury()).await.is_zero() && s.all_settled().await
    })
    .await;

    // Mining by hand from here, with blocks whose base fee is just above the first bid.
    s.chain.rpc("evm_setAutomine", json!([false])).await;
    let destination = PrivateKeySigner::random().address();
    let payout = s.payout(json!({"asset": "USDC", "amount": "10", "destination": destination.to_checksum(None)})).await;
    settler.tick().await.unwrap();
    let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    let mut conn = s.app.store.conn().await.unwrap();
    let first = chain_txs::attempts(&mut conn, tx.id).await.unwrap();
    assert_eq!(first.len(), 1);
    let too_low = first[0].max_fee_per_gas + 1;
    for _ in 0..2 {
        s.chain.rpc("anvil_setNextBlockBaseFeePerGas", json!([format!("{too_low:#x}")])).await;
        s.chain.mine(1).await;
        settler.tick().await.unwrap();
    }
    let attempts = chain_txs::attempts(&mut conn, tx.id).await.unwrap();
    assert_eq!(attempts.len(), 2, "replaced once after 2 blocks");
    let (old, new) = (&attempts[0], &attempts[1]);
    assert!(new.max_fee_per_gas > old.max_fee_per_gas + old.max_fee_per_gas / 10, "+10% and 1 wei");
    assert!(new.max_priority_fee_per_gas > old.max_priority_fee_per_gas + old.max_priority_fee_per_gas / 10);
    drop(conn);
    s.chain.rpc("anvil_setNextBlockBaseFeePerGas", json!([format!("{too_low:#x}")])).await;
    s.chain.mine(1).await;
    s.chain.rpc("evm_setAutomine", json!([true])).await;
    s.run_until(&mut watcher, &mut settler, "the replaced payout", || async {
        s.payout_status(&payout).await == "confirmed"
    })
    .await;
    let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    assert_eq!(tx.mined_tx_hash.as_deref(), Some(attempts[1].tx_hash.as_str()), "the replacement was mined");
    assert_eq!(s.usdc_of(destination).await, U256::from(10_000_000u64), "paid once");
    s.reconciles().await;
    s.assert_no_nonce_gap().await;
}

async fn a_crash_at_any_step_pays_exactly_once_with_no_nonce_gap(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    paid_usdc_invoice(&s, &mut watcher, "60", 60_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the sweep", || async {
        !s.usdc_of(s.treasury()).await.is_zero() && s.all_settled().await
    })
    .await;
    for point in [CrashPoint::BeforeSign, CrashPoint::AfterSign, CrashPoint::AfterBroadcast] {
        let destination = PrivateKeySigner::random().address();
        let payout =
            s.payout(json!({"asset": "USDC", "amount": "7", "destination": destination.to_checksum(None)})).await;
        let mut crashing = s.app.settler(&s.config);
        crashing.crash_at(Some(point));
        let crashed = crashing.tick().await;
        assert!(matches!(crashed, Err(SettleError::Crashed(p)) if p == point), "{point:?}: {crashed:?}");
        drop(crashing);
        // A fresh settler, as after a restart.
        let mut restarted = s.app.settler(&s.config);
        s.run_until(&mut watcher, &mut restarted, "the payout after a crash", || async {
            s.payout_status(&payout).await == "confirmed"
        })
        .await;
        for _ in 0..3 {
            restarted.tick().await.unwrap();
            s.chain.mine(1).await;
        }
        assert_eq!(s.usdc_of(destination).await, U256::from(7_000_000u64), "{point:?}: paid exactly once");
        s.assert_no_nonce_gap().await;
    }
    assert_eq!(s.balance("USDC", "available").await, "38.4"); // 60 less 1% less 3 x 7
    s.reconciles().await;
}

async fn an_outside_send_from_the_treasury_pauses_it(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    paid_usdc_invoice(&s, &mut watcher, "10", 10_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the sweep", || async {
        !s.usdc_of(s.treasury()).await.is_zero() && s.all_settled().await
    })
    .await;
    // Someone with the treasury key sends from it behind depositd's back.
    let key = s.app.state.wallet.treasury().unwrap().clone();
    let outsider = s.chain.wallet(key);
    let tx = TransactionRequest::default().with_to(PrivateKeySigner::random().address()).with_value(U256::from(1u64));
    assert!(outsider.send_transaction(tx).await.unwrap().get_receipt().await.unwrap().status());

    let mut restarted = s.app.settler(&s.config);
    restarted.tick().await.unwrap();
    let mut conn = s.app.store.conn().await.unwrap();
    let signers = chain_txs::signers(&mut conn, s.config.chain_id).await.unwrap();
    let (_, _, paused) = signers.iter().find(|(a, _, _)| *a == s.treasury().to_checksum(None)).unwrap();
    assert!(paused.as_deref().is_some_and(|r| r.contains("someone else sent")), "{paused:?}");
    drop(conn);
    let metrics = s.app.state.metrics.render();
    assert!(metrics.contains("depositd_settler_nonce_drift{chain=\"anvil\"} 1"), "{metrics}");

    // Nothing is signed with it until an operator resumes it.
    let destination = PrivateKeySigner::random().address();
    let payout = s.payout(json!({"asset": "USDC", "amount": "1", "destination": destination.to_checksum(None)})).await;
    restarted.tick().await.unwrap();
    assert_eq!(s.payout_status(&payout).await, "pending");
    restarted.resume_signer(s.treasury()).await.unwrap();
    s.run_until(&mut watcher, &mut restarted, "the payout after resuming", || async {
        s.payout_status(&payout).await == "confirmed"
    })
    .await;
    assert_eq!(s.usdc_of(destination).await, U256::from(1_000_000u64));
}

async fn a_native_pass_through_is_forwarded_and_its_gas_top_up_is_no_payment(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let merchant_wallet = PrivateKeySigner::random().address();
    let invoice = s
        .invoice(json!({
            "amount": "300", "currency": "USD", "asset": "ETH",
            "receiver_override": true, "receiver_override_address": merchant_wallet.to_checksum(None),
        }))
        .await;
    let id = invoice["id"].as_str().unwrap().to_owned();
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();
    let amount: u128 = invoice["pay"]["amount_base_units"].as_str().unwrap().parse().unwrap();
    let merchant_amount: U256 = invoice["merchant_amount_base_units"].as_str().unwrap().parse().unwrap();
    s.chain.pay_native(&address, amount).await;
    s.chain.mine(CONFIRMATIONS).await;
    s.run_until(&mut watcher, &mut settler, "the native forward", || async {
        !s.chain.native_balance(merchant_wallet).await.is_zero() && s.all_settled().await
    })
    .await;
    // More blocks: the watcher has seen the top-up and the forwards, and credited nothing more.
    for _ in 0..4 {
        s.chain.mine(1).await;
        while watcher.tick().await.unwrap() {}
        settler.tick().await.unwrap();
    }
    assert_eq!(s.chain.native_balance(merchant_wallet).await, merchant_amount, "the merchant amount, exactly");
    let body = s.get(&format!("/api/v1/invoices/{id}")).await;
    assert_eq!(body["status"], "paid");
    assert_eq!(body["payment_flags"], json!([]), "the top-up is not an overpayment: {body}");
    assert_eq!(body["payments"].as_array().unwrap().len(), 1, "{body}");
    assert!(!s.event_types(&id).await.contains(&"invoice.overpaid".to_owned()));
    assert_eq!(s.balance("ETH", "in_transit").await, "0");
    assert_eq!(s.balance("ETH", "available").await, "0");
    s.reconciles().await;
}

async fn an_outside_transaction_that_takes_a_payouts_nonce_fails_it_only_after_an_operator_looks(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    paid_usdc_invoice(&s, &mut watcher, "20", 20_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the sweep", || async {
        !s.usdc_of(s.treasury()).await.is_zero() && s.all_settled().await
    })
    .await;
    assert_eq!(s.balance("USDC", "available").await, "19.8");

    // The payout is signed and waits in the pool; someone with the treasury key replaces it.
    s.chain.rpc("evm_setAutomine", json!([false])).await;
    let destination = PrivateKeySigner::random().address();
    let payout = s.payout(json!({"asset": "USDC", "amount": "4", "destination": destination.to_checksum(None)})).await;
    settler.tick().await.unwrap();
    assert_eq!(s.payout_status(&payout).await, "submitted");
    let ours = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    let key = s.app.state.wallet.treasury().unwrap().clone();
    let outsider = s.chain.wallet(key);
    let replacement = TransactionRequest::default()
        .with_to(PrivateKeySigner::random().address())
        .with_value(U256::from(1u64))
        .with_nonce(ours.nonce.unwrap())
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(500_000_000_000)
        .with_max_priority_fee_per_gas(100_000_000_000);
    let pending = outsider.send_transaction(replacement).await.unwrap();
    s.chain.mine(1).await;
    s.chain.rpc("evm_setAutomine", json!([true])).await;
    assert!(pending.get_receipt().await.unwrap().status());

    // One block deep, the nonce's use could still be a reorg's doing: the settler waits.
    settler.tick().await.unwrap();
    let mut conn = s.app.store.conn().await.unwrap();
    let signers = chain_txs::signers(&mut conn, s.config.chain_id).await.unwrap();
    drop(conn);
    assert!(signers.iter().all(|(_, _, p)| p.is_none()), "no pause on a use shallower than the confirmations");

    // At the confirmations' depth the settler sees the nonce used and none of its attempts mined:
    // it stops signing, releases nothing, and says so.
    s.chain.mine(CONFIRMATIONS - 1).await;
    settler.tick().await.unwrap();
    assert_eq!(s.payout_status(&payout).await, "submitted", "no verdict on one reading");
    assert_eq!(s.balance("USDC", "reserved").await, "4");
    let mut conn = s.app.store.conn().await.unwrap();
    let signers = chain_txs::signers(&mut conn, s.config.chain_id).await.unwrap();
    drop(conn);
    assert!(signers.iter().any(|(a, _, p)| *a == s.treasury().to_checksum(None) && p.is_some()));

    // The operator looks and resumes the signer: the payout that never happened fails, its
    // reservation comes back, and payouts flow again.
    s.chain.mine(CONFIRMATIONS).await;
    settler.resume_signer(s.treasury()).await.unwrap();
    assert_eq!(s.payout_status(&payout).await, "failed");
    assert_eq!(s.balance("USDC", "reserved").await, "0");
    assert_eq!(s.balance("USDC", "available").await, "19.8");
    assert!(s.usdc_of(destination).await.is_zero());
    let next = s.payout(json!({"asset": "USDC", "amount": "2", "destination": destination.to_checksum(None)})).await;
    s.run_until(&mut watcher, &mut settler, "the next payout", || async {
        s.payout_status(&next).await == "confirmed"
    })
    .await;
    assert_eq!(s.usdc_of(destination).await, U256::from(2_000_000u64));
    // The outside transaction's gas left the treasury behind the ledger's back: reconciliation
    // says so (the tokens all add up).
    let state = &s.app.state;
    let outcome = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
    let report = outcome.render();
    assert!(!outcome.is_ok(), "{report}");
    assert_eq!(outcome.report.problems.len(), 1, "{report}");
    assert!(outcome.report.problems[0].contains(" ETH at deposit addresses and the hot wallet"), "{report}");
}

/// A JSON-RPC proxy in front of anvil that answers the next `refuse` calls of
/// `eth_sendRawTransaction` with HTTP 503 (without forwarding them), as a provider in trouble
/// does; everything else passes through.
async fn refusing_proxy(upstream: String, refuse: std::sync::Arc<std::sync::atomic::AtomicU64>) -> String {
    use std::sync::atomic::Ordering;
    let client = reqwest::Client::new();
    let handler = move |body: axum::body::Bytes| {
        let (client, upstream, refuse) = (client.clone(), upstream.clone(), refuse.clone());
        async move {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if request["method"] == "eth_sendRawTransaction"
                && refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
            {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response();
            }
            let answer =
                client.post(&upstream).header("content-type", "application/json").body(body).send().await.unwrap();
            let answer: Value = answer.json().await.unwrap();
            axum::Json(answer).into_response()
        }
    };
    use axum::response::IntoResponse;
    let app = axum::Router::new().route("/", axum::routing::post(handler));
    format!("http://{}/", depositd_testkit::http::serve(app).await)
}

async fn a_refused_broadcast_is_retried_at_once_and_never_holds_up_later_nonces(db: TestDb) {
    use std::sync::atomic::Ordering;
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    paid_usdc_invoice(&s, &mut watcher, "60", 60_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the sweep", || async {
        !s.usdc_of(s.treasury()).await.is_zero() && s.all_settled().await
    })
    .await;
    let refuse = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut chain = s.config.clone();
    chain.rpc_urls = vec![refusing_proxy(s.chain.rpc_url(), refuse.clone()).await.into()];
    let state = &s.app.state;
    let mut settings = state.config.settings.settler.clone();
    settings.stall_alert_secs = 0; // every unmined transaction counts as stalled, to see the metric
    let mut settler = Settler::new(
        chain,
        s.app.store.clone(),
        state.wallet.clone(),
        settings,
        state.config.settings.api.public_url.clone(),
        state.sessions.clone(),
        state.metrics.clone(),
    )
    .unwrap();
    let used = || async { s.chain.provider().get_transaction_count(s.treasury()).await.unwrap() };
    let start = used().await;

    // One refusal: the broadcast is tried again within the same step (anvil mines on arrival).
    let first = PrivateKeySigner::random().address();
    let payout = s.payout(json!({"asset": "USDC", "amount": "5", "destination": first.to_checksum(None)})).await;
    refuse.store(1, Ordering::SeqCst);
    settler.tick().await.unwrap();
    assert_eq!(refuse.load(Ordering::SeqCst), 0, "the proxy refused once");
    assert_eq!(used().await, start + 1, "the payout went out in the step that signed it");
    assert_eq!(s.payout_status(&payout).await, "submitted");

    // Refused through every retry: it stays signed, counted as stalled, and the next step sends
    // it first, before the payout signed after it, so neither waits.
    let second = PrivateKeySigner::random().address();
    let refused = s.payout(json!({"asset": "USDC", "amount": "6", "destination": second.to_checksum(None)})).await;
    refuse.store(100, Ordering::SeqCst);
    settler.tick().await.unwrap();
    settler.tick().await.unwrap();
    assert_eq!(used().await, start + 1, "nothing got through");
    let metrics = s.app.client.get(s.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"depositd_settler_stalled_transactions{chain="anvil",reason="broadcast_refused"} 1"#),
        "{metrics}"
    );
    refuse.store(0, Ordering::SeqCst);
    let third = PrivateKeySigner::random().address();
    let later = s.payout(json!({"asset": "USDC", "amount": "7", "destination": third.to_checksum(None)})).await;
    settler.tick().await.unwrap();
    assert_eq!(used().await, start + 3, "the refused payout and the one after it are both mined after one step");
    s.run_until(&mut watcher, &mut settler, "the payouts", || async {
        s.payout_status(&payout).await == "confirmed"
            && s.payout_status(&refused).await == "confirmed"
            && s.payout_status(&later).await == "confirmed"
    })
    .await;
    for (destination, amount) in [(first, 5_000_000u64), (second, 6_000_000), (third, 7_000_000)] {
        assert_eq!(s.usdc_of(destination).await, U256::from(amount), "paid exactly once");
    }
    s.assert_no_nonce_gap().await;
    s.reconciles().await;
}

async fn a_confirmed_payout_a_deep_reorg_took_away_is_sent_again_once(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    paid_usdc_invoice(&s, &mut watcher, "60", 60_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the sweep", || async {
        !s.usdc_of(s.treasury()).await.is_zero() && s.all_settled().await
    })
    .await;
    s.chain.mine(6).await;
    let destination = PrivateKeySigner::random().address();
    let payout = s.payout(json!({"asset": "USDC", "amount": "9", "destination": destination.to_checksum(None)})).await;
    s.run_until(&mut watcher, &mut settler, "the payout", || async { s.payout_status(&payout).await == "confirmed" })
        .await;
    assert_eq!(s.usdc_of(destination).await, U256::from(9_000_000u64));
    s.chain.mine(2).await;
    let used = s.chain.provider().get_transaction_count(s.treasury()).await.unwrap();

    // A reorg deeper than the confirmations replaces the payout's block and those after it with
    // empty ones: the payout is gone from the chain, though depositd had confirmed it.
    let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    let head = s.chain.provider().get_block_number().await.unwrap();
    let depth = head - tx.mined_block.unwrap() + 1;
    assert!(depth > CONFIRMATIONS, "deeper than the confirmations ({depth})");
    s.chain.rpc("anvil_reorg", json!([depth, []])).await;
    assert_eq!(s.usdc_of(destination).await, U256::ZERO, "the reorg took the payout away");
    assert_eq!(s.chain.provider().get_transaction_count(s.treasury()).await.unwrap(), used - 1);

    // The settler notices, sends the same transaction again, and it confirms: paid once.
    s.run_until(&mut watcher, &mut settler, "the payout again", || async {
        !s.usdc_of(destination).await.is_zero() && s.all_settled().await
    })
    .await;
    for _ in 0..3 {
        settler.tick().await.unwrap();
        s.chain.mine(1).await;
    }
    assert_eq!(s.usdc_of(destination).await, U256::from(9_000_000u64), "paid exactly once");
    assert_eq!(s.payout_status(&payout).await, "confirmed");
    let events = s.event_types(payout["id"].as_str().unwrap()).await;
    let confirmed = events.iter().filter(|e| *e == "payout.confirmed").count();
    assert_eq!(confirmed, 1, "announced once: {events:?}");
    let again = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    assert_eq!(again.nonce, tx.nonce, "the same nonce");
    s.assert_no_nonce_gap().await;
    s.reconciles().await;
}

/// What a reorged-away payout pays out: USDC (the operator pays all its gas) or ETH (the
/// merchant pays its gas, up to the fee reserve).
#[derive(Clone, Copy)]
enum PaidIn {
    Usdc,
    Eth,
}

impl PaidIn {
    fn asset(self) -> &'static str {
        match self {
            PaidIn::Usdc => "USDC",
            PaidIn::Eth => "ETH",
        }
    }

    /// The payout's amount, as the API takes it and in base units.
    fn amount(self) -> (&'static str, U256) {
        match self {
            PaidIn::Usdc => ("9", U256::from(9_000_000u64)),
            PaidIn::Eth => ("0.5", U256::from(500_000_000_000_000_000u64)),
        }
    }

    async fn balance_of(self, s: &Setup, owner: Address) -> U256 {
        match self {
            PaidIn::Usdc => s.usdc_of(owner).await,
            PaidIn::Eth => s.chain.native_balance(owner).await,
        }
    }

    /// A paid invoice in the asset, swept into the treasury.
    async fn fund(self, s: &Setup, watcher: &mut ChainWatcher, settler: &mut Settler) {
        match self {
            PaidIn::Usdc => {
                paid_usdc_invoice(s, watcher, "60", 60_000_000).await;
                s.run_until(watcher, settler, "the sweep", || async {
                    !s.usdc_of(s.treasury()).await.is_zero() && s.all_settled().await
                })
                .await;
            }
            PaidIn::Eth => {
                let invoice = s.invoice(json!({"amount": "3000", "currency": "USD", "asset": "ETH"})).await;
                s.chain.pay_native(invoice["pay"]["address"].as_str().unwrap(), 1_000_000_000_000_000_000).await;
                s.chain.mine(CONFIRMATIONS).await;
                s.run_until(watcher, settler, "the ETH sweep", || async {
                    s.balance("ETH", "available").await != "0" && s.all_settled().await
                })
                .await;
            }
        }
    }
}

/// A payout confirmed, then taken away by a reorg deeper than the confirmations, its transaction
/// dropped from the node's pool too (as a restarted node would); then `blocks` more blocks are
/// mined before the settler looks again. Returns the payout, its destination and the treasury's
/// mined count before the reorg.
async fn payout_reorged_away(
    s: &Setup,
    watcher: &mut ChainWatcher,
    settler: &mut Settler,
    blocks: u64,
    paid_in: PaidIn,
) -> (Value, Address, u64) {
    paid_in.fund(s, watcher, settler).await;
    s.chain.mine(6).await;
    let destination = PrivateKeySigner::random().address();
    let body =
        json!({"asset": paid_in.asset(), "amount": paid_in.amount().0, "destination": destination.to_checksum(None)});
    let payout = s.payout(body).await;
    s.run_until(watcher, settler, "the payout", || async { s.payout_status(&payout).await == "confirmed" }).await;
    let used = s.chain.provider().get_transaction_count(s.treasury()).await.unwrap();
    let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    let head = s.chain.provider().get_block_number().await.unwrap();
    s.chain.rpc("anvil_reorg", json!([head - tx.mined_block.unwrap() + 1, []])).await;
    s.chain.rpc("anvil_removePoolTransactions", json!([s.treasury().to_checksum(None)])).await;
    s.chain.mine(blocks).await;
    assert_eq!(paid_in.balance_of(s, destination).await, U256::ZERO, "the reorg took the payout away");
    assert_eq!(s.chain.provider().get_transaction_count(s.treasury()).await.unwrap(), used - 1);
    (payout, destination, used)
}

/// The payout is sent again, once, at its own nonce, and everything reconciles.
async fn paid_again_once(
    s: &Setup,
    watcher: &mut ChainWatcher,
    settler: &mut Settler,
    paid_in: PaidIn,
    payout: &Value,
    destination: Address,
    used: u64,
) {
    s.run_until(watcher, settler, "the payout again", || async {
        !paid_in.balance_of(s, destination).await.is_zero() && s.all_settled().await
    })
    .await;
    assert_eq!(paid_in.balance_of(s, destination).await, paid_in.amount().1, "paid exactly once");
    assert_eq!(s.payout_status(payout).await, "confirmed");
    assert_eq!(s.chain.provider().get_transaction_count(s.treasury()).await.unwrap(), used, "at its own nonce");
    s.assert_no_nonce_gap().await;
    s.reconciles().await;
}

/// The reorg happens between two settler steps and the head then runs 40 blocks on, past the
/// 16 blocks a recheck reaches back from the head: the next step still finds the payout gone
/// (it reaches back from where the previous recheck stood). The chaos test lost a sweep this
/// way: never sent again, the ledger counting it swept, the signer's next nonce waiting for ever.
async fn a_reorged_away_payout_is_sent_again_however_far_the_head_ran(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let (payout, destination, used) = payout_reorged_away(&s, &mut watcher, &mut settler, 40, PaidIn::Usdc).await;
    paid_again_once(&s, &mut watcher, &mut settler, PaidIn::Usdc, &payout, destination, used).await;
}

/// The same with the settler down across the reorg: a new one (a restarted daemon) finds, at
/// its start-up nonce check, the payout recorded confirmed at a nonce the chain no longer counts.
async fn a_reorged_away_payout_is_sent_again_by_a_settler_that_was_down(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let (payout, destination, used) = payout_reorged_away(&s, &mut watcher, &mut settler, 40, PaidIn::Usdc).await;
    drop(settler);
    let mut restarted = s.app.settler(&s.config);
    paid_again_once(&s, &mut watcher, &mut restarted, PaidIn::Usdc, &payout, destination, used).await;
}

/// The network fees the ledger holds for transaction `tx_id`: its `gas` entries, net.
async fn ledger_gas_of(s: &Setup, tx_id: uuid::Uuid) -> U256 {
    ledger_net(s, tx_id, "network_fees", "debit").await
}

/// What the entries of transaction `tx_id` put into the platform's `kind` account, net on its
/// `normal` side.
async fn ledger_net(s: &Setup, tx_id: uuid::Uuid, kind: &str, normal: &str) -> U256 {
    let mut conn = s.app.store.conn().await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.direction, p.amount_base_units FROM ledger_postings p JOIN ledger_entries e ON e.id = p.entry_id \
         JOIN ledger_accounts a ON a.id = p.account_id WHERE e.transaction_id = $1 AND a.owner = 'platform' \
         AND a.kind = $2",
    )
    .bind(tx_id.to_string())
    .bind(kind)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let (mut up, mut down) = (U256::ZERO, U256::ZERO);
    for (direction, amount) in rows {
        let amount: U256 = amount.parse().unwrap();
        if direction == normal { up += amount } else { down += amount }
    }
    up - down
}

/// The reorged-away payout, sent again while blocks are mined by hand, waits past
/// `bump_after_blocks` and is replaced with higher fees; the replacement is mined. It cost
/// another fee than the first mining, whose gas entry stays: the ledger posts the difference, so
/// its network fees are what the chain charged. (The chaos test once found the ledger holding a
/// whole fee more ETH than the treasury after a gas top-up went this way.) A USDC payout's gas is
/// all the operator's; an ETH payout's merchant was charged at the first confirmation, and the
/// difference is the operator's.
async fn a_reorged_away_token_payout_mined_again_at_another_price_posts_what_the_chain_charged(db: TestDb) {
    mined_again_at_another_price(&db, PaidIn::Usdc).await;
}

async fn a_reorged_away_native_payout_mined_again_at_another_price_charges_the_merchant_once(db: TestDb) {
    mined_again_at_another_price(&db, PaidIn::Eth).await;
}

async fn mined_again_at_another_price(db: &TestDb, paid_in: PaidIn) {
    let s = setup(db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let (payout, destination, used) = payout_reorged_away(&s, &mut watcher, &mut settler, 40, paid_in).await;
    let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    let first_gas = ledger_gas_of(&s, tx.id).await;
    let merchant_gas: U256 =
        s.get(&format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await["network_fee_base_units"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert!(!(first_gas + merchant_gas).is_zero(), "the first mining's gas is in the ledger");

    s.chain.rpc("evm_setAutomine", json!([false])).await;
    settler.tick().await.unwrap(); // finds it gone, sends it again; it waits: replaced at once
    // The replacement is mined in a block whose base fee is the first bid's whole max fee: it
    // pays more per gas than the first mining could have.
    let first_bid = {
        let mut conn = s.app.store.conn().await.unwrap();
        chain_txs::attempts(&mut conn, tx.id).await.unwrap()[0].max_fee_per_gas
    };
    s.chain.rpc("anvil_setNextBlockBaseFeePerGas", json!([format!("{first_bid:#x}")])).await;
    s.chain.mine(1).await;
    s.chain.rpc("evm_setAutomine", json!([true])).await;
    paid_again_once(&s, &mut watcher, &mut settler, paid_in, &payout, destination, used).await;

    let again = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    let attempts = {
        let mut conn = s.app.store.conn().await.unwrap();
        chain_txs::attempts(&mut conn, tx.id).await.unwrap()
    };
    assert_eq!(attempts.len(), 2, "replaced once");
    assert_eq!(again.mined_tx_hash.as_deref(), Some(attempts[1].tx_hash.as_str()), "the replacement was mined");
    let receipt =
        s.chain.provider().get_transaction_receipt(attempts[1].tx_hash.parse().unwrap()).await.unwrap().unwrap();
    let charged = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert!(
        charged > first_gas + merchant_gas,
        "the second mining cost more: {charged} after {first_gas} + {merchant_gas}"
    );
    let body = s.get(&format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await;
    assert_eq!(body["network_fee_base_units"], merchant_gas.to_string(), "the merchant is charged once");
    assert_eq!(
        ledger_gas_of(&s, tx.id).await + merchant_gas,
        charged,
        "the merchant's share and the operator's network fees are what the chain charged"
    );
    // Another step changes nothing.
    settler.tick().await.unwrap();
    assert_eq!(ledger_gas_of(&s, tx.id).await + merchant_gas, charged);
}

/// Sets `owner`'s balance of the test token `token` in storage (TestToken's `balanceOf` is its
/// fourth slot): a fault only a deeper reorg would otherwise make, the treasury short of a token.
async fn set_token_balance(s: &Setup, token: Address, owner: Address, units: u64) {
    let mut key = [0u8; 64];
    key[12..32].copy_from_slice(owner.as_slice());
    key[63] = 3;
    let slot = alloy::primitives::keccak256(key);
    let value = alloy::primitives::B256::from(U256::from(units));
    s.chain.rpc("anvil_setStorageAt", json!([token.to_checksum(None), slot, value])).await;
    assert_eq!(s.usdc_of(owner).await, U256::from(units));
}

/// The reorged-away payout is sent again when the treasury no longer holds its USDC: it reverts.
/// The ledger still counts it paid (its reservation left when it confirmed), so nothing is
/// released to the merchant a second time and the settler goes on: the transaction is failed,
/// its gas posted, the payout left confirmed for an operator, and the next payout confirms.
async fn a_reorged_away_payout_that_reverts_when_sent_again_is_not_released_a_second_time(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let (payout, destination, _) = payout_reorged_away(&s, &mut watcher, &mut settler, 40, PaidIn::Usdc).await;
    let available = s.balance("USDC", "available").await;
    let held = s.usdc_of(s.treasury()).await;
    set_token_balance(&s, s.usdc, s.treasury(), 1_000_000).await;

    let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    s.run_until(&mut watcher, &mut settler, "the resent payout to fail", || async {
        let mut conn = s.app.store.conn().await.unwrap();
        let open = chain_txs::open(&mut conn, s.config.chain_id).await.unwrap();
        !open.iter().any(|t| t.id == tx.id)
    })
    .await;
    let failed = s.transactions().await.into_iter().find(|t| t.id == tx.id).unwrap();
    assert_eq!(failed.state, TxState::Failed, "{failed:?}");
    assert_eq!(s.usdc_of(destination).await, U256::ZERO);
    assert_eq!(s.payout_status(&payout).await, "confirmed", "left as the merchant was told, for an operator");
    assert_eq!(s.balance("USDC", "available").await, available, "nothing released a second time");
    assert_eq!(s.balance("USDC", "reserved").await, "0");
    assert!(!ledger_gas_of(&s, tx.id).await.is_zero(), "the reverted send's gas is posted");
    let metrics = s.app.client.get(s.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let alerted =
        "depositd_settler_transactions_total{chain=\"anvil\",purpose=\"payout\",state=\"failed_after_confirmed\"} 1";
    assert!(metrics.contains(alerted), "counted for the alert: {alerted}");

    // The settler goes on: with the treasury's USDC back, the next payout confirms.
    set_token_balance(&s, s.usdc, s.treasury(), u64::try_from(held).unwrap()).await;
    let next = PrivateKeySigner::random().address();
    let second = s.payout(json!({"asset": "USDC", "amount": "2", "destination": next.to_checksum(None)})).await;
    s.run_until(&mut watcher, &mut settler, "the next payout", || async {
        s.payout_status(&second).await == "confirmed"
    })
    .await;
    assert_eq!(s.usdc_of(next).await, U256::from(2_000_000u64));
    s.assert_no_nonce_gap().await;
}

/// A reorg deeper than the confirmations replaces the confirmed payout's block and puts the same
/// transaction into the next one, whose base fee is another (lower: it follows an empty block):
/// the treasury's count still includes it, so it is not sent again; the settler finds its
/// receipt elsewhere, confirms it again there, and the ledger follows what the chain charged.
/// A USDC payout's gas is the operator's; an ETH payout's merchant stays charged the first
/// mining's gas, and the hot wallet keeps what the second cost less. Paid and announced once.
async fn a_confirmed_payout_a_deep_reorg_moves_to_a_later_block_is_confirmed_again_at_its_new_cost(db: TestDb) {
    moved_to_a_later_block(&db, PaidIn::Usdc).await;
}

async fn a_confirmed_native_payout_moved_to_a_cheaper_block_keeps_the_merchants_charge(db: TestDb) {
    moved_to_a_later_block(&db, PaidIn::Eth).await;
}

async fn moved_to_a_later_block(db: &TestDb, paid_in: PaidIn) {
    let s = setup(db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    paid_in.fund(&s, &mut watcher, &mut settler).await;
    s.chain.mine(6).await;
    let destination = PrivateKeySigner::random().address();
    let body =
        json!({"asset": paid_in.asset(), "amount": paid_in.amount().0, "destination": destination.to_checksum(None)});
    let payout = s.payout(body).await;
    s.run_until(&mut watcher, &mut settler, "the payout", || async { s.payout_status(&payout).await == "confirmed" })
        .await;
    s.chain.mine(2).await;
    let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
    let (block, hash) = (tx.mined_block.unwrap(), tx.mined_tx_hash.clone().unwrap());
    let raw = s.chain.rpc("eth_getRawTransactionByHash", json!([hash])).await;
    let head = s.chain.provider().get_block_number().await.unwrap();
    let depth = head - block + 1;
    assert!(depth > CONFIRMATIONS, "deeper than the confirmations ({depth})");
    let payout_path = format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap());
    let merchant_gas: U256 = s.get(&payout_path).await["network_fee_base_units"].as_str().unwrap().parse().unwrap();
    let first = ledger_gas_of(&s, tx.id).await + merchant_gas;
    s.chain.rpc("anvil_reorg", json!([depth, [[raw, 1]]])).await;
    let receipt = s.chain.provider().get_transaction_receipt(hash.parse().unwrap()).await.unwrap().unwrap();
    let moved_to = receipt.block_number.unwrap();
    assert_eq!(moved_to, block + 1, "re-included one block later");
    let charged = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert!(charged < first, "the new block charged less: {charged} after {first}");

    s.run_until(&mut watcher, &mut settler, "the payout confirmed at its new block", || async {
        let tx = s.transactions().await.into_iter().find(|t| t.purpose == Purpose::Payout).unwrap();
        tx.state == TxState::Confirmed && tx.mined_block == Some(moved_to)
    })
    .await;
    let body = s.get(&payout_path).await;
    assert_eq!(body["network_fee_base_units"], merchant_gas.to_string(), "the merchant is charged once");
    let kept = ledger_net(&s, tx.id, "fee_revenue", "credit").await;
    assert_eq!(
        ledger_gas_of(&s, tx.id).await + merchant_gas - kept,
        charged,
        "what left the hot wallet in the ledger is what the chain charged"
    );
    if let PaidIn::Eth = paid_in {
        assert_eq!(kept, first - charged, "the hot wallet keeps what the new block cost less");
    }
    assert_eq!(paid_in.balance_of(&s, destination).await, paid_in.amount().1, "paid exactly once");
    let events = s.event_types(payout["id"].as_str().unwrap()).await;
    assert_eq!(events.iter().filter(|e| *e == "payout.confirmed").count(), 1, "announced once: {events:?}");
    let attempts = {
        let mut conn = s.app.store.conn().await.unwrap();
        chain_txs::attempts(&mut conn, tx.id).await.unwrap()
    };
    assert_eq!(attempts.len(), 1, "nothing signed again");
    s.assert_no_nonce_gap().await;
    s.reconciles().await;
}
