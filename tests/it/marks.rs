//! Manual invoice resolution (issue 21, BTCPay's "mark as settled / mark invalid"), on both
//! backends over real HTTP, with a real anvil chain and watcher where money is involved:
//! `POST /api/v1/invoices/{id}/mark` marks an unpaid or underpaid invoice `paid` or `invalid`
//! with a reason, moves no money (balances and ledger entries are compared before and after),
//! is announced (`invoice.marked_paid` / `invoice.marked_invalid`), is idempotent, refuses every
//! bad input precisely, and a payment that arrives after a mark is still credited exactly once.

use depositd_core::api_key::Scope;
use depositd_core::invoice::{InvoiceMark, InvoiceStatus, MarkStatus};
use depositd_core::ledger::{self, Account, AccountKind};
use depositd_core::money::BaseUnits;
use depositd_core::store::{StoreError, events, invoices};
use depositd_testkit::chain::TestChain;
use depositd_watcher::ChainWatcher;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, assert_error, both_backends, use_test_chain};

both_backends!(
    marking_an_expired_underpaid_invoice_paid_moves_no_money,
    a_payment_after_an_invalid_mark_is_credited_exactly_once,
    every_bad_mark_is_refused_precisely,
    a_mark_and_a_payment_update_never_overwrite_each_other,
);

/// The dev chain of the test configuration (`anvil`).
const CHAIN: u64 = 31337;

async fn mark(app: &TestApp, key: &str, id: &str, body: Value, idempotency_key: Option<&str>) -> reqwest::Response {
    let mut request =
        app.client.post(app.url(&format!("/api/v1/invoices/{id}/mark"))).header("x-api-key", key).json(&body);
    if let Some(k) = idempotency_key {
        request = request.header("idempotency-key", k);
    }
    request.send().await.unwrap()
}

async fn marked(app: &TestApp, key: &str, id: &str, body: Value) -> Value {
    let response = mark(app, key, id, body, None).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Ticks the watcher until it has nothing more to do.
async fn drain(watcher: &mut ChainWatcher) {
    for _ in 0..100 {
        if !watcher.tick().await.unwrap() {
            return;
        }
    }
    panic!("the watcher never caught up");
}

/// The events of `event_type` about invoice `id`, through the events API.
async fn events_of(app: &TestApp, key: &str, event_type: &str, id: &str) -> Vec<Value> {
    let (status, list) = app.get_json(key, &format!("/api/v1/events?type={event_type}&resource_id={id}")).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

/// What the merchant's money looks like through the API: balances and every ledger entry.
async fn money(app: &TestApp, key: &str) -> (Value, Value) {
    let (status, balances) = app.get_json(key, "/api/v1/balances").await;
    assert_eq!(status, 200, "{balances}");
    let (status, entries) = app.get_json(key, "/api/v1/ledger?limit=100").await;
    assert_eq!(status, 200, "{entries}");
    (balances, entries)
}

/// An app on a fresh anvil chain with USDC (2 confirmations) and a watcher for it.
async fn app_on_chain(db: &TestDb) -> (TestChain, TestApp, ChainWatcher) {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut chain_config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 2, &[("USDC", usdc)]);
        chain_config = Some(c.chains[0].clone());
    })
    .await;
    let watcher = app.watcher(&chain_config.unwrap());
    (chain, app, watcher)
}

