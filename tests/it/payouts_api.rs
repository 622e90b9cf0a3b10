//! The payout and refund API over real HTTP, on both backends: the reservation (amount plus the
//! network fee reserve) written with the payout and its chain intent, insufficient funds, fee
//! estimates, idempotency, every validation rule, get/list, cancel, refund bounds and scopes.

use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::chain_tx::{Attempt, Purpose, TxState};
use depositd_core::gas;
use depositd_core::ledger::verify::verify;
use depositd_core::ledger::{self, Account, AccountKind, EntryType, Leg, NewEntry, Refs};
use depositd_core::money::BaseUnits;
use depositd_core::store::api_keys;
use depositd_core::store::chain_txs;
use depositd_core::store::invoices;
use depositd_core::store::{events, payouts};
use depositd_core::time::now_ms;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TEST_USDC, TestApp, TestDb, assert_error, both_backends};

both_backends!(
    a_payout_reserves_its_amount_and_network_fee_with_an_intent,
    insufficient_funds_reserve_nothing,
    idempotency_replays_and_conflicts,
    every_bad_input_is_a_precise_400,
    a_native_payout_needs_a_fresh_fee_estimate,
    get_list_filters_pagination_and_404,
    cancel_releases_the_reservation_once_and_only_before_signing,
    refunds_are_bounded_by_what_was_paid,
    concurrent_refunds_never_exceed_the_paid_amount,
    scopes_are_enforced,
);

const ALL: &[Scope] = &Scope::ALL;
/// The dev chain of the test configuration (`anvil`).
const CHAIN: u64 = 31337;
/// EIP-55's own example address.
const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const ETH: u128 = 1_000_000_000_000_000_000;
const USDC: u128 = 1_000_000;
const GWEI: u128 = 1_000_000_000;

