//! The dashboard's Balances and ledger page and its Payouts and refunds pages over real HTTP on
//! both backends: the journal's filters and its CSV export (parsed, matching the journal line for
//! line), a payout created from the dashboard with the password re-entered (a wrong password
//! creates nothing, a double submit creates one) and settled on anvil, errors next to their
//! fields with the API's messages, a refund of an invoice, cancel, roles, CSRF, one merchant's
//! session on another's payout, and the audit events of every change.

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use depositd_core::api_key::Scope;
use depositd_core::invoice::InvoiceStatus;
use depositd_core::ledger::statements::{self, EntryFilter};
use depositd_core::ledger::{self, Account, AccountKind, EntryType, Leg, NewEntry, Refs};
use depositd_core::member::Role;
use depositd_core::money::BaseUnits;
use depositd_core::outbox::EventType;
use depositd_core::store::webhooks::{EventFilter, list_events};
use depositd_core::store::{invoices, payouts};
use depositd_core::time::now_ms;
use depositd_testkit::chain::TestChain;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::dashboard::{Browser, PASSWORD, csrf_of, member};
use crate::helpers::{TestApp, TestDb, both_backends, settle_until, use_test_chain};

both_backends!(
    the_journal_filters_pages_and_exports_exactly,
    a_payout_confirmed_with_the_password_is_sent_on_anvil,
    a_refund_and_a_cancel_from_the_dashboard,
    viewers_developers_strangers_and_forged_forms_are_refused,
);

/// The dev chain of the test configuration (`anvil`).
const CHAIN: u64 = 31337;
/// EIP-55's own example address.
pub(crate) const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
pub(crate) const USDC: u128 = 1_000_000;

