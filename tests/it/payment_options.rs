//! Payment options (issue 23) on a real anvil chain, on both backends: an invoice offered in USDC
//! and USDT is paid half in each and is `paid`, its `amount_paid` in its currency and each
//! option's own paid amount shown, the ledger holding each payment in its own asset (fee by that
//! asset's schedule) and reconciliation passing; a token the invoice did not offer (DAI, allowed on
//! the chain) is `rejected` into suspense; the options' amounts stay at the rates locked at
//! creation whatever the price source says later; bad options are refused precisely. An invoice
//! offered on two chains (two anvils, two watchers) is paid half on each: each payment is confirmed
//! and counted against its own chain's head, and each chain's ledger and holdings reconcile.

use alloy::primitives::{Address, U256};
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::config::{ChainConfig, DefaultPaymentOption};
use depositd_core::deposit::DepositState;
use depositd_core::ledger::{self, Account, AccountKind};
use depositd_core::merchant::Merchant;
use depositd_core::money::BaseUnits;
use depositd_core::pricing::FeedSnapshot;
use depositd_core::store::{api_keys, deposits};
use depositd_core::time::now_ms;
use depositd_testkit::anvil::AnvilOptions;
use depositd_testkit::chain::{TestChain, payer_address};
use depositd_testkit::tokens::PAYER_MINT;
use depositd_watcher::ChainWatcher;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, assert_error, both_backends, use_test_chain};

both_backends!(
    half_in_each_option_pays_and_each_asset_is_credited_in_its_own,
    an_unoffered_token_is_rejected_into_suspense,
    option_amounts_stay_at_the_rates_locked_at_creation,
    bad_payment_options_are_refused_precisely,
    the_servers_default_options_apply_when_a_request_names_none,
    a_reorg_takes_one_options_payment_out_of_that_option_alone,
    a_refund_goes_back_in_the_chain_and_asset_that_were_paid,
    options_on_two_chains_add_up_each_confirmed_on_its_own_chain,
);

const CONFIRMATIONS: u64 = 2;

struct Setup {
    chain: TestChain,
    usdc: Address,
    usdt: Address,
    dai: Address,
    app: TestApp,
    key: String,
    merchant: Merchant,
    config: ChainConfig,
}

/// anvil with USDC, USDT and DAI, all three allowed on the chain; a merchant with a 1% fee.
async fn setup(db: &TestDb) -> Setup {
    let chain =
        TestChain::start(&[("USD Coin", "USDC"), ("Tether USD", "USDT"), ("Dai Stablecoin", "DAI")]).await.unwrap();
    let (usdc, usdt, dai) = (chain.tokens[0], chain.tokens[1], chain.tokens[2]);
    let mut config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, CONFIRMATIONS, &[("USDC", usdc), ("USDT", usdt), ("DAI", dai)]);
        c.settings.pricing.usd_pegged.push("DAI".into());
        config = Some(c.chains[0].clone());
    })
    .await;
    let (merchant, key) = app.merchant("Options Shop", &Scope::ALL).await;
    Setup { chain, usdc, usdt, dai, app, key, merchant, config: config.unwrap() }
}

