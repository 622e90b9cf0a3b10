//! The ledger on both backends: random sequences of credits, fees, reserves, payouts, releases,
//! sweeps and reversals keep every invariant after every step (proptest, checked against an
//! independent model); concurrent posting loses no update and never goes negative; the HTTP
//! API shows balances, entries (JSON and CSV) and deposits, and refuses bad input precisely.

use std::collections::HashMap;

use depositd_core::api_key::Scope;
use depositd_core::ledger::statements::{self, EntryFilter};
use depositd_core::ledger::verify::verify;
use depositd_core::ledger::{self, Account, AccountKind, EntryType, LedgerError, Leg, NewEntry, Posted, Refs, Side};
use depositd_core::money::BaseUnits;
use depositd_core::store::Store;
use proptest::prelude::*;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, assert_error, both_backends};

both_backends!(
    random_sequences_keep_every_invariant,
    concurrent_reservations_lose_nothing_and_never_overdraw,
    the_api_shows_balances_entries_and_csv,
);

const CHAIN: u64 = 31337;

/// The operations a sequence is made of. Indices pick among earlier results (modulo their count).
#[derive(Debug, Clone)]
enum Op {
    /// A deposit seen: custody -> pending.
    Detect(u64),
    /// A detected deposit confirms: pending -> available, then a fee of `percent`.
    Confirm(usize, u8),
    /// available -> reserved (refused when available is short).
    Reserve(u64),
    /// A reservation is paid out: reserved -> hot wallet (refused when the hot wallet is short).
    Send(usize),
    /// A reservation is released: reserved -> available.
    Release(usize),
    /// custody -> hot wallet.
    Sweep(u64),
    /// Reverse an earlier entry (a reversal of available that is short goes to receivable, of
    /// custody to reorg_loss).
    Reverse(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..5_000_000).prop_map(Op::Detect),
        3 => (any::<usize>(), 0u8..=5).prop_map(|(i, p)| Op::Confirm(i, p)),
        2 => (1u64..4_000_000).prop_map(Op::Reserve),
        1 => any::<usize>().prop_map(Op::Send),
        1 => any::<usize>().prop_map(Op::Release),
        1 => (1u64..6_000_000).prop_map(Op::Sweep),
        2 => any::<usize>().prop_map(Op::Reverse),
    ]
}

/// An independent model of the accounts: plain integers, applied leg by leg.
#[derive(Default, Debug)]
struct Model {
    balances: HashMap<AccountKind, i128>,
}

impl Model {
    /// Applies `legs` the way the ledger must: all or nothing, no balance below zero, available's
    /// shortfall on a reversal to receivable, custody's to reorg_loss. Returns false (and changes nothing) when refused.
    fn apply(&mut self, legs: &[(AccountKind, Side, u64)], reversal: bool) -> bool {
        let mut next = self.balances.clone();
        let signed = |kind: AccountKind, side: Side, amount: u64| {
            if side == kind.normal_side() { amount as i128 } else { -(amount as i128) }
        };
        for &(kind, side, amount) in legs.iter().filter(|(k, s, _)| *s == k.normal_side()) {
            *next.entry(kind).or_default() += signed(kind, side, amount);
        }
        for &(kind, _, amount) in legs.iter().filter(|(k, s, _)| *s != k.normal_side()) {
            let balance = next.entry(kind).or_default();
            if *balance >= amount as i128 {
                *balance -= amount as i128;
            } else if reversal && matches!(kind, AccountKind::Available | AccountKind::Custody) {
                // What a merchant spent it owes; what left custody is the platform's reorg loss.
                let rest = amount as i128 - *balance;
                *balance = 0;
                let to = if kind == AccountKind::Custody { AccountKind::ReorgLoss } else { AccountKind::Receivable };
                *next.entry(to).or_default() += rest;
            } else {
                return false;
            }
        }
        self.balances = next;
        true
    }

    fn get(&self, kind: AccountKind) -> i128 {
        self.balances.get(&kind).copied().unwrap_or_default()
    }
}

/// An entry as the model keeps it: id, legs, and whether it has been reversed.
type PostedEntry = (Uuid, Vec<(AccountKind, Side, u64)>, bool);

