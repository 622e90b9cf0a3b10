//! Cold storage (issue 21) against a real anvil chain, on both backends: the treasury's USDC
//! beyond `hot_max` goes to the cold address in exactly one transfer, the ledger's `cold` account
//! equals what the address holds and verify passes; a pending payout's amount stays hot and the
//! payout succeeds; a crash at any step of the cold transfer still sends it exactly once; an
//! unsigned transfer a payout outgrew is replanned; the native coin keeps the operator's gas money.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use depositd_core::api_key::Scope;
use depositd_core::chain_tx::{ChainTx, Purpose, TxState};
use depositd_core::config::{ChainConfig, ColdStorage};
use depositd_core::ledger::{self, Account, AccountKind};
use depositd_core::money::BaseUnits;
use depositd_core::store::chain_txs;
use depositd_settler::{CrashPoint, SettleError, Settler};
use depositd_testkit::chain::TestChain;
use depositd_watcher::ChainWatcher;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, both_backends, depositd, use_test_chain};

both_backends!(
    the_treasurys_excess_over_hot_max_goes_cold_exactly_once,
    a_cold_transfer_leaves_what_a_pending_payout_needs,
    a_crash_at_any_step_of_a_cold_transfer_sends_it_once,
    native_coin_goes_cold_but_the_operators_gas_money_stays,
    an_unsigned_cold_transfer_that_a_payout_outgrew_is_planned_anew,
    a_payout_created_between_planning_and_signing_is_not_starved,
    the_database_refuses_a_second_open_cold_transfer,
    the_real_daemon_killed_mid_cold_transfer_sends_it_once,
);

const CONFIRMATIONS: u64 = 2;

struct Setup {
    chain: TestChain,
    usdc: Address,
    app: TestApp,
    key: String,
    /// The chain as the daemon runs it: USDC with cold storage.
    config: ChainConfig,
    cold: Address,
}

/// A chain whose USDC treasury keeps `hot_max` whole USDC and sends the rest to a fresh address.
async fn setup(db: &TestDb, hot_max: &str) -> Setup {
    setup_for(db, "USDC", hot_max).await
}

async fn setup_for(db: &TestDb, asset: &str, hot_max: &str) -> Setup {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let cold = PrivateKeySigner::random().address();
    let mut config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, CONFIRMATIONS, &[("USDC", usdc)]);
        c.chains[0]
            .cold_storage
            .insert(asset.into(), ColdStorage { cold_address: cold, hot_max: hot_max.parse().unwrap() });
        config = Some(c.chains[0].clone());
    })
    .await;
    let config = config.unwrap();
    let treasury = app.state.wallet.treasury_address();
    depositd::dev::fund_treasury(&app.store, &config, treasury, 10_000_000_000_000_000_000).await.unwrap();
    let (_, key) = app.merchant("Cold Shop", &Scope::ALL).await;
    Setup { chain, usdc, app, key, config, cold }
}

impl Setup {
    fn treasury(&self) -> Address {
        self.app.state.wallet.treasury_address()
    }

    /// The same chain without cold storage: a settler that only sweeps and pays.
    fn without_cold(&self) -> ChainConfig {
        let mut config = self.config.clone();
        config.cold_storage.clear();
        config
    }

    /// Watcher, settler, one more block; until `done` holds (at most 40 rounds).
    async fn run_until<F, Fut>(&self, watcher: &mut ChainWatcher, settler: &mut Settler, what: &str, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::helpers::settle_until(&self.chain, watcher, settler, 40, what, done).await;
    }

    /// A few more rounds in which nothing may happen.
    async fn idle(&self, watcher: &mut ChainWatcher, settler: &mut Settler) {
        for _ in 0..4 {
            while watcher.tick().await.unwrap() {}
            settler.tick().await.unwrap();
            self.chain.mine(1).await;
        }
    }

    async fn usdc_of(&self, owner: Address) -> U256 {
        self.chain.token_balance(self.usdc, owner).await
    }

