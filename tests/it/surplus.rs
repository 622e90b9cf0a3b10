//! The reconciliation's surplus check against a real anvil chain, on both backends: a deposit the
//! watcher never recorded (the cursor moved past its block, as it does after a lagging node's
//! empty `eth_getLogs` answer) makes `depositd ledger verify` fail naming the address and the
//! amount, in a token and in the native coin; a clean ledger passes; transfers recorded as
//! rejected (the wrong token, an unowned pooled address) are in the ledger's suspense account, so
//! the ledger explains them and they do not fail it; a surplus within the dust allowance is
//! reported and does not fail it.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use depositd::reconcile::{self, Reconciliation, Surplus};
use depositd_core::api_key::Scope;
use depositd_core::chain_tx::{Purpose, TxState};
use depositd_core::config::ChainConfig;
use depositd_core::deposit_address::AddressPurpose;
use depositd_core::money::BaseUnits;
use depositd_core::store::chain_txs;
use depositd_core::store::cursors::{self, ChainCursor};
use depositd_settler::Settler;
use depositd_testkit::chain::TestChain;
use depositd_watcher::ChainWatcher;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, both_backends, depositd, use_test_chain};

both_backends!(
    a_missed_deposit_fails_ledger_verify_naming_its_address_and_amount,
    sweeps_leave_native_dust_and_a_lagging_watcher_that_the_check_explains,
);

const CONFIRMATIONS: u64 = 2;

struct Setup {
    chain: TestChain,
    usdc: Address,
    usdt: Address,
    app: TestApp,
    key: String,
    config: ChainConfig,
}

async fn setup(db: &TestDb) -> Setup {
    let chain = TestChain::start(&[("USD Coin", "USDC"), ("Tether USD", "USDT")]).await.unwrap();
    let (usdc, usdt) = (chain.tokens[0], chain.tokens[1]);
    let mut config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, CONFIRMATIONS, &[("USDC", usdc), ("USDT", usdt)]);
        config = Some(c.chains[0].clone());
    })
    .await;
    let (_, key) = app.merchant("Surplus Shop", &Scope::ALL).await;
    Setup { chain, usdc, usdt, app, key, config: config.unwrap() }
}

impl Setup {
    /// The settler alone (the watcher stands still), one block a round, until every outgoing
    /// transaction of `address` is confirmed and it has a confirmed sweep.
    async fn settle(&self, settler: &mut Settler, address: &str) -> Vec<depositd_core::chain_tx::ChainTx> {
        for _ in 0..40 {
            settler.tick().await.unwrap();
            let mut conn = self.app.store.conn().await.unwrap();
            let txs = chain_txs::touching(&mut conn, self.config.chain_id, address).await.unwrap();
            if txs.iter().any(|t| t.purpose == Purpose::Sweep) && txs.iter().all(|t| t.state == TxState::Confirmed) {
                return txs;
            }
            drop(conn);
            self.chain.mine(1).await;
        }
        panic!("gave up waiting for the sweep of {address}");
    }

    async fn cursor(&self) -> u64 {
        let mut conn = self.app.store.conn().await.unwrap();
        cursors::get(&mut conn, self.config.chain_id).await.unwrap().unwrap().block_number
    }

    async fn invoice(&self, asset: &str, amount: &str) -> (String, String) {
        let response =
            self.app.create_invoice(&self.key, json!({"amount": amount, "currency": "USD", "asset": asset})).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (body["id"].as_str().unwrap().to_owned(), body["pay"]["address"].as_str().unwrap().to_owned())
    }