struct Case {
    store: Store,
    merchant: Uuid,
    /// A fresh asset per case, so every account starts at zero.
    asset: String,
    model: Model,
    /// Entries posted: id, legs (for the model's reversal), and whether reversed.
    posted: Vec<PostedEntry>,
    detected: Vec<(u64, bool)>,
    reservations: Vec<(u64, bool)>,
    keys: u64,
}

impl Case {
    fn account(&self, kind: AccountKind) -> Account {
        if kind.is_merchant() {
            Account::merchant(self.merchant, kind, CHAIN, &self.asset)
        } else {
            Account::platform(kind, CHAIN, &self.asset)
        }
    }

    /// Posts legs as a new entry; checks the outcome against the model.
    async fn post(&mut self, entry_type: EntryType, legs: Vec<(AccountKind, Side, u64)>) -> bool {
        self.keys += 1;
        let key = format!("{}:{}:{}", self.asset, entry_type, self.keys);
        let entry = NewEntry {
            entry_type,
            idempotency_key: key.clone(),
            refs: Refs { merchant_id: Some(self.merchant), ..Refs::default() },
            reverses: None,
            memo: None,
            legs: legs
                .iter()
                .map(|&(kind, side, amount)| Leg {
                    account: self.account(kind),
                    side,
                    amount: BaseUnits::from(amount),
                    shortfall_to: None,
                })
                .collect(),
        };
        let expected = self.model.apply(&legs, false);
        let mut tx = self.store.begin().await.unwrap();
        let outcome = ledger::post(&mut tx, entry.clone()).await;
        match outcome {
            Ok(Posted::New(id)) => {
                assert!(expected, "posted although the model says it overdraws: {legs:?}");
                // The same key again is a no-op returning the same entry.
                assert_eq!(ledger::post(&mut tx, entry).await.unwrap(), Posted::AlreadyPosted(id));
                tx.commit().await.unwrap();
                self.posted.push((id, legs, false));
                true
            }
            Err(LedgerError::InsufficientFunds { .. }) => {
                assert!(!expected, "refused although the model covers it: {legs:?}");
                tx.rollback().await.unwrap();
                false
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    async fn run(&mut self, op: Op) {
        use AccountKind::*;
        use Side::*;
        match op {
            Op::Detect(amount) => {
                if self.post(EntryType::DepositPending, vec![(Custody, Debit, amount), (Pending, Credit, amount)]).await
                {
                    self.detected.push((amount, false));
                }
            }
            Op::Confirm(i, percent) => {
                let open: Vec<usize> = (0..self.detected.len()).filter(|&j| !self.detected[j].1).collect();
                if open.is_empty() {
                    return;
                }
                let j = open[i % open.len()];
                let amount = self.detected[j].0;
                if self
                    .post(EntryType::DepositCredit, vec![(Pending, Debit, amount), (Available, Credit, amount)])
                    .await
                {
                    self.detected[j].1 = true;
                    let fee = amount * percent as u64 / 100;
                    if fee > 0 {
                        assert!(
                            self.post(EntryType::Fee, vec![(Available, Debit, fee), (FeeRevenue, Credit, fee)]).await
                        );
                    }
                }
            }
            Op::Reserve(amount) => {
                if self
                    .post(EntryType::PayoutReserve, vec![(Available, Debit, amount), (Reserved, Credit, amount)])
                    .await
                {
                    self.reservations.push((amount, false));
                }
            }
            Op::Send(i) | Op::Release(i) => {
                let open: Vec<usize> = (0..self.reservations.len()).filter(|&j| !self.reservations[j].1).collect();
                if open.is_empty() {
                    return;
                }
                let j = open[i % open.len()];
                let amount = self.reservations[j].0;
                let done = if matches!(op, Op::Send(_)) {
                    self.post(EntryType::PayoutSent, vec![(Reserved, Debit, amount), (HotWallet, Credit, amount)]).await
                } else {
                    self.post(EntryType::PayoutReleased, vec![(Reserved, Debit, amount), (Available, Credit, amount)])
                        .await
                };
                if done {
                    self.reservations[j].1 = true;
                }
            }
            Op::Sweep(amount) => {
                self.post(EntryType::Sweep, vec![(HotWallet, Debit, amount), (Custody, Credit, amount)]).await;
            }
            Op::Reverse(i) => {
                let open: Vec<usize> = (0..self.posted.len()).filter(|&j| !self.posted[j].2).collect();
                if open.is_empty() {
                    return;
                }
                let j = open[i % open.len()];
                let (id, legs) = (self.posted[j].0, self.posted[j].1.clone());
                let mirrored: Vec<_> = legs.iter().map(|&(k, s, a)| (k, s.opposite(), a)).collect();
                let expected = self.model.apply(&mirrored, true);
                let mut tx = self.store.begin().await.unwrap();
                match ledger::reverse(&mut tx, id, None).await {
                    Ok(Posted::New(_)) => {
                        assert!(expected, "reversed although the model says it overdraws: {mirrored:?}");
                        assert!(matches!(ledger::reverse(&mut tx, id, None).await, Ok(Posted::AlreadyPosted(_))));
                        tx.commit().await.unwrap();
                        self.posted[j].2 = true;
                    }
                    Err(LedgerError::InsufficientFunds { .. }) => {
                        assert!(!expected, "reversal refused although the model covers it: {mirrored:?}");
                        tx.rollback().await.unwrap();
                    }
                    other => panic!("unexpected reversal outcome {other:?}"),
                }
            }
        }
    }

    /// After every step: the ledger reconciles and each stored balance is the model's.
    async fn check(&self) {
        let mut conn = self.store.conn().await.unwrap();
        let report = verify(&mut conn).await.unwrap();
        assert!(report.is_ok(), "{:#?}", report.problems);
        for kind in AccountKind::ALL {
            let stored = ledger::balance(&mut conn, &self.account(kind)).await.unwrap();
            assert_eq!(stored.to_string(), self.model.get(kind).to_string(), "{kind} after {:?}", self.model);
        }
    }
}

async fn random_sequences_keep_every_invariant(db: TestDb) {
    let store = db.store().await;
    let cases = if db.backend == "postgres" { 16 } else { 24 };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    let counter = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut case = Case {
                store: store.clone(),
                merchant: Uuid::now_v7(),
                asset: format!("T{n}"),
                model: Model::default(),
                posted: Vec::new(),
                detected: Vec::new(),
                reservations: Vec::new(),
                keys: 0,
            };
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    for op in ops {
                        case.run(op).await;
                        case.check().await;
                    }
                })
            });
            Ok(())
        })
        .unwrap();
}