    /// A USDC invoice for `units` base units, paid, confirmed and credited.
    async fn paid_invoice(&self, watcher: &mut ChainWatcher, units: u64) {
        let amount = BaseUnits::from(units).to_display(6);
        let invoice =
            self.app.created_invoice(&self.key, json!({"amount": amount, "currency": "USD", "asset": "USDC"})).await;
        self.chain.pay_token(self.usdc, invoice["pay"]["address"].as_str().unwrap(), units).await;
        self.chain.mine(CONFIRMATIONS).await;
        while watcher.tick().await.unwrap() {}
        let (status, body) =
            self.app.get_json(&self.key, &format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("paid")), "{body}");
    }

    async fn cold_transfers(&self) -> Vec<ChainTx> {
        let mut conn = self.app.store.conn().await.unwrap();
        chain_txs::touching(&mut conn, self.config.chain_id, &self.treasury().to_checksum(None))
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.purpose == Purpose::ColdTransfer)
            .collect()
    }

    async fn all_settled(&self) -> bool {
        let mut conn = self.app.store.conn().await.unwrap();
        chain_txs::open(&mut conn, self.config.chain_id).await.unwrap().is_empty()
    }

    async fn ledger(&self, kind: AccountKind) -> U256 {
        self.ledger_of(kind, "USDC").await
    }

    async fn ledger_of(&self, kind: AccountKind, asset: &str) -> U256 {
        let mut conn = self.app.store.conn().await.unwrap();
        ledger::balance(&mut conn, &Account::platform(kind, self.config.chain_id, asset)).await.unwrap().0
    }

    /// `depositd ledger verify`'s checks, on chain included; returns its report.
    async fn reconciles(&self) -> String {
        let state = &self.app.state;
        let outcome = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
        assert!(outcome.is_ok(), "{}", outcome.render());
        outcome.render()
    }
}

fn usdc(whole: u64) -> U256 {
    U256::from(whole * 1_000_000)
}

async fn the_treasurys_excess_over_hot_max_goes_cold_exactly_once(db: TestDb) {
    let s = setup(&db, "50").await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));

    // 30 USDC swept: below hot_max, nothing goes cold.
    s.paid_invoice(&mut watcher, 30_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the first sweep", || async {
        s.usdc_of(s.treasury()).await == usdc(30) && s.all_settled().await
    })
    .await;
    s.idle(&mut watcher, &mut settler).await;
    assert!(s.cold_transfers().await.is_empty());
    assert_eq!(s.usdc_of(s.cold).await, U256::ZERO);

    // 45 more: the treasury passes hot_max (75 > 50) and sends the 25 beyond it.
    s.paid_invoice(&mut watcher, 45_000_000).await;
    s.run_until(&mut watcher, &mut settler, "the cold transfer", || async {
        !s.usdc_of(s.cold).await.is_zero() && s.all_settled().await
    })
    .await;
    s.idle(&mut watcher, &mut settler).await;

    let transfers = s.cold_transfers().await;
    assert_eq!(transfers.len(), 1, "exactly one cold transfer: {transfers:#?}");
    assert_eq!((transfers[0].state, transfers[0].value.0), (TxState::Confirmed, usdc(25)));
    assert_eq!(transfers[0].to_address, s.cold.to_checksum(None));
    assert_eq!(s.usdc_of(s.cold).await, usdc(25));
    assert_eq!(s.usdc_of(s.treasury()).await, usdc(50));
    assert_eq!(s.ledger(AccountKind::Cold).await, usdc(25), "the ledger's cold account equals the cold address");
    assert_eq!(s.ledger(AccountKind::HotWallet).await, usdc(50));
    let report = s.reconciles().await;
    assert!(
        report.contains(&format!("anvil USDC: ledger moved 25 to the cold address {}, which holds 25", s.cold)),
        "{report}"
    );

    // The cold address holding less than the ledger moved there fails verify.
    let cold_key = PrivateKeySigner::random();
    let mut config = (*s.app.state.config).clone();
    config.chains[0].cold_storage.get_mut("USDC").unwrap().cold_address = cold_key.address();
    let outcome = depositd::reconcile::reconcile(&s.app.store, &config, &s.app.state.wallet, true).await.unwrap();
    assert!(!outcome.is_ok());
    assert!(
        outcome.report.problems.iter().any(|p| p.contains("to the cold address") && p.contains("holds only 0")),
        "{}",
        outcome.render()
    );
}