    async fn status(&self, invoice_id: &str) -> Value {
        let (status, body) = self.app.get_json(&self.key, &format!("/api/v1/invoices/{invoice_id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Buries what was paid under the confirmations and lets the watcher record it.
    async fn watch(&self, watcher: &mut ChainWatcher) {
        self.chain.mine(CONFIRMATIONS).await;
        while watcher.tick().await.unwrap() {}
    }

    /// What a watcher that trusted an empty `eth_getLogs` answer does: moves its cursor to the
    /// head without recording what the blocks paid.
    async fn skip_to_head(&self) {
        self.chain.mine(CONFIRMATIONS).await;
        let head =
            self.chain.provider().get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap();
        let mut conn = self.app.store.conn().await.unwrap();
        let cursor = ChainCursor {
            chain_id: self.config.chain_id,
            block_number: head.header.number,
            block_hash: head.header.hash.to_string(),
        };
        cursors::set(&mut conn, &cursor).await.unwrap();
    }

    async fn reconcile(&self) -> Reconciliation {
        let state = &self.app.state;
        reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap()
    }

    /// `depositd ledger verify`, the real binary, on the same database, chain and wallet.
    fn ledger_verify(&self, dir: &std::path::Path) -> (bool, String) {
        let chains = dir.join("chains");
        std::fs::create_dir_all(&chains).unwrap();
        let mut chain_file = format!(
            "name = \"anvil\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = {CONFIRMATIONS}\n\
             block_time_ms = 1000\npoll_interval_ms = 250\nmax_block_range = 10000\nstart_block = 0\n\
             testnet = true\n\n[native]\nsymbol = \"ETH\"\ndecimals = 18\n",
            self.config.chain_id,
            self.chain.rpc_url()
        );
        for (symbol, address) in [("USDC", self.usdc), ("USDT", self.usdt)] {
            chain_file.push_str(&format!(
                "\n[[tokens]]\nsymbol = \"{symbol}\"\naddress = \"{}\"\ndecimals = 6\n",
                address.to_checksum(None)
            ));
        }
        std::fs::write(chains.join("anvil.toml"), chain_file).unwrap();
        let config = dir.join("depositd.toml");
        let mnemonic = self.app.state.config.settings.wallet.mnemonic().unwrap();
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"{}\"\n\n[chains]\ndir = \"{}\"\n\n[wallet]\nmnemonic = \"{}\"\n",
                self.app.state.config.settings.database.url.expose(),
                chains.display(),
                mnemonic.expose_secret()
            ),
        )
        .unwrap();
        let output = depositd().arg("--config").arg(&config).args(["ledger", "verify"]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }
}

fn surplus<'a>(outcome: &'a Reconciliation, asset: &str) -> &'a Surplus {
    outcome.surplus.iter().find(|s| s.asset == asset).unwrap_or_else(|| panic!("{asset} checked: {}", outcome.render()))
}

fn address(text: &str) -> Address {
    text.parse().unwrap()
}

