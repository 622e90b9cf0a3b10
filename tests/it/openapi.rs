//! `GET /openapi.json` describes the real responses: samples of them validate against its schemas.

use depositd_core::api_key::Scope;
use depositd_core::ledger;
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

pub(crate) fn assert_valid(document: &Value, component: &str, instance: &Value) {
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
    for path in [
        "/api/v1/invoices",
        "/api/v1/invoices/{id}",
        "/api/v1/invoices/{id}/cancel",
        "/api/v1/invoices/{id}/mark",
        "/api/v1/static-addresses",
    ] {
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
    let mark = json!({"status": "invalid", "reason": "duplicate order"});
    assert_valid(&document, "MarkInvoice", &mark);
    let marked: Value = app
        .client
        .post(app.url(&format!("/api/v1/invoices/{}/mark", created["id"].as_str().unwrap())))
        .header("x-api-key", &key)
        .json(&mark)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(marked["marked"]["status"], "invalid", "{marked}");
    assert_valid(&document, "InvoiceResource", &marked);
    assert!(!schema_for(&document, "MarkInvoice").is_valid(&json!({"status": "invalid", "reason": "  "})));

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

/// The document is as strict as the server (issue 17): the errors every operation can return,
/// `limit`'s bounds, the Idempotency-Key format, the enums, minimum lengths. (The schemathesis run
/// in tests/schemathesis/ fuzzes the rest against the real daemon.)
#[tokio::test]
async fn the_document_says_what_the_server_refuses() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let statuses: &[&str] = if path.starts_with("/api/v1/payments/") {
                &["400", "401"]
            } else {
                assert!(operation["security"].as_array().is_some_and(|s| !s.is_empty()), "{method} {path}");
                &["400", "401", "403", "429"]
            };
            for status in statuses {
                let response = &responses.get(*status).unwrap_or_else(|| panic!("{method} {path} lacks {status}"));
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let schema = &parameter["schema"];
                match parameter["name"].as_str().unwrap() {
                    "limit" => {
                        assert_eq!((&schema["minimum"], &schema["maximum"]), (&json!(1), &json!(100)), "{path}")
                    }
                    "Idempotency-Key" => {
                        assert_eq!(schema["maxLength"], 255, "{path}");
                        assert_eq!(schema["pattern"], "^[!-~]+$", "{path}");
                    }
                    "id" | "invoice_id" | "starting_after" | "resource_id" | "deposit_id" => {
                        assert!(schema["pattern"].as_str().is_some_and(|p| p.contains("[0-9a-fA-F]{8}")), "{path}")
                    }
                    "chain" => assert_eq!(schema["enum"], json!(["anvil"]), "{path}"),
                    "asset" => assert_eq!(schema["enum"], json!(["ETH", "USDC", "USDT"]), "{path}"),
                    "status" | "state" | "delivery_state" | "format" | "type" => {
                        let values = schema["enum"].as_array().or_else(|| {
                            let reference = schema["$ref"].as_str()?.rsplit('/').next()?;
                            document["components"]["schemas"][reference]["enum"].as_array()
                        });
                        assert!(values.is_some_and(|v| !v.is_empty()), "{method} {path} {parameter}");
                    }
                    _ => {}
                }
                assert!(parameter["in"] != "query" || !schema["type"].is_array(), "query parameters are never null");
            }
            operations += 1;
        }
    }
    assert!(operations >= 29, "{operations}");
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["CreateStaticAddress"]["properties"]["customer_id"]["minLength"], 1);
    assert_eq!(schemas["CreateInvoice"]["properties"]["external_id"]["minLength"], 1);
    assert_eq!(schemas["CreateInvoice"]["properties"]["chain"]["enum"], json!(["anvil", null]));
    let options = &schemas["CreateInvoice"]["properties"]["payment_options"];
    assert_eq!((options["minItems"].as_u64(), options["maxItems"].as_u64()), (Some(1), Some(10)), "{options}");
    let create = &document["paths"]["/api/v1/invoices"]["post"]["responses"]["400"]["description"];
    assert!(create.as_str().unwrap().contains("duplicate_payment_option"), "{create}");
    let events = schemas["CreateWebhookEndpoint"]["properties"]["enabled_events"]["items"]["enum"].as_array().unwrap();
    assert!(events.contains(&json!("invoice.paid")) && events.contains(&json!("payout.sent")));
}