async fn a_cold_transfer_leaves_what_a_pending_payout_needs(db: TestDb) {
    let s = setup(&db, "10").await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    s.paid_invoice(&mut watcher, 60_000_000).await;

    // Reserved before the money reaches the treasury: the payout waits for the sweep.
    let destination = PrivateKeySigner::random().address();
    let response = s
        .app
        .client
        .post(s.app.url("/api/v1/payouts"))
        .header("x-api-key", &s.key)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({"asset": "USDC", "amount": "30", "destination": destination.to_checksum(None)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let payout: Value = response.json().await.unwrap();

    s.run_until(&mut watcher, &mut settler, "the payout and the cold transfer", || async {
        s.usdc_of(destination).await == usdc(30) && !s.usdc_of(s.cold).await.is_zero() && s.all_settled().await
    })
    .await;
    s.idle(&mut watcher, &mut settler).await;

    // 60 swept; 10 stays hot, 30 for the payout: 20 goes cold.
    let transfers = s.cold_transfers().await;
    assert_eq!(transfers.len(), 1, "{transfers:#?}");
    assert_eq!(s.usdc_of(s.cold).await, usdc(20));
    assert_eq!(s.usdc_of(s.treasury()).await, usdc(10));
    let (status, body) = s.app.get_json(&s.key, &format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
    assert_eq!(s.ledger(AccountKind::Cold).await, usdc(20));
    s.reconciles().await;
}

async fn a_crash_at_any_step_of_a_cold_transfer_sends_it_once(db: TestDb) {
    let s = setup(&db, "5").await;
    let mut watcher = s.app.watcher(&s.config);
    let mut sweeper = s.app.settler(&s.without_cold());
    let mut cold_total = U256::ZERO;
    for (i, point) in
        [CrashPoint::BeforeSign, CrashPoint::AfterSign, CrashPoint::AfterBroadcast].into_iter().enumerate()
    {
        // Money arrives in the treasury while no settler plans cold transfers.
        let paid = 20_000_000 + 1_000_000 * i as u64;
        s.paid_invoice(&mut watcher, paid).await;
        let before = s.usdc_of(s.treasury()).await;
        s.run_until(&mut watcher, &mut sweeper, "the sweep", || async {
            s.usdc_of(s.treasury()).await == before + U256::from(paid) && s.all_settled().await
        })
        .await;
        let excess = s.usdc_of(s.treasury()).await - usdc(5);

        // The settler that plans it dies at `point`...
        let mut crashing = s.app.settler(&s.config);
        crashing.crash_at(Some(point));
        let crashed = crashing.tick().await;
        assert!(matches!(crashed, Err(SettleError::Crashed(p)) if p == point), "{point:?}: {crashed:?}");
        drop(crashing);
        // ...and one started afresh finishes it.
        let mut restarted = s.app.settler(&s.config);
        cold_total += excess;
        s.run_until(&mut watcher, &mut restarted, "the cold transfer after a crash", || async {
            s.usdc_of(s.cold).await == cold_total && s.all_settled().await
        })
        .await;
        s.idle(&mut watcher, &mut restarted).await;
        assert_eq!(s.usdc_of(s.cold).await, cold_total, "{point:?}: sent exactly once");
        assert_eq!(s.cold_transfers().await.len(), i + 1, "{point:?}: one cold transfer per crash");
        assert_eq!(s.usdc_of(s.treasury()).await, usdc(5));
        assert_eq!(s.ledger(AccountKind::Cold).await, cold_total);
    }
    s.reconciles().await;
}

async fn native_coin_goes_cold_but_the_operators_gas_money_stays(db: TestDb) {
    // hot_max 0: all the ETH the treasury may spare goes cold; the 10 ETH the operator funded it
    // with for gas (`setup`) may not.
    let s = setup_for(&db, "ETH", "0").await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    // 3000 USD at 3000 USD/ETH: 1 ETH.
    let invoice = s.app.created_invoice(&s.key, json!({"amount": "3000", "currency": "USD", "asset": "ETH"})).await;
    s.chain.pay_native(invoice["pay"]["address"].as_str().unwrap(), 1_000_000_000_000_000_000).await;
    s.chain.mine(CONFIRMATIONS).await;
    s.run_until(&mut watcher, &mut settler, "the ETH sweep and cold transfer", || async {
        !s.chain.native_balance(s.cold).await.is_zero() && s.all_settled().await
    })
    .await;
    s.idle(&mut watcher, &mut settler).await;

    let transfers = s.cold_transfers().await;
    assert_eq!(transfers.len(), 1, "{transfers:#?}");
    let sent = transfers[0].value.0;
    assert_eq!(s.chain.native_balance(s.cold).await, sent);
    assert_eq!(s.ledger_of(AccountKind::Cold, "ETH").await, sent);
    // The merchant's 0.99 ETH less what the sweep's gas and the dust left behind took.
    assert!(sent > U256::from(980_000_000_000_000_000u64) && sent < U256::from(990_000_000_000_000_000u64), "{sent}");
    // What stays hot is at least the operator's gas money: capital plus fees earned, less gas spent.
    let gas_money = s.ledger_of(AccountKind::OperatorCapital, "ETH").await
        + s.ledger_of(AccountKind::FeeRevenue, "ETH").await
        - s.ledger_of(AccountKind::NetworkFees, "ETH").await;
    let hot = s.ledger_of(AccountKind::HotWallet, "ETH").await;
    assert!(hot >= gas_money, "hot {hot} < gas money {gas_money}");
    assert!(s.chain.native_balance(s.treasury()).await >= hot);
    s.reconciles().await;
}

async fn an_unsigned_cold_transfer_that_a_payout_outgrew_is_planned_anew(db: TestDb) {
    let s = setup(&db, "10").await;
    let mut watcher = s.app.watcher(&s.config);
    let mut sweeper = s.app.settler(&s.without_cold());
    s.paid_invoice(&mut watcher, 60_000_000).await;
    s.run_until(&mut watcher, &mut sweeper, "the sweep", || async {
        s.usdc_of(s.treasury()).await == usdc(60) && s.all_settled().await
    })
    .await;

    // Someone sends from the treasury key: the settler pauses it, so the cold transfer it plans
    // (50 beyond hot_max) stays an unsigned intent.
    let outsider = s.chain.wallet(s.app.state.wallet.treasury().unwrap().clone());
    let tx = TransactionRequest::default().with_to(PrivateKeySigner::random().address()).with_value(U256::from(1u64));
    assert!(outsider.send_transaction(tx).await.unwrap().get_receipt().await.unwrap().status());
    let mut settler = s.app.settler(&s.config);
    settler.tick().await.unwrap();
    let planned = s.cold_transfers().await;
    assert_eq!(planned.len(), 1, "{planned:#?}");
    assert_eq!((planned[0].state, planned[0].value.0), (TxState::Intent, usdc(50)));

    // A payout of 30 is reserved meanwhile: only 20 may go cold now.
    let destination = PrivateKeySigner::random().address();
    let response = s
        .app
        .client
        .post(s.app.url("/api/v1/payouts"))
        .header("x-api-key", &s.key)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({"asset": "USDC", "amount": "30", "destination": destination.to_checksum(None)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    settler.tick().await.unwrap();
    let mut replanned = s.cold_transfers().await;
    replanned.sort_by_key(|t| t.created_at);
    assert_eq!(replanned.len(), 2, "{replanned:#?}");
    assert_eq!((replanned[0].state, replanned[0].nonce), (TxState::Failed, None), "dropped, never signed");
    assert_eq!((replanned[1].state, replanned[1].value.0), (TxState::Intent, usdc(20)));

    settler.resume_signer(s.treasury()).await.unwrap();
    s.run_until(&mut watcher, &mut settler, "the payout and the cold transfer", || async {
        s.usdc_of(destination).await == usdc(30) && !s.usdc_of(s.cold).await.is_zero() && s.all_settled().await
    })
    .await;
    s.idle(&mut watcher, &mut settler).await;
    assert_eq!(s.usdc_of(s.cold).await, usdc(20));
    assert_eq!(s.usdc_of(s.treasury()).await, usdc(10));
    assert_eq!(s.ledger(AccountKind::Cold).await, usdc(20));
    assert_eq!(s.cold_transfers().await.len(), 2);
    // Verify finds the cold address right; the only problem is the ETH the outside send took.
    let state = &s.app.state;
    let outcome = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
    assert!(outcome.on_chain.iter().any(|l| l.contains("ledger moved 20 to the cold address")), "{}", outcome.render());
    assert_eq!(outcome.report.problems.len(), 1, "{}", outcome.render());
    assert!(
        outcome.report.problems[0].contains(" ETH at deposit addresses and the hot wallet"),
        "{}",
        outcome.render()
    );
}

async fn a_payout_created_between_planning_and_signing_is_not_starved(db: TestDb) {
    let s = setup(&db, "10").await;
    let mut watcher = s.app.watcher(&s.config);
    let mut sweeper = s.app.settler(&s.without_cold());
    s.paid_invoice(&mut watcher, 60_000_000).await;
    s.run_until(&mut watcher, &mut sweeper, "the sweep", || async {
        s.usdc_of(s.treasury()).await == usdc(60) && s.all_settled().await
    })
    .await;

    // The settler plans the 50 beyond hot_max and stops before signing it...
    let mut planner = s.app.settler(&s.config);
    planner.crash_at(Some(CrashPoint::BeforeSign));
    assert!(matches!(planner.tick().await, Err(SettleError::Crashed(CrashPoint::BeforeSign))));
    drop(planner);
    let planned = s.cold_transfers().await;
    assert_eq!(planned.len(), 1, "{planned:#?}");
    assert_eq!((planned[0].state, planned[0].value.0), (TxState::Intent, usdc(50)));

    // ...a payout of 30 is reserved before it signs...
    let destination = PrivateKeySigner::random().address();
    let response = s
        .app
        .client
        .post(s.app.url("/api/v1/payouts"))
        .header("x-api-key", &s.key)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({"asset": "USDC", "amount": "30", "destination": destination.to_checksum(None)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let payout: Value = response.json().await.unwrap();

    // ...and signing (no planning in between) refuses the stale amount: the intent is failed,
    // never having had a nonce, and the payout is signed.
    let mut settler = s.app.settler(&s.config);
    settler.sign_only().await.unwrap();
    let transfers = s.cold_transfers().await;
    assert_eq!(transfers.len(), 1, "{transfers:#?}");
    assert_eq!((transfers[0].state, transfers[0].nonce), (TxState::Failed, None), "never signed");
    assert_eq!(s.usdc_of(s.cold).await, U256::ZERO);

    // The next ticks plan what is left (20) and pay the payout.
    s.run_until(&mut watcher, &mut settler, "the payout and the smaller cold transfer", || async {
        s.usdc_of(destination).await == usdc(30) && !s.usdc_of(s.cold).await.is_zero() && s.all_settled().await
    })
    .await;
    s.idle(&mut watcher, &mut settler).await;
    let mut transfers = s.cold_transfers().await;
    transfers.sort_by_key(|t| t.created_at);
    assert_eq!(transfers.len(), 2, "{transfers:#?}");
    assert_eq!((transfers[1].state, transfers[1].value.0), (TxState::Confirmed, usdc(20)));
    assert_eq!(s.usdc_of(s.cold).await, usdc(20));
    assert_eq!(s.usdc_of(s.treasury()).await, usdc(10));
    assert_eq!(s.ledger(AccountKind::Cold).await, usdc(20));
    let (status, body) = s.app.get_json(&s.key, &format!("/api/v1/payouts/{}", payout["id"].as_str().unwrap())).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("confirmed")), "{body}");
    s.reconciles().await;
}

async fn the_database_refuses_a_second_open_cold_transfer(db: TestDb) {
    let s = setup(&db, "10").await;
    let intent = |units: u64| {
        ChainTx::intent(
            s.config.chain_id,
            s.treasury().to_checksum(None),
            Purpose::ColdTransfer,
            s.cold.to_checksum(None),
            "USDC",
            BaseUnits::from(units),
            Some(s.usdc.to_checksum(None)),
            BaseUnits::ZERO,
        )
    };
    let mut conn = s.app.store.conn().await.unwrap();
    let first = intent(1);
    chain_txs::insert_intent(&mut conn, &first).await.unwrap();
    assert!(chain_txs::insert_intent(&mut conn, &intent(2)).await.is_err(), "two open cold transfers of USDC");
    // Once the first is failed (or confirmed), a new one may be planned.
    assert!(chain_txs::set_failed(&mut conn, first.id, TxState::Intent, "test").await.unwrap());
    chain_txs::insert_intent(&mut conn, &intent(3)).await.unwrap();
}

/// The real `depositd run`, SIGKILLed as soon as its cold transfer exists and before it is
/// confirmed, then started again: the transfer completes once, with the exact excess.
async fn the_real_daemon_killed_mid_cold_transfer_sends_it_once(db: TestDb) {
    use secrecy::ExposeSecret;
    use std::time::{Duration, Instant};

    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let cold = PrivateKeySigner::random().address();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("chains")).unwrap();
    let chain_file = dir.path().join("chains/anvil.toml");
    std::fs::write(
        &chain_file,
        format!(
            "name = \"anvil\"\nchain_id = 31337\nrpc_urls = [\"{}\"]\nconfirmations = 2\nblock_time_ms = 1000\n\
             poll_interval_ms = 200\nmax_block_range = 1000\nstart_block = 0\ntestnet = true\n\n\
             [native]\nsymbol = \"ETH\"\ndecimals = 18\n\n[[tokens]]\nsymbol = \"USDC\"\naddress = \"{}\"\n\
             decimals = 6\n\n[cold_storage.USDC]\ncold_address = \"{}\"\nhot_max = \"5\"\n",
            chain.rpc_url(),
            usdc.to_checksum(None),
            cold.to_checksum(None)
        ),
    )
    .unwrap();
    let chain_config = ChainConfig::load(&chain_file).unwrap();
    let mnemonic = depositd_core::wallet::HdWallet::generate_mnemonic();
    let treasury = depositd_core::wallet::HdWallet::from_mnemonic(&mnemonic).unwrap().treasury_address();
    let api_port = depositd_testkit::anvil::free_port().unwrap();
    let config = dir.path().join("depositd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\n\
             [chains]\ndir = \"{}\"\nenabled = [\"anvil\"]\ndefault_chain = \"anvil\"\ndefault_asset = \"USDC\"\n\n\
             [wallet]\nmnemonic = \"{}\"\n\n[settler]\npoll_interval_ms = 200\n",
            db.url.expose(),
            dir.path().join("chains").display(),
            mnemonic.expose_secret()
        ),
    )
    .unwrap();
    let store = db.store().await;
    let (_, key) =
        depositd_testkit::db::merchant_with_key(&store, "Cold Shop", rust_decimal::Decimal::ONE, &Scope::ALL)
            .await
            .unwrap();
    depositd::dev::fund_treasury(&store, &chain_config, treasury, 10_000_000_000_000_000_000).await.unwrap();

    let start = || {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("daemon.log")).unwrap();
        let mut command = depositd();
        command.arg("--config").arg(&config).arg("run").stdout(std::process::Stdio::null()).stderr(log);
        crate::cli::Daemon(command.spawn().unwrap())
    };
    let client = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{api_port}");
    let wait_up = |daemon: &mut crate::cli::Daemon| {
        let (client, api) = (client.clone(), api.clone());
        let exited = daemon.0.try_wait().unwrap();
        async move {
            assert!(exited.is_none(), "the daemon exited");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !client.get(format!("{api}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
                assert!(Instant::now() < deadline, "the daemon did not start");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // Blocks keep coming, as on a real chain.
    let rpc = chain.rpc_url();
    let miner = tokio::spawn(async move {
        let provider = alloy::providers::ProviderBuilder::new().connect_http(rpc.parse().unwrap());
        loop {
            let _ = provider.raw_request::<_, serde_json::Value>("anvil_mine".into(), (1u64,)).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    let mut daemon = start();
    wait_up(&mut daemon).await;
    let invoice: Value = client
        .post(format!("{api}/api/v1/invoices"))
        .header("x-api-key", key.expose_secret())
        .json(&json!({"amount": "30", "currency": "USD", "asset": "USDC"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    chain.pay_token(usdc, invoice["pay"]["address"].as_str().unwrap(), 30_000_000).await;

    let cold_transfers = || async {
        let mut conn = store.conn().await.unwrap();
        chain_txs::touching(&mut conn, chain_config.chain_id, &treasury.to_checksum(None))
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.purpose == Purpose::ColdTransfer)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen = loop {
        if let Some(t) = cold_transfers().await.into_iter().next() {
            break t.state;
        }
        assert!(Instant::now() < deadline, "no cold transfer was planned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    assert_ne!(seen, TxState::Confirmed, "killed before the cold transfer was confirmed");
    eprintln!("{}: the daemon was killed with the cold transfer {}", db.backend, seen.as_str());

    let mut daemon = start();
    wait_up(&mut daemon).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let transfers = cold_transfers().await;
        if transfers.iter().any(|t| t.state == TxState::Confirmed) {
            break;
        }
        assert!(Instant::now() < deadline, "the cold transfer did not complete: {transfers:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // more steps: nothing more may be sent
    drop(daemon);
    miner.abort();

    let transfers = cold_transfers().await;
    assert_eq!(transfers.len(), 1, "exactly one cold transfer ({seen:?} when killed): {transfers:#?}");
    assert_eq!(chain.token_balance(usdc, cold).await, self::usdc(25));
    assert_eq!(chain.token_balance(usdc, treasury).await, self::usdc(5));
    let mut conn = store.conn().await.unwrap();
    let cold_account = Account::platform(AccountKind::Cold, chain_config.chain_id, "USDC");
    assert_eq!(ledger::balance(&mut conn, &cold_account).await.unwrap().0, self::usdc(25));
}