async fn concurrent_reservations_lose_nothing_and_never_overdraw(db: TestDb) {
    let store = db.store().await;
    let merchant = Uuid::now_v7();
    let available = Account::merchant(merchant, AccountKind::Available, CHAIN, "USDC");
    let reserved = Account::merchant(merchant, AccountKind::Reserved, CHAIN, "USDC");
    let credit = NewEntry {
        entry_type: EntryType::DepositCredit,
        idempotency_key: "seed".into(),
        refs: Refs { merchant_id: Some(merchant), ..Refs::default() },
        reverses: None,
        memo: None,
        legs: vec![
            Leg::debit(Account::platform(AccountKind::Custody, CHAIN, "USDC"), BaseUnits::from(500)),
            Leg::credit(available.clone(), BaseUnits::from(500)),
        ],
    };
    let mut tx = store.begin().await.unwrap();
    ledger::post(&mut tx, credit).await.unwrap();
    tx.commit().await.unwrap();

    // 16 tasks race to reserve 7 units ten times each: 1,120 asked of 500.
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16 {
        let (store, available, reserved) = (store.clone(), available.clone(), reserved.clone());
        tasks.spawn(async move {
            let mut granted = 0u32;
            for i in 0..10 {
                let entry = NewEntry {
                    entry_type: EntryType::PayoutReserve,
                    idempotency_key: format!("reserve:{task}:{i}"),
                    refs: Refs::default(),
                    reverses: None,
                    memo: None,
                    legs: vec![
                        Leg::debit(available.clone(), BaseUnits::from(7)),
                        Leg::credit(reserved.clone(), BaseUnits::from(7)),
                    ],
                };
                let mut tx = store.begin().await.unwrap();
                match ledger::post(&mut tx, entry).await {
                    Ok(Posted::New(_)) => {
                        tx.commit().await.unwrap();
                        granted += 1;
                    }
                    Err(LedgerError::InsufficientFunds { .. }) => tx.rollback().await.unwrap(),
                    other => panic!("unexpected {other:?}"),
                }
            }
            granted
        });
    }
    let granted: u32 = tasks.join_all().await.into_iter().sum();
    assert_eq!(granted, 500 / 7, "every reservation that fits is granted, none beyond");
    let mut conn = store.conn().await.unwrap();
    assert_eq!(ledger::balance(&mut conn, &available).await.unwrap(), BaseUnits::from(500 % 7));
    assert_eq!(ledger::balance(&mut conn, &reserved).await.unwrap(), BaseUnits::from(7 * u64::from(granted)));
    let report = verify(&mut conn).await.unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
}

