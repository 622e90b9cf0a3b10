//! Losses (issue 21) on a real anvil chain, on both backends: a reorg deeper than the
//! confirmations that takes away a deposit whose money had already left its address (swept into
//! the treasury; forwarded to a pass-through merchant) is reversed, never refused: the merchant's
//! credit is reversed, and what custody no longer held is posted to the platform's `reorg_loss`,
//! once, counted by `depositd_reorg_losses_total` and reported by `depositd ledger verify`. The
//! verify's solvency check (on-chain holdings against what the ledger owes merchants) reports an
//! exact shortfall, fails, and sets `depositd_ledger_solvency_shortfall`.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use depositd::reconcile::{self, Holdings, Reconciliation};
use depositd_core::api_key::Scope;
use depositd_core::chain_tx::{Purpose, TxState};
use depositd_core::config::ChainConfig;
use depositd_core::ledger::{self, Account, AccountKind, Posted};
use depositd_core::money::BaseUnits;
use depositd_core::store::chain_txs;
use depositd_settler::Settler;
use depositd_testkit::chain::TestChain;
use depositd_watcher::ChainWatcher;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, both_backends, depositd, use_test_chain};

both_backends!(
    a_reorg_after_a_sweep_posts_the_loss_once_and_verify_reports_it,
    a_reorg_after_a_forward_posts_the_loss_and_the_merchant_owes_the_forward,
    a_deposit_that_returns_after_a_reorg_took_it_recovers_the_loss,
);

const CONFIRMATIONS: u64 = 2;

alloy::sol! {
    function transfer(address to, uint256 amount) external returns (bool);
}

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
        config = Some(c.chains[0].clone());
    })
    .await;
    let config = config.unwrap();
    let treasury = app.state.wallet.treasury_address();
    depositd::dev::fund_treasury(&app.store, &config, treasury, 10_000_000_000_000_000_000).await.unwrap();
    let (merchant, key) = app.merchant("Losses Shop", &Scope::ALL).await;
    Setup { chain, usdc, app, key, merchant: merchant.id, config }
}

impl Setup {
    fn treasury(&self) -> Address {
        self.app.state.wallet.treasury_address()
    }

    async fn usdc_of(&self, owner: Address) -> U256 {
        self.chain.token_balance(self.usdc, owner).await
    }

    async fn invoice(&self, body: Value) -> Value {
        let response = self.app.create_invoice(&self.key, body).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.app.get_json(&self.key, path).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A ledger balance of the merchant (`merchant`) or the platform, in USDC base units.
    async fn balance(&self, kind: AccountKind) -> BaseUnits {
        let account = if kind.is_merchant() {
            Account::merchant(self.merchant, kind, self.config.chain_id, "USDC")
        } else {
            Account::platform(kind, self.config.chain_id, "USDC")
        };
        let mut conn = self.app.store.conn().await.unwrap();
        ledger::balance(&mut conn, &account).await.unwrap()
    }

    /// Watcher, settler, one more block; until every transaction from `address` (a sweep, and a
    /// forward if `forward`) is confirmed and the address holds no USDC.
    async fn settle(&self, watcher: &mut ChainWatcher, settler: &mut Settler, address: &str, forward: bool) {
        for _ in 0..40 {
            while watcher.tick().await.unwrap() {}
            settler.tick().await.unwrap();
            let mut conn = self.app.store.conn().await.unwrap();
            let txs = chain_txs::touching(&mut conn, self.config.chain_id, address).await.unwrap();
            drop(conn);
            let has = |purpose: Purpose| txs.iter().any(|t| t.purpose == purpose);
            if has(if forward { Purpose::Passthrough } else { Purpose::Sweep })
                && txs.iter().all(|t| t.state == TxState::Confirmed)
                && self.usdc_of(address.parse().unwrap()).await.is_zero()
            {
                // Bury the last of them under the confirmations for the watcher, too.
                self.chain.mine(CONFIRMATIONS).await;
                while watcher.tick().await.unwrap() {}
                return;
            }
            self.chain.mine(1).await;
        }
        panic!("gave up waiting for the settlement of {address}");
    }

    /// A reorg that replaces every block from `block` on (nothing re-included), then one block
    /// more, and the watcher unwinds it.
    async fn reorg_from(&self, block: u64, watcher: &mut ChainWatcher) {
        let head = self.chain.provider().get_block_number().await.unwrap();
        self.chain.rpc("anvil_reorg", json!([head - block + 1, []])).await;
        self.chain.mine(1).await;
        while watcher.tick().await.unwrap() {}
    }

    async fn reconcile(&self) -> Reconciliation {
        let state = &self.app.state;
        reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap()
    }

    /// `depositd ledger verify`, the real binary, on the same database, chain and wallet.
    fn ledger_verify(&self, dir: &std::path::Path) -> (bool, String) {
        let chains = dir.join("chains");
        std::fs::create_dir_all(&chains).unwrap();
        let chain_file = format!(
            "name = \"anvil\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = {CONFIRMATIONS}\n\
             block_time_ms = 1000\npoll_interval_ms = 250\nmax_block_range = 10000\nstart_block = 0\n\
             testnet = true\n\n[native]\nsymbol = \"ETH\"\ndecimals = 18\n\n[[tokens]]\nsymbol = \"USDC\"\n\
             address = \"{}\"\ndecimals = 6\n",
            self.config.chain_id,
            self.chain.rpc_url(),
            self.usdc.to_checksum(None)
        );
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

    /// The metrics the daemon's periodic check would export for `outcome`.
    fn exported(&self, outcome: &Reconciliation) -> String {
        let metrics = depositd_core::metrics::Metrics::new();
        reconcile::export(&metrics, outcome);
        let exposition = metrics.render();
        crate::helpers::assert_promtool_accepts(&exposition);
        exposition
    }
}

fn usdc(outcome: &Reconciliation) -> &Holdings {
    outcome.holdings.iter().find(|h| h.asset == "USDC").unwrap_or_else(|| panic!("USDC compared: {}", outcome.render()))
}

fn units(n: u64) -> BaseUnits {
    BaseUnits::from(n)
}

async fn a_reorg_after_a_sweep_posts_the_loss_once_and_verify_reports_it(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));