async fn a_missed_deposit_fails_ledger_verify_naming_its_address_and_amount(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.app.watcher(&s.config);

    // A clean ledger: one paid USDC invoice, recorded by the watcher. Every asset is read at every
    // handed-out address, and nothing is unexplained.
    let (paid_id, paid) = s.invoice("USDC", "10").await;
    s.chain.pay_token(s.usdc, &paid, 10_000_000).await;
    s.watch(&mut watcher).await;
    assert_eq!(s.status(&paid_id).await["status"], "paid");
    let clean = s.reconcile().await;
    assert!(clean.is_ok(), "{}", clean.render());
    for asset in ["ETH", "USDC", "USDT"] {
        let found = surplus(&clean, asset);
        assert!(found.holders.is_empty() && found.known_uncredited.is_empty(), "{}", clean.render());
        assert!(found.addresses >= 1, "{}", clean.render());
    }
    assert!(clean.render().contains("hold nothing beyond dust"), "{}", clean.render());

    // The wrong token: 5 USDT to a USDC invoice is recorded as rejected, and its money posted to
    // suspense: the ledger explains it (nothing uncredited is left to list), and it does not
    // fail the check.
    let (_, wrong) = s.invoice("USDC", "5").await;
    s.chain.pay_token(s.usdt, &wrong, 5_000_000).await;
    s.watch(&mut watcher).await;
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    assert!(surplus(&outcome, "USDT").known_uncredited.is_empty(), "{}", outcome.render());
    assert!(surplus(&outcome, "USDT").holders.is_empty(), "{}", outcome.render());

    // Dust: 0.005 USDC the watcher never recorded, at the paid invoice's address, is within the
    // allowance (0.01 USDC by default): reported, not a failure.
    s.chain.pay_token(s.usdc, &paid, 5_000).await;
    s.skip_to_head().await;
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    let usdc = surplus(&outcome, "USDC");
    assert_eq!(usdc.holders, vec![(address(&paid), BaseUnits::from(5_000u64))], "{}", outcome.render());
    assert!(!usdc.fails());

    // The missed deposit: 7 USDC and 0.02 ETH paid to a fresh invoice's address in blocks the
    // cursor then moved past. Nothing recorded it, the invoice still waits, and verify fails,
    // naming the address and each amount.
    let (missed_id, missed) = s.invoice("USDC", "7").await;
    s.chain.pay_token(s.usdc, &missed, 7_000_000).await;
    s.chain.pay_native(&missed, 20_000_000_000_000_000).await;
    s.skip_to_head().await;
    while watcher.tick().await.unwrap() {}
    assert_eq!(s.status(&missed_id).await["status"], "pending", "the watcher missed it");
    let outcome = s.reconcile().await;
    assert!(!outcome.is_ok(), "{}", outcome.render());
    let usdc = surplus(&outcome, "USDC");
    assert_eq!(
        usdc.holders,
        vec![(address(&missed), BaseUnits::from(7_000_000u64)), (address(&paid), BaseUnits::from(5_000u64))],
        "{}",
        outcome.render()
    );
    assert_eq!(usdc.unexplained, BaseUnits::from(7_005_000u64));
    assert_eq!(surplus(&outcome, "ETH").holders, vec![(address(&missed), BaseUnits::from(20_000_000_000_000_000u64))]);
    assert!(surplus(&outcome, "USDT").holders.is_empty(), "the rejected USDT is in suspense");
    let problems = outcome.report.problems.join("\n");
    assert_eq!(outcome.report.problems.len(), 2, "one per asset: {problems}");
    assert!(problems.contains(&format!("{missed} holds 7 USDC (7000000 base units) unexplained")), "{problems}");
    assert!(
        problems.contains(&format!("{missed} holds 0.02 ETH (20000000000000000 base units) unexplained")),
        "{problems}"
    );

    // The daemon's metrics say so, per chain and asset, and the exposition is valid.
    let metrics = depositd_core::metrics::Metrics::new();
    reconcile::export(&metrics, &outcome);
    let exposition = metrics.render();
    assert!(
        exposition.contains("depositd_ledger_unexplained_addresses{asset=\"USDC\",chain=\"anvil\"} 2"),
        "{exposition}"
    );
    assert!(
        exposition.contains("depositd_ledger_unexplained_addresses{asset=\"USDT\",chain=\"anvil\"} 0"),
        "{exposition}"
    );
    assert!(
        exposition.contains("depositd_ledger_unexplained_balance{asset=\"USDC\",chain=\"anvil\"} 7.005"),
        "{exposition}"
    );
    assert!(exposition.contains("depositd_ledger_verify_ok 0"), "{exposition}");
    crate::helpers::assert_promtool_accepts(&exposition);

    // And the operator's command fails with the same report.
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = s.ledger_verify(dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("{missed} holds 7 USDC (7000000 base units) unexplained")), "{text}");

    // A pooled address no invoice owns is not read while nothing paid it; once a transfer the
    // watcher recorded (rejected: unowned, so in suspense) reached it, it is, and the ledger
    // explains it.
    let state = &s.app.state;
    let stored = depositd_core::store::address_pool::refill(&state.store, &state.wallet, AddressPurpose::Invoice, 1)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let pooled: (String,) = sqlx::query_as("SELECT address FROM deposit_addresses WHERE pooled = 1")
        .fetch_one(s.app.store.pool())
        .await
        .unwrap();
    let before = surplus(&s.reconcile().await, "USDT").addresses;
    s.chain.pay_token(s.usdt, &pooled.0, 3_000_000).await;
    s.watch(&mut watcher).await;
    let outcome = s.reconcile().await;
    let usdt = surplus(&outcome, "USDT");
    assert_eq!(usdt.addresses, before + 1, "{}", outcome.render());
    assert!(usdt.holders.is_empty(), "{}", outcome.render());
    assert!(usdt.known_uncredited.is_empty(), "{}", outcome.render());
}