/// Credits `base_units` of `asset` to the merchant's available balance with a real ledger entry
/// (custody -> available), as a confirmed deposit would.
async fn fund(app: &TestApp, merchant_id: Uuid, asset: &str, base_units: u128) {
    let amount = BaseUnits::from(alloy::primitives::U256::from(base_units));
    let mut tx = app.store.begin().await.unwrap();
    ledger::post(
        &mut tx,
        NewEntry {
            entry_type: EntryType::DepositCredit,
            idempotency_key: format!("test_funding:{}", Uuid::now_v7()),
            refs: Refs { merchant_id: Some(merchant_id), ..Refs::default() },
            reverses: None,
            memo: Some("test funding".into()),
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

/// Stores a fresh fee estimate (1 gwei base fee, 1 gwei tip); returns what a native payout reserves.
async fn fee_estimate(app: &TestApp) -> u128 {
    let mut conn = app.store.conn().await.unwrap();
    chain_txs::store_fee_estimate(&mut conn, CHAIN, GWEI, GWEI).await.unwrap();
    let reserve = gas::native_payout_fee_reserve(GWEI, GWEI, &app.state.config.settings.settler);
    reserve.to_string().parse().unwrap()
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value, idempotency_key: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).header("x-api-key", key).json(&body);
    if let Some(k) = idempotency_key {
        request = request.header("idempotency-key", k);
    }
    request.send().await.unwrap()
}

async fn payout(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    post(app, key, "/api/v1/payouts", body, None).await
}

async fn created(response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// `(available, reserved)` of an asset on the dev chain, from `GET /api/v1/balances`.
async fn balance(app: &TestApp, key: &str, asset: &str) -> (u128, u128) {
    let (status, body) = app.get_json(key, "/api/v1/balances").await;
    assert_eq!(status, 200, "{body}");
    let row = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["chain_id"] == CHAIN && b["asset"] == asset)
        .unwrap_or_else(|| panic!("no {asset} balance in {body}"))
        .clone();
    let units = |field: &str| row[field].as_str().unwrap().parse::<u128>().unwrap();
    (units("available_base_units"), units("reserved_base_units"))
}

async fn assert_ledger_consistent(app: &TestApp) {
    let mut conn = app.store.conn().await.unwrap();
    let report = verify(&mut conn).await.unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

fn id_of(resource: &Value) -> Uuid {
    resource["id"].as_str().unwrap().parse().unwrap()
}

/// A JSON Schema validator for one of the OpenAPI document's components.
fn assert_documented(document: &Value, component: &str, instance: &Value) {
    let defs = document["components"]["schemas"].to_string().replace("#/components/schemas/", "#/$defs/");
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": serde_json::from_str::<Value>(&defs).unwrap(),
        "$ref": format!("#/$defs/{component}"),
    });
    let validator = jsonschema::validator_for(&schema).expect("valid JSON Schema");
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{component} does not match the OpenAPI document: {errors:#?}\n{instance:#}");
}

async fn a_payout_reserves_its_amount_and_network_fee_with_an_intent(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Payer", ALL).await;
    fund(&app, merchant.id, "ETH", ETH).await;
    fund(&app, merchant.id, "USDC", 100 * USDC).await;
    let reserve = fee_estimate(&app).await;
    // 1 gwei base fee + 1 gwei tip: first fee 3 gwei, budget 3x = 9 gwei, times 21,000 gas.
    assert_eq!(reserve, 9 * GWEI * 21_000);

    // A native payout: the lowercase destination comes back checksummed.
    let response = payout(
        &app,
        &key,
        json!({"chain": "anvil", "asset": "ETH", "amount": "0.1", "destination": DEST.to_lowercase(),
               "external_id": "po-1", "metadata": {"order": "42", "n": 1}}),
    )
    .await;
    let eth = created(response).await;
    assert_eq!(eth["object"], "payout");
    assert_eq!(eth["status"], "pending");
    assert_eq!(eth["chain"], "anvil");
    assert_eq!(eth["chain_id"], CHAIN);
    assert_eq!(eth["asset"], "ETH");
    assert_eq!(eth["amount"], "0.1");
    assert_eq!(eth["amount_base_units"], (ETH / 10).to_string());
    assert_eq!(eth["network_fee_reserve_base_units"], reserve.to_string());
    assert_eq!(eth["network_fee_base_units"], Value::Null);
    assert_eq!(eth["destination"], DEST);
    assert_eq!(eth["external_id"], "po-1");
    assert_eq!(eth["metadata"], json!({"order": "42", "n": 1}));
    assert_eq!(eth["invoice_id"], Value::Null);
    assert_eq!(eth["tx_hash"], Value::Null);
    assert_eq!(balance(&app, &key, "ETH").await, (ETH - ETH / 10 - reserve, ETH / 10 + reserve));

    // The intent the settler will send, written with the payout.
    let mut conn = app.store.conn().await.unwrap();
    let stored = payouts::get(&mut conn, merchant.id, id_of(&eth)).await.unwrap().unwrap();
    let intent = chain_txs::get(&mut conn, stored.transaction_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(intent.state, TxState::Intent);
    assert_eq!(intent.purpose, Purpose::Payout);
    assert_eq!(intent.chain_id, CHAIN);
    assert_eq!(intent.signer_address, app.state.wallet.treasury_address().to_checksum(None));
    assert_eq!(intent.to_address, DEST);
    assert_eq!(intent.asset, "ETH");
    assert_eq!(intent.value.to_string(), (ETH / 10).to_string());
    assert_eq!(intent.token_address, None);
    assert_eq!(intent.max_gas_cost.to_string(), reserve.to_string());
    assert_eq!((intent.payout_id, intent.merchant_id, intent.invoice_id), (Some(stored.id), Some(merchant.id), None));
    assert_eq!(events::types_for(&mut conn, stored.id).await.unwrap(), ["payout.created"]);

    // A token payout reserves no network fee (the operator pays its gas); the asset is required,
    // the chain defaults.
    let usdc = created(payout(&app, &key, json!({"asset": "USDC", "amount": "12.5", "destination": DEST})).await).await;
    assert_eq!(usdc["amount"], "12.5");
    assert_eq!(usdc["amount_base_units"], (12_500_000).to_string());
    assert_eq!(usdc["network_fee_reserve_base_units"], "0");
    assert_eq!(balance(&app, &key, "USDC").await, (100 * USDC - 12_500_000, 12_500_000));
    let stored = payouts::get(&mut conn, merchant.id, id_of(&usdc)).await.unwrap().unwrap();
    let intent = chain_txs::get(&mut conn, stored.transaction_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(intent.token_address.as_deref(), Some(TEST_USDC));
    assert_eq!(intent.max_gas_cost, BaseUnits::ZERO);
    assert_eq!(intent.to_address, DEST);
    drop(conn);
    assert_ledger_consistent(&app).await;

    // The OpenAPI document describes these endpoints and these responses.
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in
        ["/api/v1/payouts", "/api/v1/payouts/{id}", "/api/v1/payouts/{id}/cancel", "/api/v1/invoices/{id}/refunds"]
    {
        assert!(document["paths"].get(path).is_some(), "{path} is documented");
    }
    assert_documented(&document, "PayoutResource", &eth);
    assert_documented(&document, "PayoutResource", &usdc);
    assert_documented(&document, "CreatePayout", &json!({"asset": "USDC", "amount": "1", "destination": DEST}));
    let (_, list) = app.get_json(&key, "/api/v1/payouts").await;
    assert_documented(&document, "PayoutList", &list);
}

async fn insufficient_funds_reserve_nothing(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Short", ALL).await;
    fund(&app, merchant.id, "USDC", 5 * USDC).await;
    let reserve = fee_estimate(&app).await;

    let response = payout(&app, &key, json!({"asset": "USDC", "amount": "5.000001", "destination": DEST})).await;
    let body = assert_error(response, 400, "insufficient_funds", Some("amount")).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("5 USDC is available") && message.contains("needs 5.000001 USDC"), "{message}");
    assert_eq!(balance(&app, &key, "USDC").await, (5 * USDC, 0));

    // A native payout of the whole balance cannot also cover its network fee reserve.
    fund(&app, merchant.id, "ETH", ETH / 10).await;
    let response = payout(&app, &key, json!({"asset": "ETH", "amount": "0.1", "destination": DEST})).await;
    let body = assert_error(response, 400, "insufficient_funds", Some("amount")).await;
    let message = body["error"]["message"].as_str().unwrap();
    let needed = BaseUnits::from(alloy::primitives::U256::from(ETH / 10 + reserve)).to_display(18);
    assert!(message.contains("0.1 ETH is available") && message.contains(&format!("needs {needed} ETH")), "{message}");
    assert!(message.contains("network fee reserve of 0.000189 ETH"), "{message}");
    assert_eq!(balance(&app, &key, "ETH").await, (ETH / 10, 0));
    // An absurd native amount (2^256 - 1 base units) overflows with its fee reserve: that is
    // insufficient funds too, not an internal error.
    let absurd = BaseUnits::from(alloy::primitives::U256::MAX).to_display(18);
    let response = payout(&app, &key, json!({"asset": "ETH", "amount": absurd, "destination": DEST})).await;
    let body = assert_error(response, 400, "insufficient_funds", Some("amount")).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("insufficient available balance: 0.1 ETH is available"), "{message}");
    assert_eq!(balance(&app, &key, "ETH").await, (ETH / 10, 0));

    // Nothing was written: no payout, no intent, no event.
    let (_, list) = app.get_json(&key, "/api/v1/payouts").await;
    assert_eq!(list["data"], json!([]));
    let mut conn = app.store.conn().await.unwrap();
    assert!(chain_txs::open(&mut conn, CHAIN).await.unwrap().is_empty());
    drop(conn);

    // What the balance covers goes through.
    let fits = created(payout(&app, &key, json!({"asset": "USDC", "amount": "5", "destination": DEST})).await).await;
    assert_eq!(fits["status"], "pending");
    assert_eq!(balance(&app, &key, "USDC").await, (0, 5 * USDC));
    assert_ledger_consistent(&app).await;
}

async fn idempotency_replays_and_conflicts(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Retry", ALL).await;
    fund(&app, merchant.id, "USDC", 100 * USDC).await;
    let body = json!({"asset": "USDC", "amount": "10", "destination": DEST});

    let first = post(&app, &key, "/api/v1/payouts", body.clone(), Some("payout-key-1")).await;
    let first = created(first).await;
    let replay = post(&app, &key, "/api/v1/payouts", body.clone(), Some("payout-key-1")).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay, first);
    let (_, list) = app.get_json(&key, "/api/v1/payouts").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(balance(&app, &key, "USDC").await, (90 * USDC, 10 * USDC));

    let other = json!({"asset": "USDC", "amount": "11", "destination": DEST});
    let conflict = post(&app, &key, "/api/v1/payouts", other, Some("payout-key-1")).await;
    assert_error(conflict, 409, "idempotency_conflict", Some("Idempotency-Key")).await;

    // A refused request releases its key: the corrected retry with the same key proceeds.
    let bad = json!({"asset": "USDC", "amount": "1000", "destination": DEST});
    let refused = post(&app, &key, "/api/v1/payouts", bad, Some("payout-key-2")).await;
    assert_error(refused, 400, "insufficient_funds", Some("amount")).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let bad_again = json!({"asset": "USDC", "amount": "1000", "destination": DEST});
    let refused = post(&app, &key, "/api/v1/payouts", bad_again, Some("payout-key-2")).await;
    assert_error(refused, 400, "insufficient_funds", Some("amount")).await;

    // external_id is unique per merchant.
    let with_ref = json!({"asset": "USDC", "amount": "1", "destination": DEST, "external_id": "ref-1"});
    created(payout(&app, &key, with_ref.clone()).await).await;
    assert_error(payout(&app, &key, with_ref).await, 409, "external_id_conflict", Some("external_id")).await;
    assert_eq!(balance(&app, &key, "USDC").await, (89 * USDC, 11 * USDC));
    assert_ledger_consistent(&app).await;
}

async fn every_bad_input_is_a_precise_400(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Strict", ALL).await;
    fund(&app, merchant.id, "USDC", 100 * USDC).await;
    let base = json!({"asset": "USDC", "amount": "1", "destination": DEST});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (
            with("destination", json!("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")),
            "invalid_address",
            Some("destination"),
        ),
        (
            with("destination", json!("0x0000000000000000000000000000000000000000")),
            "invalid_address",
            Some("destination"),
        ),
        (
            with("destination", json!("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")),
            "invalid_address",
            Some("destination"),
        ),
        (with("destination", json!("0x1234")), "invalid_address", Some("destination")),
        (with("amount", json!("1.0000001")), "invalid_amount", Some("amount")),
        (with("amount", json!("-1")), "invalid_amount", Some("amount")),
        (with("amount", json!("0")), "amount_out_of_range", Some("amount")),
        (with("amount", json!("0.000000")), "amount_out_of_range", Some("amount")),
        (with("amount", json!(1.5)), "invalid_amount", Some("amount")),
        (with("amount", json!("1e3")), "invalid_amount", Some("amount")),
        (with("amount", json!("1,5")), "invalid_amount", Some("amount")),
        (with("amount", json!("")), "invalid_amount", Some("amount")),
        (with("asset", json!("DOGE")), "unsupported_asset", Some("asset")),
        (with("chain", json!("mars")), "unsupported_chain", Some("chain")),
        (with("external_id", json!("x".repeat(129))), "invalid_parameter", Some("external_id")),
        (with("metadata", json!(["not", "an", "object"])), "invalid_metadata", Some("metadata")),
        (with("metadata", json!({"nested": {"no": 1}})), "invalid_metadata", Some("metadata")),
        (with("fee", json!("0")), "unknown_parameter", Some("fee")),
        (without("destination"), "parameter_missing", Some("destination")),
        (without("asset"), "parameter_missing", Some("asset")),
        (without("amount"), "parameter_missing", Some("amount")),
        (with("destination", json!(42)), "invalid_parameter", Some("destination")),
    ];
    for (body, code, param) in cases {
        let response = payout(&app, &key, body.clone()).await;
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{body} -> {error}");
        assert_eq!(error["error"]["code"], code, "{body} -> {error}");
        assert_eq!(error["error"]["param"].as_str(), param, "{body} -> {error}");
    }
    // ETH has 18 decimals, USDC 6: the limit is the asset's.
    let eth = json!({"asset": "ETH", "amount": "0.0000000000000000001", "destination": DEST});
    assert_error(payout(&app, &key, eth).await, 400, "invalid_amount", Some("amount")).await;

    // Bodies that are not a JSON object.
    let raw = app
        .client
        .post(app.url("/api/v1/payouts"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(raw, 400, "invalid_json", None).await;
    assert_error(payout(&app, &key, json!([1])).await, 400, "invalid_json", None).await;

    // Nothing was reserved by any of them.
    assert_eq!(balance(&app, &key, "USDC").await, (100 * USDC, 0));
    let (_, list) = app.get_json(&key, "/api/v1/payouts").await;
    assert_eq!(list["data"], json!([]));
}

async fn a_native_payout_needs_a_fresh_fee_estimate(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Gas", ALL).await;
    fund(&app, merchant.id, "ETH", ETH).await;
    fund(&app, merchant.id, "USDC", 10 * USDC).await;
    let eth = json!({"asset": "ETH", "amount": "0.5", "destination": DEST});

    // No estimate yet.
    assert_error(payout(&app, &key, eth.clone()).await, 503, "fee_estimate_unavailable", None).await;
    // A token payout needs none.
    created(payout(&app, &key, json!({"asset": "USDC", "amount": "1", "destination": DEST})).await).await;

    // A stale one (older than settler.fee_estimate_max_age_secs) is refused too.
    fee_estimate(&app).await;
    let max_age_ms = app.state.config.settings.settler.fee_estimate_max_age_secs as i64 * 1000;
    let mut conn = app.store.conn().await.unwrap();
    sqlx::query("UPDATE chain_fee_estimates SET updated_at = $1 WHERE chain_id = $2")
        .bind(now_ms() - max_age_ms - 1_000)
        .bind(CHAIN as i64)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert_error(payout(&app, &key, eth.clone()).await, 503, "fee_estimate_unavailable", None).await;
    assert_eq!(balance(&app, &key, "ETH").await, (ETH, 0));

    // A fresh one: accepted.
    let reserve = fee_estimate(&app).await;
    let done = created(payout(&app, &key, eth).await).await;
    assert_eq!(done["network_fee_reserve_base_units"], reserve.to_string());
    assert_eq!(balance(&app, &key, "ETH").await, (ETH / 2 - reserve, ETH / 2 + reserve));
}

async fn get_list_filters_pagination_and_404(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Lister", ALL).await;
    let (other_merchant, other_key) = app.merchant("Other", ALL).await;
    fund(&app, merchant.id, "USDC", 100 * USDC).await;
    fund(&app, other_merchant.id, "USDC", 100 * USDC).await;
    let mut ids = Vec::new();
    for amount in ["1", "2", "3"] {
        let p =
            created(payout(&app, &key, json!({"asset": "USDC", "amount": amount, "destination": DEST})).await).await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    let foreign =
        created(payout(&app, &other_key, json!({"asset": "USDC", "amount": "1", "destination": DEST})).await).await;

    let (status, one) = app.get_json(&key, &format!("/api/v1/payouts/{}", ids[1])).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!((one["id"].as_str(), one["amount"].as_str()), (Some(ids[1].as_str()), Some("2")));

    // Newest first, paginated.
    let (_, page) = app.get_json(&key, "/api/v1/payouts?limit=2").await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    let got: Vec<&str> = page["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let (_, rest) = app.get_json(&key, &format!("/api/v1/payouts?limit=2&starting_after={}", ids[1])).await;
    assert_eq!(rest["has_more"], false);
    let got: Vec<&str> = rest["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[0].as_str()]);

    // Filters.
    let cancel = post(&app, &key, &format!("/api/v1/payouts/{}/cancel", ids[0]), json!({}), None).await;
    assert_eq!(cancel.status(), 200);
    let (_, cancelled) = app.get_json(&key, "/api/v1/payouts?status=cancelled").await;
    assert_eq!(cancelled["data"].as_array().unwrap().len(), 1);
    assert_eq!(cancelled["data"][0]["id"], ids[0].as_str());
    let (_, pending) = app.get_json(&key, "/api/v1/payouts?status=pending").await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 2);
    let (_, none) = app.get_json(&key, &format!("/api/v1/payouts?invoice_id={}", Uuid::now_v7())).await;
    assert_eq!(none["data"], json!([]));

    // Bad queries.
    for (query, param) in [
        ("status=lost", "status"),
        ("invoice_id=nope", "invoice_id"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("starting_after=x", "starting_after"),
    ] {
        let response = app.client.get(app.url(&format!("/api/v1/payouts?{query}"))).header("x-api-key", &key);
        assert_error(response.send().await.unwrap(), 400, "invalid_parameter", Some(param)).await;
    }
    let response = app.client.get(app.url("/api/v1/payouts?color=red")).header("x-api-key", &key);
    assert_error(response.send().await.unwrap(), 400, "unknown_parameter", Some("color")).await;

    // Another merchant's payout, an unknown one, a malformed id.
    let get = |path: String| app.client.get(app.url(&path)).header("x-api-key", &key).send();
    assert_error(
        get(format!("/api/v1/payouts/{}", foreign["id"].as_str().unwrap())).await.unwrap(),
        404,
        "resource_missing",
        None,
    )
    .await;
    assert_error(get(format!("/api/v1/payouts/{}", Uuid::now_v7())).await.unwrap(), 404, "resource_missing", None)
        .await;
    assert_error(get("/api/v1/payouts/not-a-uuid".into()).await.unwrap(), 400, "invalid_parameter", Some("id")).await;
    let foreign_cancel =
        post(&app, &key, &format!("/api/v1/payouts/{}/cancel", foreign["id"].as_str().unwrap()), json!({}), None).await;
    assert_error(foreign_cancel, 404, "resource_missing", None).await;
    let (_, theirs) = app.get_json(&other_key, "/api/v1/payouts").await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
}

async fn cancel_releases_the_reservation_once_and_only_before_signing(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Canceller", ALL).await;
    fund(&app, merchant.id, "ETH", ETH).await;
    let reserve = fee_estimate(&app).await;
    let body = json!({"asset": "ETH", "amount": "0.25", "destination": DEST});
    let p = created(payout(&app, &key, body.clone()).await).await;
    assert_eq!(balance(&app, &key, "ETH").await, (ETH - ETH / 4 - reserve, ETH / 4 + reserve));

    let path = format!("/api/v1/payouts/{}/cancel", p["id"].as_str().unwrap());
    let response = post(&app, &key, &path, json!({}), None).await;
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["failure_reason"], "cancelled by the merchant");
    assert_eq!(balance(&app, &key, "ETH").await, (ETH, 0));
    let mut conn = app.store.conn().await.unwrap();
    let stored = payouts::get(&mut conn, merchant.id, id_of(&p)).await.unwrap().unwrap();
    let intent = chain_txs::get(&mut conn, stored.transaction_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(intent.state, TxState::Failed);
    assert_eq!(intent.failure_reason.as_deref(), Some("cancelled"));
    assert_eq!(events::types_for(&mut conn, stored.id).await.unwrap(), ["payout.created", "payout.cancelled"]);
    drop(conn);

    // A second cancel changes nothing.
    let again = assert_error(post(&app, &key, &path, json!({}), None).await, 409, "payout_not_cancellable", None).await;
    assert!(again["error"]["message"].as_str().unwrap().contains("cancelled"), "{again}");
    assert_eq!(balance(&app, &key, "ETH").await, (ETH, 0));

    // Once the settler has signed it, it can no longer be cancelled; its hash shows.
    let signed = created(payout(&app, &key, body).await).await;
    let mut conn = app.store.conn().await.unwrap();
    let stored = payouts::get(&mut conn, merchant.id, id_of(&signed)).await.unwrap().unwrap();
    let tx_id = stored.transaction_id.unwrap();
    let hash = |n: u8| format!("0x{}", hex_byte(n).repeat(32));
    let attempt = |n: u8| Attempt {
        id: Uuid::now_v7(),
        transaction_id: tx_id,
        tx_hash: hash(n),
        raw_tx: "0x02".into(),
        max_fee_per_gas: 3 * GWEI,
        max_priority_fee_per_gas: GWEI,
        gas_limit: 21_000,
        broadcast_at: None,
        broadcast_block: None,
        created_at: now_ms() + i64::from(n),
    };
    assert!(chain_txs::set_signed(&mut conn, tx_id, 0, stored.fee_reserve, &attempt(1)).await.unwrap());
    drop(conn);
    let path = format!("/api/v1/payouts/{}/cancel", signed["id"].as_str().unwrap());
    let refused =
        assert_error(post(&app, &key, &path, json!({}), None).await, 409, "payout_not_cancellable", None).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("signed"), "{refused}");
    assert_eq!(balance(&app, &key, "ETH").await, (ETH - ETH / 4 - reserve, ETH / 4 + reserve));
    let get_path = format!("/api/v1/payouts/{}", signed["id"].as_str().unwrap());
    let (_, shown) = app.get_json(&key, &get_path).await;
    assert_eq!(shown["tx_hash"], hash(1));
    // A fee bump's attempt is the latest; the mined one wins over all.
    let mut conn = app.store.conn().await.unwrap();
    chain_txs::insert_attempt(&mut conn, &attempt(2)).await.unwrap();
    let (_, shown) = app.get_json(&key, &get_path).await;
    assert_eq!(shown["tx_hash"], hash(2));
    assert!(
        chain_txs::set_mined(&mut conn, tx_id, TxState::Signed, &hash(1), 7, BaseUnits::from(21_000u64)).await.unwrap()
    );
    let (_, shown) = app.get_json(&key, &get_path).await;
    assert_eq!(shown["tx_hash"], hash(1));
    drop(conn);
    assert_ledger_consistent(&app).await;
}

fn hex_byte(n: u8) -> String {
    format!("{n:02x}")
}

/// An invoice created through the API, then marked paid in the store with `paid` base units.
async fn paid_invoice(app: &TestApp, key: &str, merchant_id: Uuid, paid: u128) -> Value {
    let response = app.create_invoice(key, json!({"amount": "10", "asset": "USDC"})).await;
    let invoice = created(response).await;
    if paid > 0 {
        let mut conn = app.store.conn().await.unwrap();
        let read = invoices::get(&mut conn, merchant_id, id_of(&invoice)).await.unwrap().unwrap();
        let mut updated = read.clone();
        updated.amount_paid_base_units = BaseUnits::from(alloy::primitives::U256::from(paid));
        updated.status = depositd_core::invoice::InvoiceStatus::Paid;
        updated.finished_at = Some(now_ms());
        invoices::update_payment_state(&mut conn, &read, &updated).await.unwrap();
    }
    invoice
}

async fn refunds_are_bounded_by_what_was_paid(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Refunder", ALL).await;
    let (other_merchant, other_key) = app.merchant("Stranger", ALL).await;
    fund(&app, merchant.id, "USDC", 100 * USDC).await;
    let refunds = |invoice: &Value| format!("/api/v1/invoices/{}/refunds", invoice["id"].as_str().unwrap());

    // Nothing paid yet.
    let unpaid = paid_invoice(&app, &key, merchant.id, 0).await;
    let response = post(&app, &key, &refunds(&unpaid), json!({"amount": "1", "address": DEST}), None).await;
    assert_error(response, 400, "invoice_not_paid", None).await;

    let invoice = paid_invoice(&app, &key, merchant.id, 10 * USDC).await;
    let path = refunds(&invoice);
    let over = post(&app, &key, &path, json!({"amount": "10.000001", "address": DEST}), None).await;
    let body = assert_error(over, 400, "refund_exceeds_paid", Some("amount")).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("10 USDC"), "{body}");

    // A partial refund: a payout of kind refund, linked to the invoice.
    let request =
        json!({"amount": "6", "address": DEST.to_lowercase(), "external_id": "rf-1", "metadata": {"why": "broken"}});
    let first = created(post(&app, &key, &path, request, Some("refund-key")).await).await;
    assert_eq!(first["object"], "refund");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["invoice_id"], invoice["id"]);
    assert_eq!(first["asset"], "USDC");
    assert_eq!(first["amount"], "6");
    assert_eq!(first["destination"], DEST);
    assert_eq!(first["network_fee_reserve_base_units"], "0");
    assert_eq!(balance(&app, &key, "USDC").await, (94 * USDC, 6 * USDC));
    let mut conn = app.store.conn().await.unwrap();
    let stored = payouts::get(&mut conn, merchant.id, id_of(&first)).await.unwrap().unwrap();
    let intent = chain_txs::get(&mut conn, stored.transaction_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(intent.purpose, Purpose::Refund);
    assert_eq!(intent.invoice_id, Some(id_of(&invoice)));
    assert_eq!(intent.token_address.as_deref(), Some(TEST_USDC));
    assert_eq!(events::types_for(&mut conn, stored.id).await.unwrap(), ["payout.created"]);
    drop(conn);

    // Only 4 are left to refund.
    let over = post(&app, &key, &path, json!({"amount": "4.5", "address": DEST}), None).await;
    assert_error(over, 400, "refund_exceeds_paid", Some("amount")).await;
    // The same key and body on another invoice is a conflict, not a replay.
    let other_invoice = paid_invoice(&app, &key, merchant.id, 10 * USDC).await;
    let request =
        json!({"amount": "6", "address": DEST.to_lowercase(), "external_id": "rf-1", "metadata": {"why": "broken"}});
    let reused = post(&app, &key, &refunds(&other_invoice), request.clone(), Some("refund-key")).await;
    assert_error(reused, 409, "idempotency_conflict", Some("Idempotency-Key")).await;
    let replay = created(post(&app, &key, &path, request, Some("refund-key")).await).await;
    assert_eq!(replay["id"], first["id"]);

    // A cancelled refund no longer counts.
    let cancel_path = format!("/api/v1/payouts/{}/cancel", first["id"].as_str().unwrap());
    assert_eq!(post(&app, &key, &cancel_path, json!({}), None).await.status(), 200);
    let whole = created(post(&app, &key, &path, json!({"amount": "10", "address": DEST}), None).await).await;
    assert_eq!(whole["amount"], "10");
    let (_, listed) =
        app.get_json(&key, &format!("/api/v1/payouts?invoice_id={}", invoice["id"].as_str().unwrap())).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);

    // Validation, the invoice's asset decimals, other merchants' and unknown invoices.
    let bad =
        post(&app, &key, &path, json!({"amount": "1", "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"}), None);
    assert_error(bad.await, 400, "invalid_address", Some("address")).await;
    let other_path = refunds(&other_invoice);
    let bad = post(&app, &key, &other_path, json!({"amount": "0.0000001", "address": DEST}), None);
    assert_error(bad.await, 400, "invalid_amount", Some("amount")).await;
    let bad = post(&app, &key, &other_path, json!({"amount": "1", "address": DEST, "asset": "ETH"}), None);
    // A refund may name its asset (for invoices with several payment options); one the invoice
    // was not offered in is refused.
    assert_error(bad.await, 400, "refund_option_not_offered", Some("asset")).await;
    let bad = post(&app, &key, &other_path, json!({"amount": "1", "address": DEST, "fee": "0"}), None);
    assert_error(bad.await, 400, "unknown_parameter", Some("fee")).await;
    let bad = post(&app, &key, &other_path, json!({"amount": "1"}), None);
    assert_error(bad.await, 400, "parameter_missing", Some("address")).await;
    fund(&app, other_merchant.id, "USDC", 100 * USDC).await;
    let foreign = post(&app, &other_key, &path, json!({"amount": "1", "address": DEST}), None).await;
    assert_error(foreign, 404, "resource_missing", None).await;
    let unknown = format!("/api/v1/invoices/{}/refunds", Uuid::now_v7());
    assert_error(
        post(&app, &key, &unknown, json!({"amount": "1", "address": DEST}), None).await,
        404,
        "resource_missing",
        None,
    )
    .await;
    let malformed =
        post(&app, &key, "/api/v1/invoices/nope/refunds", json!({"amount": "1", "address": DEST}), None).await;
    assert_error(malformed, 400, "invalid_parameter", Some("id")).await;

    // A refund is paid from the available balance like any payout: a merchant whose paid
    // invoice was settled elsewhere (nothing available) cannot refund it.
    let (poor, poor_key) = app.merchant("Poor", ALL).await;
    let settled = paid_invoice(&app, &poor_key, poor.id, 10 * USDC).await;
    let response = post(&app, &poor_key, &refunds(&settled), json!({"amount": "1", "address": DEST}), None).await;
    assert_error(response, 400, "insufficient_funds", Some("amount")).await;
    assert_eq!(balance(&app, &poor_key, "USDC").await, (0, 0));
    assert_eq!(balance(&app, &key, "USDC").await, (90 * USDC, 10 * USDC));
    assert_ledger_consistent(&app).await;
}

async fn concurrent_refunds_never_exceed_the_paid_amount(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Racer", ALL).await;
    fund(&app, merchant.id, "USDC", 1_000 * USDC).await;
    let invoice = paid_invoice(&app, &key, merchant.id, 10 * USDC).await;
    let path = format!("/api/v1/invoices/{}/refunds", invoice["id"].as_str().unwrap());
    // Ten refunds of 3 race for 10 paid: at most three fit.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (client, url, key) = (app.client.clone(), app.url(&path), key.clone());
        tasks.spawn(async move {
            let response = client
                .post(url)
                .header("x-api-key", key)
                .json(&json!({"amount": "3", "address": DEST}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        });
    }
    let mut granted = 0;
    while let Some(outcome) = tasks.join_next().await {
        let (status, body) = outcome.unwrap();
        match status {
            201 => granted += 1,
            400 => assert_eq!(body["error"]["code"], "refund_exceeds_paid", "{body}"),
            // Only a serialization failure may answer otherwise; it must not have written anything.
            _ => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!(granted, 3);
    assert_eq!(balance(&app, &key, "USDC").await, (991 * USDC, 9 * USDC));
    assert_ledger_consistent(&app).await;
}

async fn scopes_are_enforced(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Owner", ALL).await;
    fund(&app, merchant.id, "USDC", 10 * USDC).await;
    let p = created(payout(&app, &key, json!({"asset": "USDC", "amount": "1", "destination": DEST})).await).await;
    let invoice = paid_invoice(&app, &key, merchant.id, 10 * USDC).await;
    let refunds = format!("/api/v1/invoices/{}/refunds", invoice["id"].as_str().unwrap());
    let cancel = format!("/api/v1/payouts/{}/cancel", p["id"].as_str().unwrap());
    let body = json!({"asset": "USDC", "amount": "1", "destination": DEST});

    // Keys of the same merchant with fewer scopes.
    let key_with = |scopes: &'static [Scope]| {
        let store = app.store.clone();
        async move {
            let mut conn = store.conn().await.unwrap();
            let (_, key) = api_keys::create(&mut conn, merchant.id, KeyMode::Test, scopes, None).await.unwrap();
            key.expose_secret().to_owned()
        }
    };
    let reader = key_with(&[Scope::PayoutsRead]).await;
    let invoices_only = key_with(&[Scope::InvoicesRead, Scope::InvoicesWrite]).await;

    assert_error(payout(&app, &reader, body.clone()).await, 403, "insufficient_scope", None).await;
    assert_error(post(&app, &reader, &cancel, json!({}), None).await, 403, "insufficient_scope", None).await;
    let refund = json!({"amount": "1", "address": DEST});
    assert_error(post(&app, &reader, &refunds, refund, None).await, 403, "insufficient_scope", None).await;
    let (status, _) = app.get_json(&reader, &format!("/api/v1/payouts/{}", p["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    let (status, _) = app.get_json(&reader, "/api/v1/payouts").await;
    assert_eq!(status, 200);

    for path in [format!("/api/v1/payouts/{}", p["id"].as_str().unwrap()), "/api/v1/payouts".into()] {
        let response = app.client.get(app.url(&path)).header("x-api-key", &invoices_only).send().await.unwrap();
        assert_error(response, 403, "insufficient_scope", None).await;
    }
    assert_error(payout(&app, &invoices_only, body).await, 403, "insufficient_scope", None).await;
    let missing = app.client.post(app.url("/api/v1/payouts")).json(&json!({})).send().await.unwrap();
    assert_error(missing, 401, "missing_api_key", None).await;
    // Nothing changed.
    assert_eq!(balance(&app, &key, "USDC").await, (9 * USDC, USDC));
}