/// Credits `base_units` of `asset` to the merchant's available balance with a real ledger entry.
pub(crate) async fn fund(app: &TestApp, merchant_id: Uuid, asset: &str, base_units: u128, memo: &str) {
    let amount = BaseUnits::from(U256::from(base_units));
    let mut tx = app.store.begin().await.unwrap();
    ledger::post(
        &mut tx,
        NewEntry {
            entry_type: EntryType::DepositCredit,
            idempotency_key: format!("test_funding:{}", Uuid::now_v7()),
            refs: Refs { merchant_id: Some(merchant_id), ..Refs::default() },
            reverses: None,
            memo: Some(memo.into()),
            legs: vec![
                Leg::debit(Account::platform(AccountKind::Custody, CHAIN, asset), amount),
                Leg::credit(Account::merchant(merchant_id, AccountKind::Available, CHAIN, asset), amount),
            ],
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A browser signed in as a new member of `merchant_id` with `role`.
async fn signed_in<'a>(app: &'a TestApp, merchant_id: Uuid, email: &str, role: Role) -> Browser<'a> {
    member(app, merchant_id, email, role).await;
    let mut browser = Browser::new(app);
    let page = browser.sign_in(email, PASSWORD).await;
    assert_eq!(page.status, 303, "{}", page.body);
    browser
}

/// The `member.action` events of a merchant: (action, resource id, member email).
async fn audit_actions(app: &TestApp, merchant_id: Uuid) -> Vec<(String, String, String)> {
    let mut conn = app.store.conn().await.unwrap();
    let filter = EventFilter { event_type: Some(EventType::MemberAction), ..EventFilter::default() };
    let mut found: Vec<(String, String, String)> = list_events(&mut conn, merchant_id, &filter, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let payload: Value = serde_json::from_str(&e.payload).unwrap();
            let data = &payload["data"];
            (
                data["action"].as_str().unwrap().to_owned(),
                data["resource_id"].as_str().unwrap().to_owned(),
                data["member"]["email"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.reverse();
    found
}

/// The payouts of a merchant (newest first).
async fn payouts_of(app: &TestApp, merchant_id: Uuid) -> Vec<depositd_core::payout::Payout> {
    let mut conn = app.store.conn().await.unwrap();
    payouts::list(&mut conn, merchant_id, None, None, None, 100).await.unwrap()
}

/// The text of the element with `id` (the first tag that has it), without its markup.
pub(crate) fn text_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id} in the page:\n{html}"));
    let open_end = start + html[start..].find('>').unwrap() + 1;
    let close = open_end + html[open_end..].find("</").unwrap();
    html[open_end..close].trim().to_owned()
}

/// The value of the hidden input `name`.
pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} field in:\n{html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

async fn the_journal_filters_pages_and_exports_exactly(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Ledger Shop", &Scope::ALL).await;
    fund(&app, merchant.id, "USDC", 100 * USDC, "first, with a \"quoted\", comma").await;
    fund(&app, merchant.id, "USDT", 5 * USDC, "second\nline").await;
    // A USDC payout through the API: its reserve is an entry of its own.
    let response = app
        .client
        .post(app.url("/api/v1/payouts"))
        .header("x-api-key", &key)
        .json(&json!({"asset": "USDC", "amount": "12.345678", "destination": DEST}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let payout: Value = response.json().await.unwrap();
    let payout_id = payout["id"].as_str().unwrap().to_owned();
    let mut browser = signed_in(&app, merchant.id, "viewer@ledger.example", Role::Viewer).await;

    // Balances and the whole journal, newest first, with the running balance per account.
    let page = browser.get("/dashboard/ledger").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("aria-current=\"page\">Balances and ledger"));
    for text in ["Available", "Pending", "Reserved", "In transit", "Receivable", "87.654322", "12.345678"] {
        assert!(page.body.contains(text), "{text} missing");
    }
    assert_eq!(page.body.matches("class=\"entry\"").count(), 3);
    let reserve = page.body.find(">payout_reserve</td>").unwrap();
    let first = page.body.rfind(">deposit_credit</td>").unwrap();
    assert!(reserve < first, "newest first");
    // The reserve's lines: available down to 87.654322, reserved up to 12.345678.
    assert!(page.body.contains("-12.345678") && page.body.contains(">87.654322<"), "{}", page.body);

    // Filters: kind, asset, payout, dates.
    let only = |body: &str| body.matches("class=\"entry\"").count();
    let page = browser.get("/dashboard/ledger?kind=payout_reserve").await;
    assert_eq!((page.status, only(&page.body)), (200, 1));
    let page = browser.get("/dashboard/ledger?asset=USDT").await;
    assert_eq!((page.status, only(&page.body)), (200, 1));
    assert!(page.body.contains(">5<") || page.body.contains(">5.0"), "{}", page.body);
    let page = browser.get(&format!("/dashboard/ledger?payout_id={payout_id}")).await;
    assert_eq!((page.status, only(&page.body)), (200, 1));
    let today = depositd_core::time::iso8601(now_ms())[..10].to_owned();
    let page = browser.get(&format!("/dashboard/ledger?from={today}&to={today}")).await;
    assert_eq!((page.status, only(&page.body)), (200, 3));
    let page = browser.get("/dashboard/ledger?from=2099-01-01").await;
    assert_eq!((page.status, only(&page.body)), (200, 0));
    let page = browser.get("/dashboard/ledger?to=2000-01-01").await;
    assert_eq!((page.status, only(&page.body)), (200, 0));
    let page = browser.get(&format!("/dashboard/ledger?invoice_id={}", Uuid::now_v7())).await;
    assert_eq!((page.status, only(&page.body)), (200, 0));
    // Bad filters: each error next to its field, nothing listed, no 500.
    let page = browser.get("/dashboard/ledger?from=2026-02-30&asset=DOGE&kind=gift&payout_id=x").await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(text_of(&page.body, "from-error").contains("YYYY-MM-DD"));
    assert_eq!(unescape(&text_of(&page.body, "asset-error")), "asset \"DOGE\" is not an asset of an enabled chain");
    assert!(unescape(&text_of(&page.body, "kind-error")).starts_with("unknown entry type \"gift\""));
    assert_eq!(text_of(&page.body, "payout_id-error"), "payout_id must be a UUID");
    assert!(page.body.contains("aria-describedby=\"from-error\""));
    assert_eq!(only(&page.body), 0);

    // The CSV export of the filtered journal: an attachment, one row per line, exact amounts,
    // exactly the journal's entries and running balances.
    let response = app
        .client
        .get(app.url("/dashboard/ledger.csv?asset=USDC"))
        .header("cookie", browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment;") && disposition.contains("ledger.csv"), "{disposition}");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let body = response.text().await.unwrap();
    assert!(body.contains("\r\n"), "RFC 4180 line ends");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut conn = app.store.conn().await.unwrap();
    let filter = EntryFilter { asset: Some("USDC".into()), ..EntryFilter::default() };
    let journal = statements::entries(&mut conn, merchant.id, &filter, 100).await.unwrap();
    drop(conn);
    let lines: Vec<_> = journal.iter().flat_map(|e| e.postings.iter().map(move |p| (e, p))).collect();
    assert_eq!(journal.len(), 2);
    assert_eq!(rows.len(), lines.len(), "one row per line: {body}");
    for (row, (entry, posting)) in rows.iter().zip(&lines) {
        assert_eq!(row[column("entry_id")], entry.entry.id.to_string());
        assert_eq!(&row[column("type")], entry.entry.entry_type.as_str());
        assert_eq!(row[column("asset")], posting.account.asset);
        assert_eq!(row[column("account")], posting.account.kind.to_string());
        assert_eq!(row[column("balance_after_base_units")], posting.balance_after.to_string());
        let sign = if posting.side == posting.account.kind.normal_side() { "" } else { "-" };
        assert_eq!(row[column("amount_base_units")], format!("{sign}{}", posting.amount));
        assert_eq!(row[column("memo")], entry.entry.memo.clone().unwrap_or_default(), "quoted exactly");
    }
    let amounts: Vec<&str> = rows.iter().map(|r| r.get(column("amount")).unwrap()).collect();
    assert!(
        amounts.contains(&"100") && amounts.contains(&"-12.345678") && amounts.contains(&"12.345678"),
        "{amounts:?}"
    );
    assert!(body.contains("\"first, with a \"\"quoted\"\", comma\""), "RFC 4180 quoting: {body}");
    // A bad filter on the export: the page with the error, no file.
    let page = browser.get("/dashboard/ledger.csv?to=tomorrow").await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("id=\"to-error\""));

    // Cursor paging: 60 more entries, 50 on the first page, the rest after the cursor.
    for i in 0..60 {
        fund(&app, merchant.id, "USDT", 1, &format!("small {i}")).await;
    }
    let first = browser.get("/dashboard/ledger?asset=USDT").await;
    assert_eq!(only(&first.body), 50);
    let start = first.body.find("href=\"/dashboard/ledger?").unwrap() + 6;
    let next = unescape(&first.body[start..start + first.body[start..].find('"').unwrap()]);
    assert!(next.contains("asset=USDT") && next.contains("starting_after="), "{next}");
    let second = browser.get(&next).await;
    assert_eq!((second.status, only(&second.body)), (200, 11));
    assert!(!second.body.contains("rel=\"next\""));
}

async fn a_payout_confirmed_with_the_password_is_sent_on_anvil(db: TestDb) {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut config = None;
    let app = TestApp::spawn_with(&db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 2, &[("USDC", usdc)]);
        config = Some(c.chains[0].clone());
    })
    .await;
    let config = config.unwrap();
    let treasury = app.state.wallet.treasury_address();
    depositd::dev::fund_treasury(&app.store, &config, treasury, 10_000_000_000_000_000_000).await.unwrap();
    let (merchant, key) = app.merchant("Payout Shop", &Scope::ALL).await;
    let (mut watcher, mut settler) = (app.watcher(&config), app.settler(&config));

    // 100 USDC paid in on anvil and confirmed: 99 available (1% fee).
    let invoice = app.created_invoice(&key, json!({"amount": "100", "currency": "USD", "asset": "USDC"})).await;
    chain.pay_token(usdc, invoice["pay"]["address"].as_str().unwrap(), 100_000_000).await;
    chain.mine(2).await;
    while watcher.tick().await.unwrap() {}
    let mut browser = signed_in(&app, merchant.id, "owner@payout.example", Role::Owner).await;
    let ledger = browser.get("/dashboard/ledger").await;
    assert!(ledger.body.contains(">99<"), "{}", ledger.body);

    // The form, then errors next to their fields with the API's messages.
    let form = browser.get("/dashboard/payouts/new").await;
    assert_eq!(form.status, 200, "{}", form.body);
    for field in ["chain", "asset", "destination", "amount", "reference"] {
        assert!(form.body.contains(&format!("<label for=\"{field}\"")), "{field} labelled");
    }
    let csrf = csrf_of(&form.body);
    let review = |destination: &str, amount: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("chain".to_owned(), "anvil".to_owned()),
            ("asset".to_owned(), "USDC".to_owned()),
            ("destination".to_owned(), destination.to_owned()),
            ("amount".to_owned(), amount.to_owned()),
            ("reference".to_owned(), "supplier-7".to_owned()),
        ]
    };
    let bad_checksum = DEST.replace("aAeb", "AAeb");
    let fields = review(&bad_checksum, "40");
    let page = browser.post("/dashboard/payouts/new", &pairs(&fields)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    let api = app
        .client
        .post(app.url("/api/v1/payouts"))
        .header("x-api-key", &key)
        .json(&json!({"asset": "USDC", "amount": "40", "destination": bad_checksum}))
        .send()
        .await
        .unwrap();
    let api: Value = api.json().await.unwrap();
    assert_eq!(unescape(&text_of(&page.body, "destination-error")), api["error"]["message"].as_str().unwrap());
    assert!(page.body.contains("aria-describedby=\"destination-error\""));
    let fields = review(DEST, "99.000001");
    let page = browser.post("/dashboard/payouts/new", &pairs(&fields)).await;
    assert_eq!(page.status, 400);
    let error = text_of(&page.body, "amount-error");
    assert!(error.starts_with("insufficient available balance: 99 USDC is available"), "{error}");
    let fields = review(DEST, "1.0000001");
    let page = browser.post("/dashboard/payouts/new", &pairs(&fields)).await;
    assert_eq!(text_of(&page.body, "amount-error"), "amount has 7 decimal places; USDC has at most 6");
    assert!(payouts_of(&app, merchant.id).await.is_empty(), "nothing created by the form");

    // The confirmation: the fee reserve and the balance after; the password asked again.
    let destination = PrivateKeySigner::random().address();
    let fields = review(&destination.to_checksum(None), "40");
    let confirm = browser.post("/dashboard/payouts/new", &pairs(&fields)).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    for text in ["Network fee reserve", "0 USDC", "Available now", "99 USDC", "Available after", "59 USDC"] {
        assert!(confirm.body.contains(text), "{text} missing: {}", confirm.body);
    }
    assert!(confirm.body.contains("type=\"password\""));
    let key_field = hidden(&confirm.body, "idempotency_key");
    let mut confirmed = pairs(&fields);
    confirmed.push(("idempotency_key", &key_field));
    let mut wrong = confirmed.clone();
    wrong.push(("password", "not my password at all"));
    let page = browser.post("/dashboard/payouts", &wrong).await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(text_of(&page.body, "password-error").contains("not correct"));
    assert!(page.body.contains("aria-describedby=\"password-error\""));
    assert!(payouts_of(&app, merchant.id).await.is_empty(), "a wrong password creates nothing");

    // The right password: created; the same confirmation sent again shows the same payout.
    let mut right = confirmed.clone();
    right.push(("password", PASSWORD));
    let created = browser.post("/dashboard/payouts", &right).await;
    assert_eq!(created.status, 303, "{}", created.body);
    let location = created.location.unwrap();
    let again = browser.post("/dashboard/payouts", &right).await;
    assert_eq!((again.status, again.location.as_deref()), (303, Some(location.as_str())));
    let all = payouts_of(&app, merchant.id).await;
    assert_eq!(all.len(), 1, "a double submit creates one payout");
    let payout = &all[0];
    assert_eq!(location, format!("/dashboard/payouts/{}", payout.id));
    assert_eq!(payout.destination, destination.to_checksum(None));
    assert_eq!(payout.external_id.as_deref(), Some("supplier-7"));
    assert_eq!(payout.amount, BaseUnits::from(U256::from(40 * USDC)));
    assert_eq!(
        audit_actions(&app, merchant.id).await,
        vec![("payout.create".to_owned(), payout.id.to_string(), "owner@payout.example".to_owned())]
    );
    let list = browser.get("/dashboard/payouts").await;
    assert!(list.body.contains(&format!("id=\"payout-{}\"", payout.id)) && list.body.contains("pending"));

    // Settled on anvil: the detail shows it confirmed with its transaction.
    let payout_id = payout.id;
    settle_until(&chain, &mut watcher, &mut settler, 40, "the dashboard payout", || async {
        let mut conn = app.store.conn().await.unwrap();
        let p = payouts::get(&mut conn, merchant.id, payout_id).await.unwrap().unwrap();
        p.status == depositd_core::payout::PayoutStatus::Confirmed
    })
    .await;
    assert_eq!(chain.token_balance(usdc, destination).await, U256::from(40 * USDC));
    let detail = browser.get(&location).await;
    assert_eq!(detail.status, 200);
    assert_eq!(text_of(&detail.body, "payout-status"), "confirmed");
    assert!(text_of(&detail.body, "payout-tx-hash").starts_with("0x"));
    for event in ["payout.created", "payout.sent", "payout.confirmed", "member.action"] {
        assert!(detail.body.contains(event), "{event} listed");
    }
    assert!(!detail.body.contains("Cancel this"), "no cancel once sent");

    // An absurd native amount (2^256 - 1 base units) overflows with its fee reserve (known now
    // that the settler has estimated fees): the same insufficient-funds error next to the field,
    // never a 500.
    let absurd = BaseUnits::from(U256::MAX).to_display(18);
    let mut fields = review(DEST, &absurd);
    fields[2].1 = "ETH".to_owned();
    let page = browser.post("/dashboard/payouts/new", &pairs(&fields)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    let error = text_of(&page.body, "amount-error");
    assert!(error.starts_with("insufficient available balance:") && error.contains("ETH is available"), "{error}");
}

/// An invoice of the merchant marked paid `paid` base units of USDC (as the watcher would).
async fn paid_invoice(app: &TestApp, key: &str, merchant_id: Uuid, paid: u128) -> Uuid {
    let invoice = app.created_invoice(key, json!({"amount": "10", "asset": "USDC"})).await;
    let id: Uuid = invoice["id"].as_str().unwrap().parse().unwrap();
    let mut conn = app.store.conn().await.unwrap();
    let read = invoices::get(&mut conn, merchant_id, id).await.unwrap().unwrap();
    let mut updated = read.clone();
    updated.amount_paid_base_units = BaseUnits::from(U256::from(paid));
    updated.status = InvoiceStatus::Paid;
    updated.finished_at = Some(now_ms());
    invoices::update_payment_state(&mut conn, &read, &updated).await.unwrap();
    id
}

async fn a_refund_and_a_cancel_from_the_dashboard(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Refund Shop", &Scope::ALL).await;
    fund(&app, merchant.id, "USDC", 100 * USDC, "funding").await;
    let invoice = paid_invoice(&app, &key, merchant.id, 10 * USDC).await;
    let mut browser = signed_in(&app, merchant.id, "owner@refund.example", Role::Owner).await;
    let path = format!("/dashboard/invoices/{invoice}/refund");

    let form = browser.get(&path).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("USDC on anvil (10 USDC paid)"), "{}", form.body);
    let csrf = csrf_of(&form.body);
    // More than was paid: the API's message, next to the amount.
    let over = browser
        .post(&path, &[("csrf", &csrf), ("option", "anvil/USDC"), ("destination", DEST), ("amount", "10.5")])
        .await;
    assert_eq!(over.status, 400, "{}", over.body);
    assert!(
        text_of(&over.body, "amount-error").starts_with("the refund of 10.5 USDC exceeds what can still be refunded")
    );
    let bad = browser
        .post(&path, &[("csrf", &csrf), ("option", "anvil/USDC"), ("destination", "0x12"), ("amount", "4")])
        .await;
    assert_eq!(bad.status, 400);
    assert!(text_of(&bad.body, "destination-error").starts_with("address "), "{}", bad.body);

    let review =
        browser.post(&path, &[("csrf", &csrf), ("option", "anvil/USDC"), ("destination", DEST), ("amount", "4")]).await;
    assert_eq!(review.status, 200, "{}", review.body);
    assert!(review.body.contains("Confirm the refund") && review.body.contains("96 USDC"));
    let key_field = hidden(&review.body, "idempotency_key");
    let confirm = format!("{path}/confirm");
    let mut fields: Vec<(&str, &str)> = vec![
        ("csrf", &csrf),
        ("chain", "anvil"),
        ("asset", "USDC"),
        ("destination", DEST),
        ("amount", "4"),
        ("reference", ""),
        ("idempotency_key", &key_field),
    ];
    let no_password = browser.post(&confirm, &fields).await;
    assert_eq!(no_password.status, 400);
    assert!(no_password.body.contains("id=\"password-error\""));
    fields.push(("password", PASSWORD));
    let created = browser.post(&confirm, &fields).await;
    assert_eq!(created.status, 303, "{}", created.body);
    let all = payouts_of(&app, merchant.id).await;
    assert_eq!(all.len(), 1);
    let refund = all[0].clone();
    assert_eq!((refund.kind.as_str(), refund.invoice_id), ("refund", Some(invoice)));
    assert_eq!(refund.amount, BaseUnits::from(U256::from(4 * USDC)));

    // Cancel while pending: released, recorded.
    let detail = browser.get(&format!("/dashboard/payouts/{}", refund.id)).await;
    assert!(detail.body.contains("Cancel this refund"));
    let cancelled = browser.post(&format!("/dashboard/payouts/{}/cancel", refund.id), &[("csrf", &csrf)]).await;
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    let detail = browser.get(&format!("/dashboard/payouts/{}", refund.id)).await;
    assert_eq!(text_of(&detail.body, "payout-status"), "cancelled");
    let again = browser.post(&format!("/dashboard/payouts/{}/cancel", refund.id), &[("csrf", &csrf)]).await;
    assert_eq!(again.status, 409, "{}", again.body);
    let (status, balances) = app.get_json(&key, "/api/v1/balances").await;
    assert_eq!(status, 200);
    let usdc = balances["data"].as_array().unwrap().iter().find(|b| b["asset"] == "USDC").unwrap().clone();
    assert_eq!((usdc["available"].as_str(), usdc["reserved"].as_str()), (Some("100"), Some("0")));
    let id = refund.id.to_string();
    let email = "owner@refund.example".to_owned();
    assert_eq!(
        audit_actions(&app, merchant.id).await,
        vec![("refund.create".to_owned(), id.clone(), email.clone()), ("refund.cancel".to_owned(), id, email)]
    );
}