async fn sweeps_leave_native_dust_and_a_lagging_watcher_that_the_check_explains(db: TestDb) {
    let s = setup(&db).await;
    let treasury = s.app.state.wallet.treasury_address();
    depositd::dev::fund_treasury(&s.app.store, &s.config, treasury, 10_000_000_000_000_000_000).await.unwrap();
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));

    // A USDC payment, recorded and confirmed; then the watcher stops while the settler tops the
    // address up with gas and sweeps it. The balances are read at the watcher's cursor, where the
    // USDC is still at the address although the ledger has swept it: the sweep mined after the
    // cursor explains it.
    let (_, token_address) = s.invoice("USDC", "20").await;
    s.chain.pay_token(s.usdc, &token_address, 20_000_000).await;
    s.watch(&mut watcher).await;
    let txs = s.settle(&mut settler, &token_address).await;
    let cursor = s.cursor().await;
    assert!(
        txs.iter().all(|t| t.mined_block.is_some_and(|b| b > cursor)),
        "the sweep and its top-up were mined after the cursor {cursor}: {txs:?}"
    );
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    assert_eq!(surplus(&outcome, "USDC").block, cursor);
    assert!(surplus(&outcome, "USDC").holders.is_empty(), "{}", outcome.render());

    // The watcher catches up. The top-up sent the sweep's whole gas budget and the sweep burned
    // less: native dust stays at the address, explained to the wei by the ledger's custody.
    while watcher.tick().await.unwrap() {}
    let dust = s.chain.provider().get_balance(address(&token_address)).await.unwrap();
    assert!(!dust.is_zero(), "the top-up's unused budget stays behind");
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    assert!(surplus(&outcome, "ETH").holders.is_empty(), "{}", outcome.render());
    assert!(surplus(&outcome, "USDC").holders.is_empty(), "{}", outcome.render());

    // A native payment swept less its gas budget leaves the unused budget the same way.
    let (_, native_address) = s.invoice("ETH", "3000").await; // 1 ETH at 3000 USD
    s.chain.pay_native(&native_address, 1_000_000_000_000_000_000).await;
    s.watch(&mut watcher).await;
    s.settle(&mut settler, &native_address).await;
    s.chain.mine(CONFIRMATIONS).await;
    while watcher.tick().await.unwrap() {}
    let left = s.chain.provider().get_balance(address(&native_address)).await.unwrap();
    assert!(!left.is_zero() && left < U256::from(10_000_000_000_000_000u64), "left {left}");
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    assert!(surplus(&outcome, "ETH").holders.is_empty(), "{}", outcome.render());

    // The same dust one wei larger than the ledger explains is unexplained, to the wei: the
    // explanation above was exact, not generous.
    s.chain.pay_native(&native_address, 1).await;
    s.skip_to_head().await;
    let outcome = s.reconcile().await;
    assert_eq!(
        surplus(&outcome, "ETH").holders,
        vec![(address(&native_address), BaseUnits::from(1u64))],
        "{}",
        outcome.render()
    );
    assert!(outcome.is_ok(), "one wei is within the dust allowance: {}", outcome.render());
}
