//! `GET /openapi.json` describes the real responses: samples of them validate against its schemas.

use depositd_core::ledger;
use depositd_core::store::api_keys::Scope;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb};

/// A JSON Schema for `component`, with the document's components as `$defs`.
fn schema_for(document: &Value, component: &str) -> jsonschema::Validator {
    let defs = document["components"]["schemas"].to_string().replace("#/components/schemas/", "#/$defs/");
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": serde_json::from_str::<Value>(&defs).unwrap(),
        "$ref": format!("#/$defs/{component}"),
    });
    jsonschema::validator_for(&schema).expect("the document's schemas are valid JSON Schema")
}

fn assert_valid(document: &Value, component: &str, instance: &Value) {
    let validator = schema_for(document, component);
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{component} does not match the OpenAPI document: {errors:#?}\n{instance:#}");
}

#[tokio::test]
async fn real_responses_match_the_openapi_document() {
    let db = TestDb::sqlite();
    // Internal targets allowed: registering an endpoint then makes no DNS lookup (no network here).
    let app = TestApp::spawn_with(&db, |c| c.settings.webhooks.allow_private_targets = true).await;
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1");
    for path in
        ["/api/v1/invoices", "/api/v1/invoices/{id}", "/api/v1/invoices/{id}/cancel", "/api/v1/static-addresses"]
    {
        assert!(document["paths"].get(path).is_some(), "{path} is documented");
    }

    let (merchant, key) = app.merchant("Documented", &Scope::ALL).await;
    let full = json!({"amount": "19.99", "description": "d", "customer_id": "c", "external_id": "e", "metadata": {"k": 1},
        "title": "t", "footer": "f", "customer_email": "a@b.example", "return_url": "https://x.example", "use_return_url": false,
        "callback_url": "https://x.example/h", "questions": ["q"], "receiver_override": true,
        "receiver_override_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"});
    // The request bodies we send are valid requests too.
    assert_valid(&document, "CreateInvoice", &full);
    let created: Value = app.create_invoice(&key, full).await.json().await.unwrap();
    assert_valid(&document, "InvoiceResource", &created);
    let minimal: Value = app.create_invoice(&key, json!({"amount": 5, "asset": "ETH"})).await.json().await.unwrap();
    assert_valid(&document, "InvoiceResource", &minimal);
    let (_, list) = app.get_json(&key, "/api/v1/invoices?limit=1").await;
    assert_valid(&document, "InvoiceList", &list);
    let cancelled: Value = app
        .client
        .post(app.url(&format!("/api/v1/invoices/{}/cancel", minimal["id"].as_str().unwrap())))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid(&document, "InvoiceResource", &cancelled);

    let rail: Value = app.create_static_address(&key, json!({"customer_id": "c"})).await.json().await.unwrap();
    assert_valid(&document, "StaticAddressResource", &rail);
    let (_, rails) = app.get_json(&key, "/api/v1/static-addresses").await;
    assert_valid(&document, "StaticAddressList", &rails);

    // The ledger endpoints, with an entry to show.
    let merchant_id = merchant.id;
    let mut tx = app.store.begin().await.unwrap();
    let amount = depositd_core::money::BaseUnits::from(1_500_000);
    ledger::post(
        &mut tx,
        ledger::NewEntry {
            entry_type: ledger::EntryType::DepositCredit,
            idempotency_key: "openapi".into(),
            refs: ledger::Refs { merchant_id: Some(merchant_id), ..Default::default() },
            reverses: None,
            memo: None,
            legs: vec![
                ledger::Leg::debit(ledger::Account::platform(ledger::AccountKind::Custody, 31337, "USDC"), amount),
                ledger::Leg::credit(
                    ledger::Account::merchant(merchant_id, ledger::AccountKind::Available, 31337, "USDC"),
                    amount,
                ),
            ],
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for path in ["/api/v1/balances", "/api/v1/ledger", "/api/v1/deposits", "/api/v1/deposits/{id}"] {
        assert!(document["paths"].get(path).is_some(), "{path} is documented");
    }
    let (_, balances) = app.get_json(&key, "/api/v1/balances").await;
    assert_valid(&document, "BalanceList", &balances);
    let (_, entries) = app.get_json(&key, "/api/v1/ledger").await;
    assert_eq!(entries["data"].as_array().unwrap().len(), 1, "{entries}");
    assert_valid(&document, "LedgerEntryList", &entries);
    let (_, deposits) = app.get_json(&key, "/api/v1/deposits").await;
    assert_valid(&document, "DepositList", &deposits);

    // Webhook endpoints and events.
    let endpoint: Value = app
        .client
        .post(app.url("/api/v1/webhook-endpoints"))
        .header("x-api-key", &key)
        .json(&json!({"url": "https://hooks.example.com/x", "enabled_events": ["invoice.paid"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid(&document, "WebhookEndpointResource", &endpoint);
    let (_, endpoints) = app.get_json(&key, "/api/v1/webhook-endpoints").await;
    assert_valid(&document, "WebhookEndpointList", &endpoints);
    let (_, events) = app.get_json(&key, "/api/v1/events").await;
    assert!(!events["data"].as_array().unwrap().is_empty(), "{events}");
    assert_valid(&document, "EventList", &events);
    let (_, event) = app.get_json(&key, &format!("/api/v1/events/{}", events["data"][0]["id"].as_str().unwrap())).await;
    assert_valid(&document, "EventResource", &event);

    let (_, error) = app.get_json(&key, "/api/v1/invoices?limit=0").await;
    assert_valid(&document, "ErrorBody", &error);
    let unauthenticated: Value =
        app.client.get(app.url("/api/v1/invoices")).send().await.unwrap().json().await.unwrap();
    assert_valid(&document, "ErrorBody", &unauthenticated);

    // And the check is not vacuous: a wrong shape fails it.
    let mut broken = created.clone();
    broken["status"] = json!("shipped");
    assert!(!schema_for(&document, "InvoiceResource").is_valid(&broken));
}