impl Setup {
    async fn invoice(&self, id: &str) -> Value {
        let (status, body) = self.app.get_json(&self.key, &format!("/api/v1/invoices/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Buries what was paid under the confirmations and lets the watcher see and confirm it.
    async fn watch(&self, watcher: &mut ChainWatcher) {
        self.chain.mine(CONFIRMATIONS).await;
        while watcher.tick().await.unwrap() {}
    }

    async fn merchant_balance(&self, kind: AccountKind, asset: &str) -> BaseUnits {
        let mut conn = self.app.store.conn().await.unwrap();
        let account = Account::merchant(self.merchant.id, kind, self.config.chain_id, asset);
        ledger::balance(&mut conn, &account).await.unwrap()
    }

    async fn platform(&self, kind: AccountKind, asset: &str) -> BaseUnits {
        let mut conn = self.app.store.conn().await.unwrap();
        ledger::balance(&mut conn, &Account::platform(kind, self.config.chain_id, asset)).await.unwrap()
    }

    /// `depositd ledger verify`'s checks, on-chain ones included.
    async fn reconciles(&self) {
        let state = &self.app.state;
        let outcome = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
        assert!(outcome.is_ok(), "{}", outcome.render());
        assert!(outcome.unchecked.is_empty(), "{}", outcome.render());
    }
}

fn units(n: u64) -> BaseUnits {
    BaseUnits::from(n)
}

fn option<'a>(invoice: &'a Value, asset: &str) -> &'a Value {
    invoice["payment_options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["asset"] == asset)
        .unwrap_or_else(|| panic!("an option in {asset}: {invoice}"))
}

async fn half_in_each_option_pays_and_each_asset_is_credited_in_its_own(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.app.watcher(&s.config);
    let invoice = s
        .app
        .created_invoice(
            &s.key,
            json!({"amount": "10", "currency": "USD", "payment_options": [{"asset": "USDC"}, {"chain": "anvil", "asset": "USDT"}]}),
        )
        .await;
    let id = invoice["id"].as_str().unwrap();
    // Two options, the first the primary (`pay`), one deposit address for both, each its own
    // amount, rate and EIP-681 link naming its own token.
    let options = invoice["payment_options"].as_array().unwrap();
    assert_eq!(options.len(), 2, "{invoice}");
    assert_eq!(invoice["pay"]["asset"], "USDC");
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();
    for (o, token) in options.iter().zip([s.usdc, s.usdt]) {
        assert_eq!(o["address"], address.as_str(), "{o}");
        assert_eq!(
            (o["amount"].as_str(), o["rate"].as_str(), o["amount_paid"].as_str()),
            (Some("10"), Some("1"), Some("0"))
        );
        let token = token.to_checksum(None);
        assert_eq!(o["token_address"], token.as_str());
        assert_eq!(
            o["payment_uri"],
            format!("ethereum:{token}@{}/transfer?address={address}&uint256=10000000", s.config.chain_id)
        );
    }
    assert_eq!((invoice["amount_paid"].as_str(), invoice["amount_due"].as_str()), (Some("0"), Some("10")));

    // Half in USDC: underpaid, 5 USD paid and 5 due, in either option 5 tokens to go.
    s.chain.pay_token(s.usdc, address.as_str(), 5_000_000).await;
    s.watch(&mut watcher).await;
    let half = s.invoice(id).await;
    assert_eq!(half["status"], "pending", "{half}");
    assert_eq!(half["payment_flags"], json!(["underpaid"]));
    assert_eq!((half["amount_paid"].as_str(), half["amount_due"].as_str()), (Some("5"), Some("5")), "{half}");
    assert_eq!(option(&half, "USDC")["amount_paid"], "5");
    assert_eq!(option(&half, "USDT")["amount_paid"], "0");
    assert_eq!(option(&half, "USDT")["amount_due"], "5");
    assert!(option(&half, "USDT")["payment_uri"].as_str().unwrap().ends_with("&uint256=5000000"), "{half}");

    // The other half in USDT: paid, exactly, in the invoice's currency.
    s.chain.pay_token(s.usdt, address.as_str(), 5_000_000).await;
    s.watch(&mut watcher).await;
    let paid = s.invoice(id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["payment_flags"], json!([]), "{paid}");
    assert_eq!((paid["amount_paid"].as_str(), paid["amount_due"].as_str()), (Some("10"), Some("0")), "{paid}");
    assert_eq!(
        (option(&paid, "USDC")["amount_paid"].as_str(), option(&paid, "USDT")["amount_paid"].as_str()),
        (Some("5"), Some("5"))
    );
    let payments: Vec<(&str, &str)> = paid["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["asset"].as_str().unwrap(), p["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(payments, [("USDC", "5"), ("USDT", "5")]);

    // The ledger: each payment in its own asset, each charged 1% by its own asset's schedule.
    for asset in ["USDC", "USDT"] {
        assert_eq!(s.merchant_balance(AccountKind::Available, asset).await, units(4_950_000), "{asset}");
        assert_eq!(s.merchant_balance(AccountKind::Pending, asset).await, BaseUnits::ZERO, "{asset}");
        assert_eq!(s.platform(AccountKind::FeeRevenue, asset).await, units(50_000), "{asset}");
    }
    s.reconciles().await;

    // More after it is paid: credited in its own option and flagged overpaid.
    s.chain.pay_token(s.usdt, address.as_str(), 1_000_000).await;
    s.watch(&mut watcher).await;
    let over = s.invoice(id).await;
    assert_eq!((over["status"].as_str(), over["payment_flags"].clone()), (Some("paid"), json!(["overpaid"])));
    assert_eq!(over["amount_paid"], "11");
    assert_eq!(option(&over, "USDT")["amount_paid"], "6");
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDT").await, units(5_940_000));
    s.reconciles().await;
}

async fn an_unoffered_token_is_rejected_into_suspense(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.app.watcher(&s.config);
    let invoice = s
        .app
        .created_invoice(&s.key, json!({"amount": "4", "payment_options": [{"asset": "USDC"}, {"asset": "USDT"}]}))
        .await;
    let (id, address) = (invoice["id"].as_str().unwrap(), invoice["pay"]["address"].as_str().unwrap());
    // DAI is allowed on the chain but not offered by this invoice.
    s.chain.pay_token(s.dai, address, 4_000_000).await;
    s.watch(&mut watcher).await;
    let mut conn = s.app.store.conn().await.unwrap();
    let rejected = deposits::list_in_state(&mut conn, DepositState::Rejected, 10).await.unwrap();
    drop(conn);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].asset, "DAI");
    assert_eq!(rejected[0].reject_reason.as_deref(), Some("paid in DAI but expected USDC or USDT"));
    assert_eq!(s.platform(AccountKind::Suspense, "DAI").await, units(4_000_000));
    assert_eq!(s.merchant_balance(AccountKind::Pending, "DAI").await, BaseUnits::ZERO);
    assert_eq!(s.merchant_balance(AccountKind::Available, "DAI").await, BaseUnits::ZERO);
    let after = s.invoice(id).await;
    assert_eq!((after["status"].as_str(), after["amount_paid"].as_str()), (Some("pending"), Some("0")), "{after}");

    // An offered one in full still pays it.
    s.chain.pay_token(s.usdt, address, 4_000_000).await;
    s.watch(&mut watcher).await;
    assert_eq!(s.invoice(id).await["status"], "paid");
    s.reconciles().await;
}

async fn option_amounts_stay_at_the_rates_locked_at_creation(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.app.watcher(&s.config);
    let feed = |gbp: &str, usdt: &str| FeedSnapshot {
        usd_rates: [("GBP".to_owned(), gbp.parse().unwrap()), ("USDT".to_owned(), usdt.parse().unwrap())]
            .into_iter()
            .collect(),
        as_of_ms: now_ms(),
    };
    s.app.state.pricer.update_feed(feed("1.25", "0.998"));
    let body = json!({"amount": "10", "currency": "GBP", "payment_options": [{"asset": "USDC"}, {"asset": "USDT"}]});
    let invoice = s.app.created_invoice(&s.key, body.clone()).await;
    let id = invoice["id"].as_str().unwrap();
    // 10 GBP = 12.5 USD: 12.5 USDC; at 0.998 USD a USDT, 12.525051 USDT (rounded up).
    assert_eq!(option(&invoice, "USDC")["amount"], "12.5");
    assert_eq!(option(&invoice, "USDT")["amount"], "12.525051");
    assert_eq!(option(&invoice, "USDT")["rate"], "0.7984");

    // The price source moves: a new invoice is priced anew, this one keeps its amounts.
    s.app.state.pricer.update_feed(feed("2", "1.5"));
    let later = s.app.created_invoice(&s.key, body).await;
    assert_eq!(
        (option(&later, "USDC")["amount"].as_str(), option(&later, "USDT")["amount"].as_str()),
        (Some("20"), Some("13.333334"))
    );
    let kept = s.invoice(id).await;
    assert_eq!(kept["payment_options"], invoice["payment_options"], "the locked amounts do not move");

    // And a payment counts at the locked rate: the USDT option's amount pays the invoice, whose
    // amount paid is its price in its currency.
    s.chain.pay_token(s.usdt, invoice["pay"]["address"].as_str().unwrap(), 12_525_051).await;
    s.watch(&mut watcher).await;
    let paid = s.invoice(id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(
        (paid["amount_paid"].as_str(), paid["amount_due"].as_str(), paid["currency"].as_str()),
        (Some("10"), Some("0"), Some("GBP"))
    );
    assert_eq!(paid["payment_flags"], json!([]), "{paid}");
    s.reconciles().await;
}

async fn bad_payment_options_are_refused_precisely(db: TestDb) {
    let mut base = ChainConfig::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chains/base.toml"))
        .expect("the shipped base.toml loads");
    base.rpc_urls = vec!["http://127.0.0.1:1".into()];
    let app = TestApp::spawn_with(&db, |config| config.chains.push(base)).await;
    let (merchant, key) = app.merchant("Picky Shop", &Scope::ALL).await;
    let with = |options: Value| json!({"amount": "10", "payment_options": options});
    for (body, status, code, param) in [
        (
            with(json!([{"chain": "nope", "asset": "USDC"}, {"asset": "USDT"}])),
            400,
            "unsupported_chain",
            "payment_options[0].chain",
        ),
        (with(json!([{"asset": "USDC"}, {"asset": "XYZ"}])), 400, "unsupported_asset", "payment_options[1].asset"),
        (
            with(json!([{"asset": "USDC"}, {"asset": "USDT"}, {"chain": "anvil", "asset": "usdc"}])),
            400,
            "duplicate_payment_option",
            "payment_options[2]",
        ),
        (
            with(json!([{"asset": "USDC"}, {"chain": "base", "asset": "USDC"}])),
            403,
            "key_mode_mismatch",
            "payment_options[1].chain",
        ),
        (with(json!([])), 400, "invalid_parameter", "payment_options"),
        (with(json!(vec![json!({"asset": "USDC"}); 11])), 400, "invalid_parameter", "payment_options"),
        (
            json!({"amount": "10", "asset": "USDC", "payment_options": [{"asset": "USDC"}, {"asset": "USDT"}]}),
            400,
            "invalid_parameter",
            "asset",
        ),
        (
            json!({"amount": "10", "receiver_override": true, "receiver_override_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                "payment_options": [{"asset": "USDC"}, {"asset": "USDT"}]}),
            400,
            "invalid_parameter",
            "payment_options",
        ),
    ] {
        assert_error(app.create_invoice(&key, body.clone()).await, status, code, Some(param)).await;
    }
    // A live key: the test chain's option is the one at fault.
    let live_key = {
        let mut conn = app.store.conn().await.unwrap();
        let (_, key) = api_keys::create(&mut conn, merchant.id, KeyMode::Live, &Scope::ALL, None).await.unwrap();
        key.expose_secret().to_owned()
    };
    let body = with(json!([{"chain": "base", "asset": "USDC"}, {"chain": "anvil", "asset": "USDT"}]));
    assert_error(app.create_invoice(&live_key, body).await, 403, "key_mode_mismatch", Some("payment_options[1].chain"))
        .await;
    // An entry without its asset, or with a field it does not know, is refused too.
    for options in
        [json!([{"chain": "anvil"}, {"asset": "USDT"}]), json!([{"asset": "USDC", "amount": "1"}, {"asset": "USDT"}])]
    {
        let response = app.create_invoice(&key, with(options)).await;
        assert_eq!(response.status(), 400);
    }

    // One option is an invoice payable one way, as if named by `asset`: no extra rows, its
    // option is its `pay`.
    let one = app.created_invoice(&key, with(json!([{"asset": "USDT"}]))).await;
    assert_eq!(one["pay"]["asset"], "USDT");
    assert_eq!(one["payment_options"].as_array().unwrap().len(), 1);
    assert_eq!(one["payment_options"][0]["amount"], one["pay"]["amount"]);
    // An invoice that names no options shows its one way to pay as its only option.
    let plain = app.created_invoice(&key, json!({"amount": "3", "asset": "USDC"})).await;
    assert_eq!(plain["payment_options"][0]["payment_uri"], plain["pay"]["payment_uri"]);
    assert_eq!(plain["amount_paid"], "0");
}

async fn the_servers_default_options_apply_when_a_request_names_none(db: TestDb) {
    let app = TestApp::spawn_with(&db, |config| {
        config.settings.invoices.default_payment_options = vec![
            DefaultPaymentOption { chain: None, asset: "USDT".into() },
            DefaultPaymentOption { chain: Some("anvil".into()), asset: "USDC".into() },
        ];
    })
    .await;
    let (_, key) = app.merchant("Default Shop", &Scope::ALL).await;
    let defaulted = app.created_invoice(&key, json!({"amount": "2"})).await;
    let assets: Vec<&str> =
        defaulted["payment_options"].as_array().unwrap().iter().map(|o| o["asset"].as_str().unwrap()).collect();
    assert_eq!(assets, ["USDT", "USDC"]);
    assert_eq!(defaulted["pay"]["asset"], "USDT");
    // A request that says how it is paid is paid that way.
    let named = app.created_invoice(&key, json!({"amount": "2", "asset": "USDC"})).await;
    assert_eq!(named["payment_options"].as_array().unwrap().len(), 1);
    let own = app.created_invoice(&key, json!({"amount": "2", "payment_options": [{"asset": "USDC"}]})).await;
    assert_eq!((own["payment_options"].as_array().unwrap().len(), own["pay"]["asset"].as_str()), (1, Some("USDC")));
    // The seed 003 route names no asset: it gets the defaults too, and shows the primary.
    let response = app
        .client
        .post(app.url("/api/v1/create-invoice"))
        .header("x-api-key", &key)
        .json(&json!({"amount": "15.00", "currency_code": "USD", "customer_id": "c1", "external_id": "o-1"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let seed003: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{seed003}");
    let (_, full) = app.get_json(&key, &format!("/api/v1/invoices/{}", seed003["invoice_id"].as_str().unwrap())).await;
    assert_eq!(full["payment_options"].as_array().unwrap().len(), 2, "{full}");
}

async fn a_reorg_takes_one_options_payment_out_of_that_option_alone(db: TestDb) {
    let s = setup(&db).await;
    let mut watcher = s.app.watcher(&s.config);
    let invoice = s
        .app
        .created_invoice(&s.key, json!({"amount": "10", "payment_options": [{"asset": "USDC"}, {"asset": "USDT"}]}))
        .await;
    let (id, address) = (invoice["id"].as_str().unwrap(), invoice["pay"]["address"].as_str().unwrap());
    s.chain.pay_token(s.usdc, address, 5_000_000).await;
    s.chain.mine(3).await;
    while watcher.tick().await.unwrap() {}
    s.chain.pay_token(s.usdt, address, 5_000_000).await;
    s.chain.mine(3).await;
    while watcher.tick().await.unwrap() {}
    assert_eq!(s.invoice(id).await["status"], "paid");

    // A reorg deeper than the confirmations takes the USDT payment (and only it) away.
    s.chain.rpc("anvil_reorg", json!([4, []])).await;
    s.chain.mine(1).await;
    while watcher.tick().await.unwrap() {}
    let reversed = s.invoice(id).await;
    assert_eq!(
        (reversed["status"].as_str(), reversed["payment_flags"].clone(), reversed["amount_paid"].as_str()),
        (Some("pending"), json!(["underpaid"]), Some("5")),
        "{reversed}"
    );
    assert_eq!(
        (option(&reversed, "USDC")["amount_paid"].as_str(), option(&reversed, "USDT")["amount_paid"].as_str()),
        (Some("5"), Some("0"))
    );
    let states: Vec<(&str, &str)> = reversed["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["asset"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("USDC", "confirmed"), ("USDT", "reversed")]);
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDT").await, BaseUnits::ZERO);
    assert_eq!(s.platform(AccountKind::FeeRevenue, "USDT").await, BaseUnits::ZERO);
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDC").await, units(4_950_000));
    s.reconciles().await;

    // Paid again in USDT: paid again, each asset credited once.
    s.chain.pay_token(s.usdt, address, 5_000_000).await;
    s.watch(&mut watcher).await;
    let paid = s.invoice(id).await;
    assert_eq!((paid["status"].as_str(), paid["amount_paid"].as_str()), (Some("paid"), Some("10")), "{paid}");
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDT").await, units(4_950_000));
    s.reconciles().await;
}

/// A refund of a multi-option invoice paid half in USDC and half in USDT goes out in the asset
/// named (the payer's USDT balance goes up, the merchant's USDT goes down, USDC is untouched),
/// capped by what was paid in that asset; with two assets paid and none named it is ambiguous.
async fn a_refund_goes_back_in_the_chain_and_asset_that_were_paid(db: TestDb) {
    let s = setup(&db).await;
    let treasury = s.app.state.wallet.treasury_address();
    depositd::dev::fund_treasury(&s.app.store, &s.config, treasury, 10_000_000_000_000_000_000).await.unwrap();
    let (mut watcher, mut settler) = (s.app.watcher(&s.config), s.app.settler(&s.config));
    let invoice = s
        .app
        .created_invoice(
            &s.key,
            json!({"amount": "10", "currency": "USD", "payment_options": [{"asset": "USDC"}, {"asset": "USDT"}]}),
        )
        .await;
    let id = invoice["id"].as_str().unwrap();
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/invoices/{id}/refunds");
    let refund = |body: Value| {
        let request = s.app.client.post(s.app.url(&path)).header("x-api-key", &s.key).json(&body);
        async move { request.send().await.unwrap() }
    };
    let payer = payer_address();
    let to = payer.to_checksum(None);

    // Only USDT paid so far: a refund naming no option is in USDT; none is possible in USDC.
    s.chain.pay_token(s.usdt, address.as_str(), 5_000_000).await;
    s.watch(&mut watcher).await;
    assert_error(
        refund(json!({"amount": "1", "address": to, "asset": "USDC"})).await,
        400,
        "refund_exceeds_paid",
        Some("amount"),
    )
    .await;
    let response = refund(json!({"amount": "1", "address": to})).await;
    assert_eq!(response.status().as_u16(), 201);
    let first: Value = response.json().await.unwrap();
    assert_eq!((first["asset"].as_str(), first["amount"].as_str()), (Some("USDT"), Some("1")), "{first}");
    s.chain.pay_token(s.usdc, address.as_str(), 5_000_000).await;
    s.watch(&mut watcher).await;
    assert_eq!(s.invoice(id).await["status"], "paid");

    // Both paid: which one is ambiguous; an asset not offered is refused; beyond what was paid
    // in USDT is refused though the invoice was paid 10 USD.
    assert_error(refund(json!({"amount": "1", "address": to})).await, 409, "refund_option_ambiguous", Some("asset"))
        .await;
    assert_error(
        refund(json!({"amount": "1", "address": to, "asset": "DAI"})).await,
        400,
        "refund_option_not_offered",
        Some("asset"),
    )
    .await;
    assert_error(
        refund(json!({"amount": "1", "address": to, "chain": "nowhere"})).await,
        400,
        "refund_option_not_offered",
        Some("chain"),
    )
    .await;
    assert_error(
        refund(json!({"amount": "4.000001", "address": to, "asset": "USDT"})).await,
        400,
        "refund_exceeds_paid",
        Some("amount"),
    )
    .await;

    let response = refund(json!({"amount": "3", "address": to, "asset": "USDT"})).await;
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!((created["asset"].as_str(), created["amount"].as_str()), (Some("USDT"), Some("3")), "{created}");
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDT").await, units(950_000));
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDC").await, units(4_950_000));
    // 1 USDT of the 5 paid is left to refund.
    assert_error(
        refund(json!({"amount": "1.000001", "address": to, "asset": "USDT"})).await,
        400,
        "refund_exceeds_paid",
        Some("amount"),
    )
    .await;

    let (usdt_before, usdc_before) =
        (s.chain.token_balance(s.usdt, payer).await, s.chain.token_balance(s.usdc, payer).await);
    let ids = [first["id"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned()];
    crate::helpers::settle_until(&s.chain, &mut watcher, &mut settler, 40, "the USDT refunds", || async {
        let mut all = true;
        for id in &ids {
            all &= s.app.get_json(&s.key, &format!("/api/v1/payouts/{id}")).await.1["status"] == "confirmed";
        }
        all
    })
    .await;
    assert_eq!(s.chain.token_balance(s.usdt, payer).await - usdt_before, alloy::primitives::U256::from(4_000_000u64));
    assert_eq!(s.chain.token_balance(s.usdc, payer).await, usdc_before);
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDT").await, units(950_000));
    assert_eq!(s.merchant_balance(AccountKind::Reserved, "USDT").await, BaseUnits::ZERO);
    assert_eq!(s.merchant_balance(AccountKind::Available, "USDC").await, units(4_950_000));
    assert_eq!(s.invoice(id).await["status"], "partially_refunded");
    s.reconciles().await;
}

/// USDC on chain `anvil` (31337) and USDT on a second chain `anvil2` (31338, its own anvil and
/// watcher): one invoice offered on both is paid half on each. Each payment waits for its own
/// chain's confirmations and shows its own chain's, the two halves add up to paid, each is
/// credited on its own chain, and reconciliation (on-chain holdings of both chains) passes.
async fn options_on_two_chains_add_up_each_confirmed_on_its_own_chain(db: TestDb) {
    let first = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let second_anvil = AnvilOptions { chain_id: Some(31338), ..AnvilOptions::default() };
    let second =
        TestChain::start_with(second_anvil, &[("Tether USD", "USDT")], &[payer_address()], U256::from(PAYER_MINT))
            .await
            .unwrap();
    let (usdc, usdt) = (first.tokens[0], second.tokens[0]);
    let mut configs = Vec::new();
    let app = TestApp::spawn_with(&db, |c| {
        use_test_chain(&mut c.chains[0], &first, CONFIRMATIONS, &[("USDC", usdc)]);
        let mut other = c.chains[0].clone();
        other.name = "anvil2".into();
        other.chain_id = 31338;
        use_test_chain(&mut other, &second, CONFIRMATIONS, &[("USDT", usdt)]);
        c.chains.push(other);
        configs = c.chains.clone();
    })
    .await;
    let (merchant, key) = app.merchant("Two Chain Shop", &Scope::ALL).await;
    let (mut on_first, mut on_second) = (app.watcher(&configs[0]), app.watcher(&configs[1]));

    let invoice = app
        .created_invoice(
            &key,
            json!({"amount": "10", "currency": "USD",
                   "payment_options": [{"chain": "anvil", "asset": "USDC"}, {"chain": "anvil2", "asset": "USDT"}]}),
        )
        .await;
    let id = invoice["id"].as_str().unwrap().to_owned();
    let options = invoice["payment_options"].as_array().unwrap();
    assert_eq!(
        options.iter().map(|o| (o["chain_id"].as_u64().unwrap(), o["asset"].as_str().unwrap())).collect::<Vec<_>>(),
        [(31337, "USDC"), (31338, "USDT")],
        "{invoice}"
    );
    // One address for both options (an EVM address is the same key on every chain).
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();
    assert_eq!(options[1]["address"], address.as_str(), "{invoice}");
    assert!(
        options[1]["payment_uri"].as_str().unwrap().contains(&format!("{}@31338/transfer", usdt.to_checksum(None))),
        "{invoice}"
    );
    // Half on each chain. The second chain is then mined deep enough, the first is not: the
    // second chain's payment is confirmed and credited, the first's waits for its own chain.
    first.pay_token(usdc, address.as_str(), 5_000_000).await;
    second.pay_token(usdt, address.as_str(), 5_000_000).await;
    second.mine(CONFIRMATIONS + 3).await;
    while on_first.tick().await.unwrap() {}
    while on_second.tick().await.unwrap() {}
    let seen = fetch_invoice(&app, &key, &id).await;
    let payments = seen["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2, "{seen}");
    let by_chain = |chain_id: u64| payments.iter().find(|p| p["chain_id"] == chain_id).unwrap().clone();
    let (on_a, on_b) = (by_chain(31337), by_chain(31338));
    assert_eq!((on_a["asset"].as_str(), on_a["state"].as_str()), (Some("USDC"), Some("detected")), "{seen}");
    assert_eq!((on_b["asset"].as_str(), on_b["state"].as_str()), (Some("USDT"), Some("confirmed")), "{seen}");
    // Confirmations are counted on each payment's own chain: 1 on the first (nothing mined on
    // top), 1 + CONFIRMATIONS + 3 on the second.
    assert_eq!(on_a["confirmations"], 1, "{seen}");
    assert_eq!(on_b["confirmations"], 1 + CONFIRMATIONS + 3, "{seen}");
    assert_eq!(seen["status"], "processing", "{seen}");
    assert_eq!(option(&seen, "USDT")["amount_paid"], "5", "{seen}");

    // The first chain catches up: both confirmed, the invoice paid exactly.
    first.mine(CONFIRMATIONS).await;
    while on_first.tick().await.unwrap() {}
    let paid = fetch_invoice(&app, &key, &id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["payment_flags"], json!([]), "{paid}");
    assert_eq!((paid["amount_paid"].as_str(), paid["amount_due"].as_str()), (Some("10"), Some("0")), "{paid}");
    assert_eq!(
        (option(&paid, "USDC")["amount_paid"].as_str(), option(&paid, "USDT")["amount_paid"].as_str()),
        (Some("5"), Some("5"))
    );

    // The list (its payments read for the whole page in one query) shows the same payments.
    let (status, listed) = app.get_json(&key, "/api/v1/invoices").await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["data"].as_array().unwrap().iter().find(|i| i["id"] == id.as_str()).unwrap().clone();
    assert_eq!(listed["payments"], paid["payments"], "{listed}");

    // Each payment credited on its own chain, in its own asset.
    let mut conn = app.store.conn().await.unwrap();
    let merchant_id = merchant.id;
    for (chain_id, asset) in [(31337, "USDC"), (31338, "USDT")] {
        let available = Account::merchant(merchant_id, AccountKind::Available, chain_id, asset);
        assert_eq!(ledger::balance(&mut conn, &available).await.unwrap(), units(4_950_000), "{asset} on {chain_id}");
        let wrong_chain = Account::merchant(merchant_id, AccountKind::Available, 31337 + 31338 - chain_id, asset);
        assert_eq!(ledger::balance(&mut conn, &wrong_chain).await.unwrap(), BaseUnits::ZERO, "{asset}");
    }
    drop(conn);
    let state = &app.state;
    let outcome = depositd::reconcile::reconcile(&state.store, &state.config, &state.wallet, true).await.unwrap();
    assert!(outcome.is_ok(), "{}", outcome.render());
    assert!(outcome.unchecked.is_empty(), "{}", outcome.render());
}

async fn fetch_invoice(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, body) = app.get_json(key, &format!("/api/v1/invoices/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}