async fn viewers_developers_strangers_and_forged_forms_are_refused(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Guarded Shop", &Scope::ALL).await;
    let (stranger, _) = app.merchant("Other Shop", &Scope::ALL).await;
    fund(&app, merchant.id, "USDC", 100 * USDC, "funding").await;
    let invoice = paid_invoice(&app, &key, merchant.id, 10 * USDC).await;
    let response = app
        .client
        .post(app.url("/api/v1/payouts"))
        .header("x-api-key", &key)
        .json(&json!({"asset": "USDC", "amount": "1", "destination": DEST}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let payout: Value = response.json().await.unwrap();
    let payout_id = payout["id"].as_str().unwrap().to_owned();
    let uuid = Uuid::new_v4().to_string();
    let payout_fields = [
        ("chain", "anvil"),
        ("asset", "USDC"),
        ("destination", DEST),
        ("amount", "1"),
        ("idempotency_key", uuid.as_str()),
        ("password", PASSWORD),
    ];
    let refund_fields = [
        ("chain", "anvil"),
        ("asset", "USDC"),
        ("destination", DEST),
        ("amount", "1"),
        ("idempotency_key", uuid.as_str()),
        ("password", PASSWORD),
    ];
    let writes = [
        ("/dashboard/payouts/new".to_owned(), &payout_fields[..]),
        ("/dashboard/payouts".to_owned(), &payout_fields[..]),
        (format!("/dashboard/payouts/{payout_id}/cancel"), &[][..]),
        (format!("/dashboard/invoices/{invoice}/refund"), &refund_fields[..]),
        (format!("/dashboard/invoices/{invoice}/refund/confirm"), &refund_fields[..]),
    ];
    let before = payouts_of(&app, merchant.id).await.len();

    for (role, email) in [(Role::Viewer, "viewer@guarded.example"), (Role::Developer, "dev@guarded.example")] {
        let mut browser = signed_in(&app, merchant.id, email, role).await;
        // Reading is allowed.
        assert_eq!(browser.get("/dashboard/ledger").await.status, 200);
        assert_eq!(browser.get("/dashboard/payouts").await.status, 200);
        let detail = browser.get(&format!("/dashboard/payouts/{payout_id}")).await;
        assert_eq!(detail.status, 200);
        assert!(!detail.body.contains("Cancel this"), "no cancel button for a {role}");
        assert!(!browser.get("/dashboard/payouts").await.body.contains("New payout"));
        // Every write is refused by the server.
        assert_eq!(browser.get("/dashboard/payouts/new").await.status, 403);
        assert_eq!(browser.get(&format!("/dashboard/invoices/{invoice}/refund")).await.status, 403);
        let csrf = csrf_of(&browser.get("/dashboard/payouts").await.body);
        for (path, fields) in &writes {
            let mut form = vec![("csrf", csrf.as_str())];
            form.extend_from_slice(fields);
            let page = browser.post(path, &form).await;
            assert_eq!(page.status, 403, "{role} POST {path}: {}", page.body);
        }
    }

    // The owner without (or with a wrong) CSRF token: refused, nothing done.
    let mut owner = signed_in(&app, merchant.id, "owner@guarded.example", Role::Owner).await;
    for (path, fields) in &writes {
        assert_eq!(owner.post(path, fields).await.status, 403, "no CSRF: {path}");
        let mut forged = vec![("csrf", "0".repeat(64))];
        forged.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
        let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(owner.post(path, &forged).await.status, 403, "wrong CSRF: {path}");
    }
    let still = payouts_of(&app, merchant.id).await;
    assert_eq!(still.len(), before, "nothing created");
    assert_eq!(still[0].status.as_str(), "pending", "nothing cancelled");
    assert!(audit_actions(&app, merchant.id).await.is_empty());

    // Another merchant's owner: the payout, its cancel and the invoice's refund are not found.
    let mut other = signed_in(&app, stranger.id, "owner@other.example", Role::Owner).await;
    let csrf = csrf_of(&other.get("/dashboard/payouts").await.body);
    assert_eq!(other.get(&format!("/dashboard/payouts/{payout_id}")).await.status, 404);
    assert_eq!(other.post(&format!("/dashboard/payouts/{payout_id}/cancel"), &[("csrf", &csrf)]).await.status, 404);
    assert_eq!(other.get(&format!("/dashboard/invoices/{invoice}/refund")).await.status, 404);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(&refund_fields);
    assert_eq!(other.post(&format!("/dashboard/invoices/{invoice}/refund"), &form).await.status, 404);
    assert_eq!(other.post(&format!("/dashboard/invoices/{invoice}/refund/confirm"), &form).await.status, 404);
    let page = other.get(&format!("/dashboard/ledger?payout_id={payout_id}")).await;
    assert_eq!((page.status, page.body.matches("class=\"entry\"").count()), (200, 0));
    assert!(!other.get("/dashboard/payouts").await.body.contains(&payout_id));
    assert_eq!(payouts_of(&app, merchant.id).await[0].status.as_str(), "pending");
    assert_eq!(other.get("/dashboard/payouts/not-an-id").await.status, 404);
}