async fn the_api_shows_balances_entries_and_csv(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Ledger Shop", &Scope::ALL).await;
    let (_, other_key) = app.merchant("Other Shop", &Scope::ALL).await;
    let (_, no_ledger_key) = app.merchant("Invoices Only", &[Scope::InvoicesRead]).await;
    let invoice_id = Uuid::now_v7();

    // Three movements: 12.5 USDC credited, a 0.125 fee, 2 USDC reserved; and a reversal of the fee.
    let usdc = |kind| Account::merchant(merchant.id, kind, CHAIN, "USDC");
    let entries = [
        (
            EntryType::DepositCredit,
            Account::platform(AccountKind::Custody, CHAIN, "USDC"),
            usdc(AccountKind::Available),
            12_500_000u64,
        ),
        (
            EntryType::Fee,
            usdc(AccountKind::Available),
            Account::platform(AccountKind::FeeRevenue, CHAIN, "USDC"),
            125_000,
        ),
        (EntryType::PayoutReserve, usdc(AccountKind::Available), usdc(AccountKind::Reserved), 2_000_000),
    ];
    let mut ids = Vec::new();
    let mut tx = app.store.begin().await.unwrap();
    for (i, (entry_type, debit, credit, amount)) in entries.into_iter().enumerate() {
        let posted = ledger::post(
            &mut tx,
            NewEntry {
                entry_type,
                idempotency_key: format!("api-test:{i}"),
                refs: Refs { merchant_id: Some(merchant.id), invoice_id: Some(invoice_id), ..Refs::default() },
                reverses: None,
                memo: None,
                legs: vec![Leg::debit(debit, BaseUnits::from(amount)), Leg::credit(credit, BaseUnits::from(amount))],
            },
        )
        .await
        .unwrap();
        ids.push(posted.id());
    }
    ledger::reverse(&mut tx, ids[1], None).await.unwrap();
    tx.commit().await.unwrap();

    // Balances: every configured asset, exact in both units.
    let (status, balances) = app.get_json(&key, "/api/v1/balances").await;
    assert_eq!(status, 200, "{balances}");
    let row = |asset: &str| balances["data"].as_array().unwrap().iter().find(|b| b["asset"] == asset).unwrap().clone();
    let usdc_row = row("USDC");
    assert_eq!(
        (usdc_row["available"].as_str(), usdc_row["available_base_units"].as_str(), usdc_row["reserved"].as_str()),
        (Some("10.5"), Some("10500000"), Some("2"))
    );
    assert_eq!((usdc_row["chain"].as_str(), usdc_row["decimals"].as_u64()), (Some("anvil"), Some(6)));
    assert_eq!(row("USDT")["available"], "0");
    assert_eq!(row("ETH")["decimals"], 18);
    // Another merchant sees none of it.
    let (_, theirs) = app.get_json(&other_key, "/api/v1/balances").await;
    assert!(theirs["data"].as_array().unwrap().iter().all(|b| b["available_base_units"] == "0"), "{theirs}");

    // Entries, newest first, with the merchant's postings and running balances.
    let (_, list) = app.get_json(&key, "/api/v1/ledger").await;
    let data = list["data"].as_array().unwrap();
    let types: Vec<&str> = data.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["reversal", "payout_reserve", "fee", "deposit_credit"], "{list}");
    assert_eq!(data[0]["reverses_entry_id"], ids[1].to_string());
    let reversal = &data[0]["postings"].as_array().unwrap()[0];
    assert_eq!((reversal["account"].as_str(), reversal["amount"].as_str()), (Some("available"), Some("0.125")));
    assert_eq!(reversal["balance_after"], "10.5");
    let fee = &data[2]["postings"].as_array().unwrap()[0];
    assert_eq!((fee["amount"].as_str(), fee["amount_base_units"].as_str()), (Some("-0.125"), Some("-125000")));
    assert_eq!(fee["balance_after"], "12.375");
    assert_eq!(data[2]["postings"].as_array().unwrap().len(), 1, "the platform's side is not shown");
    let reserve: Vec<&str> =
        data[1]["postings"].as_array().unwrap().iter().map(|p| p["account"].as_str().unwrap()).collect();
    assert_eq!(reserve, ["available", "reserved"]);

    // Filters and pagination.
    let (_, fees) = app.get_json(&key, "/api/v1/ledger?type=fee").await;
    assert_eq!(fees["data"].as_array().unwrap().len(), 1);
    let (_, page) = app.get_json(&key, "/api/v1/ledger?limit=2").await;
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (2, Some(true)));
    let last = page["data"][1]["id"].as_str().unwrap();
    let (_, rest) = app.get_json(&key, &format!("/api/v1/ledger?limit=2&starting_after={last}")).await;
    let rest_types: Vec<&str> = rest["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!((rest_types, rest["has_more"].as_bool()), (vec!["fee", "deposit_credit"], Some(false)));
    for (query, count) in
        [("asset=USDC", 4), ("asset=USDT", 0), ("chain=anvil", 4), (&*format!("invoice_id={invoice_id}"), 4)]
    {
        let (_, found) = app.get_json(&key, &format!("/api/v1/ledger?{query}")).await;
        assert_eq!(found["data"].as_array().unwrap().len(), count, "{query}: {found}");
    }
    let (_, theirs) = app.get_json(&other_key, "/api/v1/ledger").await;
    assert_eq!(theirs["data"], serde_json::json!([]));

    // CSV: one row per posting, for accountants; by query or by Accept.
    let csv = app.client.get(app.url("/api/v1/ledger?format=csv")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 5, "{text}");
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][column("type")], "reversal");
    assert_eq!(&rows[0][column("reverses_entry_id")], ids[1].to_string());
    assert!(rows.iter().any(|r| &r[column("amount")] == "-0.125" && &r[column("account")] == "available"));
    assert!(rows[0][column("created_at")].ends_with('Z'), "RFC 3339 UTC");
    let by_accept = app
        .client
        .get(app.url("/api/v1/ledger?type=fee"))
        .header("x-api-key", &key)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(by_accept.lines().count(), 2, "header and the fee's one posting: {by_accept}");

    // Bad input: a precise 400 naming the parameter; a missing scope is 403.
    for (query, param) in [
        ("type=refund_all", "type"),
        ("limit=0", "limit"),
        ("format=xml", "format"),
        ("invoice_id=nope", "invoice_id"),
        ("created_after=yesterday", "created_after"),
        ("chain=mainnet", "chain"),
        ("colour=red", "colour"),
    ] {
        let response =
            app.client.get(app.url(&format!("/api/v1/ledger?{query}"))).header("x-api-key", &key).send().await.unwrap();
        let code = if param == "colour" {
            "unknown_parameter"
        } else if param == "chain" {
            "unsupported_chain"
        } else {
            "invalid_parameter"
        };
        assert_error(response, 400, code, Some(param)).await;
    }
    for path in ["/api/v1/ledger", "/api/v1/balances", "/api/v1/deposits"] {
        let response = app.client.get(app.url(path)).header("x-api-key", &no_ledger_key).send().await.unwrap();
        assert_error(response, 403, "insufficient_scope", None).await;
    }
    let response =
        app.client.get(app.url("/api/v1/deposits/not-a-uuid")).header("x-api-key", &key).send().await.unwrap();
    assert_error(response, 400, "invalid_parameter", Some("id")).await;
    let response = app
        .client
        .get(app.url(&format!("/api/v1/deposits/{}", Uuid::now_v7())))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "resource_missing", None).await;
    let response =
        app.client.get(app.url("/api/v1/deposits?state=lost")).header("x-api-key", &key).send().await.unwrap();
    assert_error(response, 400, "invalid_parameter", Some("state")).await;

    // The statements function the API uses agrees with what was posted.
    let mut conn = app.store.conn().await.unwrap();
    let found = statements::entries(&mut conn, merchant.id, &EntryFilter::default(), 10).await.unwrap();
    assert_eq!(found.len(), 4);
    let report = verify(&mut conn).await.unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
}