    // 20 USDC paid, credited (less the fee), and swept into the treasury.
    let invoice = s.invoice(json!({"amount": "20", "currency": "USD", "asset": "USDC"})).await;
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();
    s.chain.pay_token(s.usdc, &address, 20_000_000).await;
    let paid_block = s.chain.provider().get_block_number().await.unwrap();
    s.settle(&mut watcher, &mut settler, &address, false).await;
    assert_eq!(s.usdc_of(s.treasury()).await, U256::from(20_000_000u64));
    let owed = s.balance(AccountKind::Available).await;
    let fee = s.balance(AccountKind::FeeRevenue).await;
    assert_eq!(owed.checked_add(fee), Some(units(20_000_000)));
    assert!(!fee.is_zero());

    // Solvent: the treasury holds what the merchant is owed, and the fee.
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    let h = usdc(&outcome);
    assert_eq!((h.owed, h.on_chain, h.solvency_shortfall()), (owed, units(20_000_000), units(0)));
    assert!(outcome.render().contains("solvency: anvil USDC: merchants are owed 19.8, the chain holds 20: covered"));

    // Someone with the treasury's key takes 5 USDC behind depositd's back: the chain now holds
    // less than the merchant is owed, and verify says by exactly how much (and fails).
    let thief = PrivateKeySigner::random().address();
    let outsider = s.chain.wallet(s.app.state.wallet.treasury().unwrap().clone());
    let theft = TransactionRequest::default()
        .with_to(s.usdc)
        .with_input(transferCall { to: thief, amount: U256::from(5_000_000u64) }.abi_encode());
    assert!(outsider.send_transaction(theft).await.unwrap().get_receipt().await.unwrap().status());
    let outcome = s.reconcile().await;
    assert!(!outcome.is_ok(), "{}", outcome.render());
    let short = owed.checked_sub(units(15_000_000)).unwrap();
    assert_eq!(usdc(&outcome).solvency_shortfall(), short);
    let problems = outcome.report.problems.join("\n");
    assert!(
        problems.contains(&format!(
            "on anvil the platform is short by {} USDC ({short} base units) of what it owes merchants: they are \
             owed 19.8, its addresses hold 15",
            short.to_display(6)
        )),
        "{problems}"
    );
    assert!(outcome.render().contains("solvency: anvil USDC: SHORT by 4.8 USDC (4800000 base units)"));
    let exposition = s.exported(&outcome);
    assert!(
        exposition.contains("depositd_ledger_solvency_shortfall{asset=\"USDC\",chain=\"anvil\"} 4.8"),
        "{exposition}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = s.ledger_verify(dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("solvency: anvil USDC: SHORT by 4.8 USDC (4800000 base units)"), "{text}");

    // A reorg deeper than the confirmations takes the payment away, and with it the top-up, the
    // sweep and the theft. The reversal is not refused although custody was emptied by the
    // sweep: the merchant's credit and the fee are reversed, and the 20 USDC that had left the
    // address is the platform's reorg loss.
    s.reorg_from(paid_block, &mut watcher).await;
    let body = s.get(&format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await;
    assert_eq!((body["status"].as_str(), body["amount_paid"].as_str()), (Some("pending"), Some("0")), "{body}");
    assert_eq!(body["payments"][0]["state"], "reversed");
    for (kind, expected) in [
        (AccountKind::Available, 0),
        (AccountKind::Pending, 0),
        (AccountKind::Receivable, 0),
        (AccountKind::FeeRevenue, 0),
        (AccountKind::Custody, 0),
        (AccountKind::HotWallet, 20_000_000), // the sweep's entry stays: it is the loss
        (AccountKind::ReorgLoss, 20_000_000),
    ] {
        assert_eq!(s.balance(kind).await, units(expected), "{kind}");
    }
    let metrics = s.app.state.metrics.render();
    assert!(metrics.contains(r#"depositd_reorg_losses_total{asset="USDC",chain="anvil"} 1"#), "{metrics}");

    // Exactly once: the pending entry's reversal (which carries the loss) posts nothing again, a
    // second removal finds nothing left to reverse, and a restarted watcher changes nothing.
    let deposit_id: Uuid = body["payments"][0]["id"].as_str().unwrap().parse().unwrap();
    let mut tx = s.app.store.begin().await.unwrap();
    let deposit =
        depositd_core::store::deposits::get_for_merchant(&mut tx, s.merchant, deposit_id).await.unwrap().unwrap();
    let removal = ledger::deposits::post_removal(&mut tx, &deposit).await.unwrap();
    assert_eq!((removal.reversals.len(), removal.reorg_loss), (0, units(0)));
    let pending: (String,) = sqlx::query_as("SELECT id FROM ledger_entries WHERE idempotency_key = $1")
        .bind(format!("deposit_pending:{deposit_id}:0"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let again = ledger::reverse(&mut tx, pending.0.parse().unwrap(), None).await.unwrap();
    assert!(matches!(again, Posted::AlreadyPosted(_)), "{again:?}");
    tx.commit().await.unwrap();
    let mut restarted = s.app.watcher(&s.config);
    s.chain.mine(1).await;
    while restarted.tick().await.unwrap() {}
    assert_eq!(s.balance(AccountKind::ReorgLoss).await, units(20_000_000));
    let metrics = s.app.state.metrics.render();
    assert!(metrics.contains(r#"depositd_reorg_losses_total{asset="USDC",chain="anvil"} 1"#), "{metrics}");

    // Verify: the ledger reconciles; the treasury no longer holds the swept 20 USDC, which the
    // reorg loss explains; nobody is owed anything, so the platform is solvent; the loss is
    // reported with its exact amount, and exported for the alert.
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    let h = usdc(&outcome);
    assert_eq!(
        (h.held, h.reorg_loss, h.owed, h.on_chain, h.cover_shortfall(), h.solvency_shortfall()),
        (units(20_000_000), units(20_000_000), units(0), units(0), units(0), units(0))
    );
    let text = outcome.render();
    assert!(text.contains("anvil USDC: ledger holds 20, of which a reorg took away 20 (reorg_loss)"), "{text}");
    assert!(text.contains("reorg loss: anvil USDC: 20 (20000000 base units) left deposit addresses"), "{text}");
    let exposition = s.exported(&outcome);
    assert!(exposition.contains("depositd_ledger_reorg_loss{asset=\"USDC\",chain=\"anvil\"} 20"), "{exposition}");
    assert!(
        exposition.contains("depositd_ledger_solvency_shortfall{asset=\"USDC\",chain=\"anvil\"} 0"),
        "{exposition}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = s.ledger_verify(dir.path());
    assert!(ok, "{text}");
    assert!(text.contains("reorg loss: anvil USDC: 20 (20000000 base units)"), "{text}");
}

async fn a_reorg_after_a_forward_posts_the_loss_and_the_merchant_owes_the_forward(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));

    // A pass-through invoice of 50 USDC: the merchant amount is forwarded to the merchant's
    // address and the fee swept into the treasury.
    let merchant_wallet = PrivateKeySigner::random().address();
    let invoice = s
        .invoice(json!({
            "amount": "50", "currency": "USD", "asset": "USDC",
            "receiver_override": true, "receiver_override_address": merchant_wallet.to_checksum(None),
        }))
        .await;
    let merchant_amount: u64 = invoice["merchant_amount_base_units"].as_str().unwrap().parse().unwrap();
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();
    s.chain.pay_token(s.usdc, &address, 50_000_000).await;
    let paid_block = s.chain.provider().get_block_number().await.unwrap();
    s.settle(&mut watcher, &mut settler, &address, true).await;
    assert_eq!(s.usdc_of(merchant_wallet).await, U256::from(merchant_amount));
    assert_eq!(s.balance(AccountKind::InTransit).await, units(0));
    assert!(s.reconcile().await.is_ok());

    // What the settler does when a deep reorg took a confirmed transaction away: it puts it back
    // to `broadcast` (and sends it again), while its entries stay. It is not in flight as well:
    // its forward is already out of the ledger's holdings (counting it twice would loosen the
    // cover and solvency checks by as much).
    let mut conn = s.app.store.conn().await.unwrap();
    let txs = chain_txs::touching(&mut conn, s.config.chain_id, &address).await.unwrap();
    drop(conn);
    let forward = txs.iter().find(|t| t.purpose == Purpose::Passthrough).unwrap();
    let mut db = s.app.store.begin().await.unwrap();
    assert!(chain_txs::set_unconfirmed(&mut db, forward.id).await.unwrap());
    db.commit().await.unwrap();
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    assert_eq!(usdc(&outcome).in_flight, units(0), "{}", outcome.render());

    // The reorg takes the payment away, and the forward with it. The merchant's in_transit no
    // longer holds what was forwarded, so that goes to the merchant's receivable (the rule for a
    // merchant's part, as before); custody no longer holds any of the 50 USDC: the fee had been
    // swept into the treasury (the platform's reorg_loss, netted out of what the treasury holds
    // by the ledger) and the merchant amount forwarded (reorg_loss_forwarded: the forward's
    // entry already took it out of custody, so it is not netted).
    s.reorg_from(paid_block, &mut watcher).await;
    assert_eq!(s.usdc_of(merchant_wallet).await, U256::ZERO, "the forward is gone from the chain too");
    let fee = 50_000_000 - merchant_amount;
    assert!(fee > 0);
    for (kind, expected) in [
        (AccountKind::InTransit, 0),
        (AccountKind::Pending, 0),
        (AccountKind::Receivable, merchant_amount),
        (AccountKind::FeeRevenue, 0),
        (AccountKind::Custody, 0),
        (AccountKind::HotWallet, fee),
        (AccountKind::ReorgLoss, fee),
        (AccountKind::ReorgLossForwarded, merchant_amount),
    ] {
        assert_eq!(s.balance(kind).await, units(expected), "{kind}");
    }
    let metrics = s.app.state.metrics.render();
    assert!(metrics.contains(r#"depositd_reorg_losses_total{asset="USDC",chain="anvil"} 1"#), "{metrics}");

    // Verify passes (nothing owed; the treasury's fee, all that is held, is the swept loss) and
    // reports the whole loss.
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    let h = usdc(&outcome);
    assert_eq!(
        (h.held, h.reorg_loss, h.cover_shortfall(), h.solvency_shortfall()),
        (units(fee), units(fee), units(0), units(0))
    );
    let text = outcome.render();
    assert!(text.contains("reorg loss: anvil USDC: 50 (50000000 base units)"), "{text}");

    // The forward's loss hides no missing treasury money: the operator funds the treasury with
    // 10 USDC (recorded), someone with its key takes them; the cover check sees all 10 missing
    // (netting the whole 50 of losses would have hidden up to 49.5 of it).
    let funding = s.chain.pay_token(s.usdc, s.treasury(), 10_000_000).await;
    let mut tx = s.app.store.begin().await.unwrap();
    let posted = ledger::settlement::treasury_funding(
        &mut tx,
        s.config.chain_id,
        "USDC",
        units(10_000_000),
        &format!("{funding:#x}"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(posted, Posted::New(_)), "{posted:?}");
    assert!(s.reconcile().await.is_ok());
    let outsider = s.chain.wallet(s.app.state.wallet.treasury().unwrap().clone());
    let theft = TransactionRequest::default().with_to(s.usdc).with_input(
        transferCall { to: PrivateKeySigner::random().address(), amount: U256::from(10_000_000u64) }.abi_encode(),
    );
    assert!(outsider.send_transaction(theft).await.unwrap().get_receipt().await.unwrap().status());
    let outcome = s.reconcile().await;
    assert!(!outcome.is_ok(), "{}", outcome.render());
    let h = usdc(&outcome);
    assert_eq!((h.held, h.reorg_loss, h.on_chain), (units(fee + 10_000_000), units(fee), units(0)));
    assert_eq!(h.cover_shortfall(), units(10_000_000));
    let problems = outcome.report.problems.join("\n");
    assert!(
        problems.contains("(10 after the reorg loss) at deposit addresses and the hot wallet, but they hold only 0"),
        "{problems}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = s.ledger_verify(dir.path());
    assert!(!ok, "{text}");
}

async fn a_deposit_that_returns_after_a_reorg_took_it_recovers_the_loss(db: TestDb) {
    let s = setup(&db).await;
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));

    // 20 USDC paid, credited, and swept into the treasury.
    let invoice = s.invoice(json!({"amount": "20", "currency": "USD", "asset": "USDC"})).await;
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();
    s.chain.pay_token(s.usdc, &address, 20_000_000).await;
    let paid_block = s.chain.provider().get_block_number().await.unwrap();
    s.settle(&mut watcher, &mut settler, &address, false).await;
    assert_eq!(s.usdc_of(s.treasury()).await, U256::from(20_000_000u64));

    // Every transaction mined since the payment (the payment, the gas top-up, the sweep), as
    // signed, in order.
    let head = s.chain.provider().get_block_number().await.unwrap();
    let mut raws = Vec::new();
    for number in paid_block..=head {
        let block = s.chain.rpc("eth_getBlockByNumber", json!([format!("{number:#x}"), false])).await;
        for hash in block["transactions"].as_array().unwrap() {
            raws.push(s.chain.rpc("eth_getRawTransactionByHash", json!([hash])).await);
        }
    }
    assert!(raws.len() >= 3, "payment, top-up, sweep: {raws:?}");

    // A reorg deeper than the confirmations takes them all away: the credited deposit is
    // reversed after its money had been swept, so the loss is posted (once).
    s.reorg_from(paid_block, &mut watcher).await;
    assert_eq!(s.balance(AccountKind::ReorgLoss).await, units(20_000_000));
    let metrics = s.app.state.metrics.render();
    assert!(metrics.contains(r#"depositd_reorg_losses_total{asset="USDC",chain="anvil"} 1"#), "{metrics}");

    // They come back in later blocks: the payer's node sends the payment again, the settler
    // its top-up and sweep (the same signed bytes).
    for raw in &raws {
        s.chain.rpc("eth_sendRawTransaction", json!([raw])).await;
        s.chain.mine(1).await;
    }
    assert_eq!(s.usdc_of(s.treasury()).await, U256::from(20_000_000u64), "the sweep was re-mined");
    assert!(s.usdc_of(address.parse().unwrap()).await.is_zero());
    // ...and the deposit came back (a new generation), whose pending entry recovered the loss
    // instead of adding custody at an address the chain no longer holds it at.
    for _ in 0..3 {
        settler.tick().await.unwrap();
        s.chain.mine(CONFIRMATIONS).await;
        while watcher.tick().await.unwrap() {}
    }
    let body = s.get(&format!("/api/v1/invoices/{}", invoice["id"].as_str().unwrap())).await;
    assert_eq!(body["status"], "paid", "{body}");
    assert_eq!(body["payments"][0]["state"], "confirmed", "{body}");
    let owed = s.balance(AccountKind::Available).await;
    let fee = s.balance(AccountKind::FeeRevenue).await;
    assert_eq!(owed.checked_add(fee), Some(units(20_000_000)));
    for (kind, expected) in [
        (AccountKind::ReorgLoss, 0),
        (AccountKind::ReorgLossForwarded, 0),
        (AccountKind::Custody, 0),
        (AccountKind::Pending, 0),
        (AccountKind::Receivable, 0),
        (AccountKind::HotWallet, 20_000_000),
    ] {
        assert_eq!(s.balance(kind).await, units(expected), "{kind}");
    }
    let deposit_id = body["payments"][0]["id"].as_str().unwrap();
    let mut conn = s.app.store.conn().await.unwrap();
    let memos: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT idempotency_key, memo FROM ledger_entries WHERE deposit_id = $1 AND entry_type = 'deposit_pending'",
    )
    .bind(deposit_id)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert_eq!(memos.len(), 2, "{memos:?}");
    assert!(
        memos.iter().any(|(key, memo)| key.ends_with(":1")
            && memo.as_deref() == Some("recovers 20000000 of the reorg loss of an earlier generation of this deposit")),
        "{memos:?}"
    );

    // Verify passes: custody at the address is 0 as on chain, the treasury holds the 20.
    let outcome = s.reconcile().await;
    assert!(outcome.is_ok(), "{}", outcome.render());
    let h = usdc(&outcome);
    assert_eq!(
        (h.held, h.reorg_loss, h.cover_shortfall(), h.solvency_shortfall()),
        (units(20_000_000), units(0), units(0), units(0))
    );
    assert!(outcome.reorg_losses.is_empty(), "{}", outcome.render());
}