async fn marking_an_expired_underpaid_invoice_paid_moves_no_money(db: TestDb) {
    let (chain, app, mut watcher) = app_on_chain(&db).await;
    let usdc = chain.tokens[0];
    let (merchant, key) = app.merchant("Marker", &Scope::ALL).await;
    let invoice = app.created_invoice(&key, json!({"amount": "10", "asset": "USDC", "expires_in": 4000})).await;
    let id = invoice["id"].as_str().unwrap().to_owned();
    let invoice_id: Uuid = id.parse().unwrap();
    let path = format!("/api/v1/invoices/{id}");
    assert!(invoice["marked"].is_null(), "{invoice}");

    // 4 of 10 USDC paid and credited, then the invoice expires underpaid.
    chain.pay_token(usdc, invoice["pay"]["address"].as_str().unwrap(), 4_000_000).await;
    chain.mine(1).await;
    drain(&mut watcher).await;
    let expires_at = invoice["expires_at"].as_i64().unwrap() * 1000 + 1000;
    let wait = expires_at - depositd_core::time::now_ms();
    if wait > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(wait as u64 + 50)).await;
    }
    assert_eq!(depositd_api::expiry::expire_once(&app.state).await.unwrap(), 1);
    let (_, expired) = app.get_json(&key, &path).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(expired["payment_flags"], json!(["underpaid"]), "{expired}");
    assert_eq!(expired["amount_paid"], "4");
    let before = money(&app, &key).await;
    assert_eq!(before.1["data"].as_array().unwrap().len(), 3, "pending, credit and fee: {}", before.1);

    // Marked paid with a reason: paid, the flags and the amount paid as the chain paid them, the
    // mark recorded with the key's prefix; and no money moved.
    let reason = "Customer paid the remaining 6 USDC by bank transfer (ref 2026-118)";
    let paid = marked(&app, &key, &id, json!({"status": "paid", "reason": reason})).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["payment_flags"], json!(["underpaid"]), "{paid}");
    assert_eq!((paid["amount_paid"].as_str(), paid["amount_due"].as_str()), (Some("4"), Some("6")));
    assert_eq!(paid["finished_at"], expired["finished_at"], "finished when it expired");
    let mark_seen = &paid["marked"];
    assert_eq!(mark_seen["status"], "paid");
    assert_eq!(mark_seen["reason"], reason);
    assert!(key.starts_with(mark_seen["by"].as_str().unwrap()), "{mark_seen}");
    assert!(mark_seen["api_key_id"].as_str().unwrap().parse::<Uuid>().is_ok(), "{mark_seen}");
    assert!(mark_seen["marked_at"].as_i64().unwrap() >= expired["finished_at"].as_i64().unwrap());
    assert_eq!(app.get_json(&key, &path).await.1, paid, "the stored invoice is the one answered");
    assert_eq!(money(&app, &key).await, before, "a mark moves no money");
    let mut conn = app.store.conn().await.unwrap();
    let available = Account::merchant(merchant.id, AccountKind::Available, CHAIN, "USDC");
    assert_eq!(ledger::balance(&mut conn, &available).await.unwrap(), BaseUnits::from(3_960_000u64));
    assert!(ledger::verify::verify(&mut conn).await.unwrap().is_ok());
    drop(conn);

    // Announced once, with the invoice as it now is.
    let announced = events_of(&app, &key, "invoice.marked_paid", &id).await;
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0]["data"]["status"], "paid");
    assert_eq!(announced[0]["data"]["marked"]["reason"], reason);

    // The same mark again (another reason, an Idempotency-Key or none): 200, nothing changes,
    // nothing is announced; the first reason stays.
    let again = marked(&app, &key, &id, json!({"status": "paid", "reason": "again"})).await;
    assert_eq!(again["marked"], paid["marked"]);
    let first = mark(&app, &key, &id, json!({"status": "paid", "reason": "retry"}), Some("mark-1")).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let replay = mark(&app, &key, &id, json!({"reason": "retry", "status": "paid"}), Some("mark-1")).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
    assert_eq!(events_of(&app, &key, "invoice.marked_paid", &id).await.len(), 1);

    // Expiry leaves a marked invoice alone.
    assert_eq!(depositd_api::expiry::expire_once(&app.state).await.unwrap(), 0);

    // The merchant corrects the mark: invalid now, announced, still no money moved.
    let invalid = marked(&app, &key, &id, json!({"status": "invalid", "reason": "the transfer bounced"})).await;
    assert_eq!((invalid["status"].as_str(), invalid["marked"]["status"].as_str()), (Some("invalid"), Some("invalid")));
    assert_eq!(invalid["marked"]["reason"], "the transfer bounced");
    assert_eq!(events_of(&app, &key, "invoice.marked_invalid", &id).await.len(), 1);
    assert_eq!(money(&app, &key).await, before);

    // Seed 003 and 004 words for a marked-invalid invoice.
    let (_, seed003) = app.get_json(&key, &format!("/api/v1/invoice-status/{id}")).await;
    assert_eq!(seed003["status"], "cancelled", "{seed003}");
    let (_, seed004) = app.get_json(&key, &format!("/api/v1/hosted-payments/{id}")).await;
    assert_eq!(seed004["status"], "failed", "{seed004}");
    // Listing by the new status finds it.
    let (_, listed) = app.get_json(&key, "/api/v1/invoices?status=invalid").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        events::types_for(&mut conn, invoice_id).await.unwrap(),
        [
            "invoice.created",
            "invoice.processing",
            "invoice.underpaid",
            "invoice.expired",
            "invoice.marked_paid",
            "invoice.marked_invalid"
        ]
    );
}

async fn a_payment_after_an_invalid_mark_is_credited_exactly_once(db: TestDb) {
    let (chain, app, mut watcher) = app_on_chain(&db).await;
    let usdc = chain.tokens[0];
    let (merchant, key) = app.merchant("Voider", &Scope::ALL).await;
    let invoice = app.created_invoice(&key, json!({"amount": "20", "asset": "USDC"})).await;
    let id = invoice["id"].as_str().unwrap().to_owned();
    let invoice_id: Uuid = id.parse().unwrap();
    let address = invoice["pay"]["address"].as_str().unwrap().to_owned();

    // A pending invoice marked invalid: no money, finished, announced; the payer's session says so.
    let invalid = marked(&app, &key, &id, json!({"status": "invalid", "reason": "order withdrawn"})).await;
    assert_eq!(invalid["status"], "invalid", "{invalid}");
    assert!(invalid["finished_at"].is_i64());
    assert_eq!(invalid["amount_paid"], "0");
    let (status, balances) = app.get_json(&key, "/api/v1/balances").await;
    assert_eq!(status, 200);
    assert!(
        balances["data"].as_array().unwrap().iter().all(|b| b["available"] == "0" || b["asset"] != "USDC"),
        "{balances}"
    );
    let session = app
        .client
        .get(app.url(&format!("/api/v1/payments/{id}")))
        .header("x-session-token", invoice["session_token"].as_str().unwrap())
        .header("x-signature", invoice["signature"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    assert_eq!(session.json::<Value>().await.unwrap()["status"], "invalid");
    let page = app.client.get(app.url(&format!("/checkout/{id}"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("This payment request is no longer valid."), "{page}");

    // The payer pays anyway: credited once to the ledger, the invoice stays invalid (the
    // merchant's decision) and shows what was paid.
    chain.pay_token(usdc, address.as_str(), 20_000_000).await;
    chain.mine(1).await;
    drain(&mut watcher).await;
    chain.mine(3).await;
    drain(&mut watcher).await;
    let (_, seen) = app.get_json(&key, &format!("/api/v1/invoices/{id}")).await;
    assert_eq!(seen["status"], "invalid", "{seen}");
    assert_eq!(seen["marked"], invalid["marked"]);
    assert_eq!((seen["amount_paid"].as_str(), seen["amount_due"].as_str()), (Some("20"), Some("0")));
    assert_eq!(seen["payments"].as_array().unwrap().len(), 1);
    assert_eq!(seen["payments"][0]["state"], "confirmed");
    let mut conn = app.store.conn().await.unwrap();
    let available = Account::merchant(merchant.id, AccountKind::Available, CHAIN, "USDC");
    assert_eq!(ledger::balance(&mut conn, &available).await.unwrap(), BaseUnits::from(19_800_000u64), "once, less 1%");
    let report = ledger::verify::verify(&mut conn).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let (_, entries) = app.get_json(&key, &format!("/api/v1/ledger?invoice_id={id}")).await;
    let types: Vec<&str> = entries["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "deposit_credit").count(), 1, "{entries}");
    assert_eq!(
        events::types_for(&mut conn, invoice_id).await.unwrap(),
        ["invoice.created", "invoice.marked_invalid"],
        "nothing announces it paid"
    );
    drop(conn);

    // A marked-invalid invoice may be marked paid; an invoice the chain paid may not be marked.
    let paid_by_chain = app.created_invoice(&key, json!({"amount": "5", "asset": "USDC"})).await;
    let paid_id = paid_by_chain["id"].as_str().unwrap().to_owned();
    // Marked while its payment confirms: the payment is credited once, the mark stands.
    chain.pay_token(usdc, paid_by_chain["pay"]["address"].as_str().unwrap(), 5_000_000).await;
    drain(&mut watcher).await;
    let (_, processing) = app.get_json(&key, &format!("/api/v1/invoices/{paid_id}")).await;
    assert_eq!(processing["status"], "processing", "{processing}");
    let marked_paid = marked(&app, &key, &paid_id, json!({"status": "paid", "reason": "known customer"})).await;
    assert_eq!(marked_paid["status"], "paid");
    chain.mine(2).await;
    drain(&mut watcher).await;
    let (_, after) = app.get_json(&key, &format!("/api/v1/invoices/{paid_id}")).await;
    assert_eq!((after["status"].as_str(), after["amount_paid"].as_str()), (Some("paid"), Some("5")), "{after}");
    assert_eq!(after["marked"], marked_paid["marked"]);
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(ledger::balance(&mut conn, &available).await.unwrap(), BaseUnits::from(24_750_000u64));
    drop(conn);

    let really_paid = app.created_invoice(&key, json!({"amount": "3", "asset": "USDC"})).await;
    let really_id = really_paid["id"].as_str().unwrap().to_owned();
    chain.pay_token(usdc, really_paid["pay"]["address"].as_str().unwrap(), 3_000_000).await;
    chain.mine(1).await;
    drain(&mut watcher).await;
    assert_eq!(app.get_json(&key, &format!("/api/v1/invoices/{really_id}")).await.1["status"], "paid");
    for status in ["paid", "invalid"] {
        let refused = mark(&app, &key, &really_id, json!({"status": status, "reason": "try"}), None).await;
        let body = assert_error(refused, 409, "invoice_not_markable", None).await;
        assert!(body["error"]["message"].as_str().unwrap().contains("paid"), "{body}");
    }
    let back = marked(&app, &key, &id, json!({"status": "paid", "reason": "kept the goods after all"})).await;
    assert_eq!((back["status"].as_str(), back["amount_paid"].as_str()), (Some("paid"), Some("20")));
    // Paid in full by the chain now: never invalid again, whatever marks it had.
    let again = mark(&app, &key, &id, json!({"status": "invalid", "reason": "changed my mind"}), None).await;
    assert_error(again, 409, "invoice_not_markable", None).await;
}

async fn every_bad_mark_is_refused_precisely(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Strict", &Scope::ALL).await;
    let invoice = app.created_invoice(&key, json!({"amount": "7"})).await;
    let id = invoice["id"].as_str().unwrap().to_owned();
    let ok = json!({"status": "invalid", "reason": "duplicate order"});

    let bad = |body: Value| mark(&app, &key, &id, body, None);
    assert_error(bad(json!({"status": "paid"})).await, 400, "parameter_missing", Some("reason")).await;
    assert_error(bad(json!({"reason": "x"})).await, 400, "parameter_missing", Some("status")).await;
    assert_error(bad(json!({"status": "settled", "reason": "x"})).await, 400, "invalid_parameter", Some("status"))
        .await;
    assert_error(bad(json!({"status": "paid", "reason": ""})).await, 400, "invalid_parameter", Some("reason")).await;
    assert_error(bad(json!({"status": "paid", "reason": "   "})).await, 400, "invalid_parameter", Some("reason")).await;
    assert_error(
        bad(json!({"status": "paid", "reason": "r".repeat(501)})).await,
        400,
        "invalid_parameter",
        Some("reason"),
    )
    .await;
    assert_error(bad(json!({"status": "paid", "reason": "a\u{7}b"})).await, 400, "invalid_parameter", Some("reason"))
        .await;
    assert_error(bad(json!({"status": "paid", "reason": 5})).await, 400, "invalid_parameter", Some("reason")).await;
    assert_error(
        bad(json!({"status": "paid", "reason": "x", "amount": "7"})).await,
        400,
        "unknown_parameter",
        Some("amount"),
    )
    .await;
    let not_an_id = mark(&app, &key, "not-a-uuid", ok.clone(), None).await;
    assert_eq!(not_an_id.status(), 400);
    let nobody = mark(&app, &key, &Uuid::now_v7().to_string(), ok.clone(), None).await;
    assert_error(nobody, 404, "resource_missing", None).await;

    // Another merchant's invoice is not found; a key without invoices:write is a 403.
    let (_, other) = app.merchant("Other", &Scope::ALL).await;
    assert_error(mark(&app, &other, &id, ok.clone(), None).await, 404, "resource_missing", None).await;
    let (_, reader) = app.merchant("Reader", &[Scope::InvoicesRead]).await;
    assert_error(mark(&app, &reader, &id, ok.clone(), None).await, 403, "insufficient_scope", None).await;
    let anonymous = app.client.post(app.url(&format!("/api/v1/invoices/{id}/mark"))).json(&ok).send().await.unwrap();
    assert_error(anonymous, 401, "missing_api_key", None).await;

    // An Idempotency-Key used with another body is a conflict.
    assert_eq!(mark(&app, &key, &id, ok.clone(), Some("k1")).await.status(), 200);
    let other_body = json!({"status": "paid", "reason": "duplicate order"});
    assert_error(
        mark(&app, &key, &id, other_body, Some("k1")).await,
        409,
        "idempotency_conflict",
        Some("Idempotency-Key"),
    )
    .await;

    // Cancelled: not markable, with a message saying why.
    let cancelled = app.created_invoice(&key, json!({"amount": "7"})).await;
    let cancelled_id = cancelled["id"].as_str().unwrap();
    let response =
        app.client.post(app.url(&format!("/api/v1/invoices/{cancelled_id}/cancel"))).header("x-api-key", &key).send();
    assert_eq!(response.await.unwrap().status(), 200);
    let refused = mark(&app, &key, cancelled_id, ok.clone(), None).await;
    let body = assert_error(refused, 409, "invoice_not_markable", None).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("cancelled"), "{body}");

    // A marked-invalid invoice cannot be cancelled, answers nothing to the payer's questions.
    let cancel = app.client.post(app.url(&format!("/api/v1/invoices/{id}/cancel"))).header("x-api-key", &key).send();
    assert_error(cancel.await.unwrap(), 409, "invoice_not_cancellable", None).await;
    let mut conn = app.store.conn().await.unwrap();
    let stored = invoices::get_any(&mut conn, id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.mark.as_ref().map(|m| m.reason.as_str()), Some("duplicate order"));
}

/// The compare-and-set both ways: a mark written on a stale read (a deposit confirmed since) is
/// not applied, and a payment update on a read from before a mark is refused (the watcher then
/// redoes its step on the marked invoice), so neither change is lost.
async fn a_mark_and_a_payment_update_never_overwrite_each_other(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Racer", &Scope::ALL).await;
    let created = app.created_invoice(&key, json!({"amount": "5"})).await;
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let mut conn = app.store.conn().await.unwrap();

    // The mark read the invoice pending; a payment was then recorded; the mark's write is refused.
    let read = invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap();
    let mut paid = read.clone();
    paid.status = InvoiceStatus::Processing;
    invoices::update_payment_state(&mut conn, &read, &paid).await.unwrap();
    let mut marked = read.clone();
    marked.status = InvoiceStatus::Invalid;
    marked.mark = Some(InvoiceMark {
        status: MarkStatus::Invalid,
        reason: "stale".into(),
        marked_at: 1,
        by_key_id: Uuid::now_v7(),
        by: "dk_test_00000000".into(),
    });
    assert!(!invoices::set_mark(&mut conn, &read, &marked).await.unwrap(), "a stale mark is not written");
    let now = invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap();
    assert_eq!((now.status, now.mark), (InvoiceStatus::Processing, None));

    // The watcher read it processing; the merchant then marked it (through the API); the
    // watcher's write from its stale read is refused and the mark stands.
    let watcher_read = invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap();
    let response = mark(&app, &key, &id.to_string(), json!({"status": "paid", "reason": "phoned in"}), None).await;
    assert_eq!(response.status(), 200);
    let mut stale = watcher_read.clone();
    stale.status = InvoiceStatus::Pending;
    let error = invoices::update_payment_state(&mut conn, &watcher_read, &stale).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    let now = invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap();
    assert_eq!((now.status, now.mark.map(|m| m.reason)), (InvoiceStatus::Paid, Some("phoned in".to_owned())));
}
