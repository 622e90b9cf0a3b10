//! The invoice API over real HTTP, on both backends: authentication, every validation rule,
//! pricing, idempotency, external ids, listing, cancel and expiry.

use std::collections::HashSet;

use depositd_core::api_key::Scope;
use depositd_core::merchant::MerchantStatus;
use depositd_core::store::api_keys;
use depositd_core::store::events;
use depositd_core::store::merchants;
use serde_json::{Value, json};

use crate::helpers::{TEST_USDC, TestApp, TestDb, assert_error, both_backends};

both_backends!(
    authentication_and_scopes,
    creates_a_priced_invoice_with_a_fresh_address,
    every_bad_input_is_a_precise_400,
    prices_in_eur_uah_usdc_and_eth,
    idempotency_replays_conflicts_and_releases,
    fifty_concurrent_requests_with_one_key_create_one_invoice,
    external_id_is_unique_per_merchant,
    lists_with_filters_and_cursor_pagination,
    cancel_only_while_unpaid,
    expiry_moves_unpaid_invoices_to_expired,
    rate_limits_answer_429_with_retry_after,
    a_price_feed_prices_while_fresh_and_refuses_when_stale,
    merchant_amount_bounds_replace_the_defaults,
    a_payment_update_never_overwrites_a_concurrent_change,
    an_asset_fee_schedule_prices_new_invoices_only,
    the_invoice_gauge_never_holds_up_a_scrape,
);

const ALL: &[Scope] = &Scope::ALL;

async fn authentication_and_scopes(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Auth Shop", ALL).await;
    let url = app.url("/api/v1/invoices");
    let body = json!({"amount": "10"});

    let missing = app.client.post(&url).json(&body).send().await.unwrap();
    assert_error(missing, 401, "missing_api_key", None).await;
    let malformed = app.client.post(&url).header("x-api-key", "hello").json(&body).send().await.unwrap();
    assert_error(malformed, 401, "invalid_api_key", None).await;
    let unknown = app
        .client
        .post(&url)
        .header("x-api-key", format!("dk_test_{}", "a".repeat(48)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(unknown, 401, "invalid_api_key", None).await;
    let wrong_scheme =
        app.client.post(&url).header("authorization", format!("Basic {key}")).json(&body).send().await.unwrap();
    assert_error(wrong_scheme, 401, "invalid_api_key", None).await;

    // Both header forms work.
    assert_eq!(app.create_invoice(&key, body.clone()).await.status(), 201);
    let bearer = app.client.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(bearer.status(), 201);

    // A key without the scope: 403.
    let (_, read_only) = app.merchant("Reader", &[Scope::InvoicesRead]).await;
    assert_error(app.create_invoice(&read_only, body.clone()).await, 403, "insufficient_scope", None).await;

    // Inactive merchant, then revoked key: 401.
    let mut conn = app.store.conn().await.unwrap();
    merchants::set_status(&mut conn, merchant.id, MerchantStatus::Disabled).await.unwrap();
    assert_error(app.create_invoice(&key, body.clone()).await, 401, "merchant_inactive", None).await;
    merchants::set_status(&mut conn, merchant.id, MerchantStatus::Active).await.unwrap();
    let key_id = api_keys::list(&mut conn, merchant.id).await.unwrap()[0].id;
    api_keys::revoke(&mut conn, key_id).await.unwrap();
    assert_error(app.create_invoice(&key, body).await, 401, "api_key_revoked", None).await;
}

async fn creates_a_priced_invoice_with_a_fresh_address(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Shop", ALL).await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let response = app
        .create_invoice(
            &key,
            json!({"amount": "19.99", "description": "Premium Plan", "customer_id": "user_1", "external_id": "order-1",
                   "metadata": {"order_id": "ORD-123", "qty": 2, "gift": false}, "title": "Monthly", "footer": "Thanks",
                   "customer_email": "c@example.com", "return_url": "https://shop.example/done", "use_return_url": true,
                   "success_url": "https://shop.example/ok", "fail_url": "https://shop.example/fail",
                   "callback_url": "https://shop.example/hook", "questions": ["Size?"],
                   "receiver_override": true, "receiver_override_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let invoice: Value = response.json().await.unwrap();
    assert_eq!(invoice["object"], "invoice");
    assert_eq!(invoice["status"], "pending");
    assert_eq!(invoice["amount"], "19.99");
    assert_eq!(invoice["currency"], "USD");
    assert_eq!(invoice["conversion_rate"], "1");
    let pay = &invoice["pay"];
    assert_eq!(
        (pay["chain"].as_str(), pay["chain_id"].as_u64(), pay["asset"].as_str()),
        (Some("anvil"), Some(31337), Some("USDC"))
    );
    assert_eq!(pay["token_address"], TEST_USDC);
    assert_eq!((pay["amount"].as_str(), pay["amount_base_units"].as_str()), (Some("19.99"), Some("19990000")));
    // 1% fee, rounded down: 199900 base units.
    assert_eq!((invoice["fee"].as_str(), invoice["merchant_amount"].as_str()), (Some("0.1999"), Some("19.7901")));
    assert_eq!(invoice["merchant_amount_base_units"], "19790100");
    assert_eq!((invoice["amount_paid"].as_str(), invoice["amount_due"].as_str()), (Some("0"), Some("19.99")));
    let address = pay["address"].as_str().unwrap();
    assert_eq!(address, address.parse::<alloy::primitives::Address>().unwrap().to_checksum(None), "EIP-55 checksummed");
    assert_eq!(pay["payment_uri"], format!("ethereum:{TEST_USDC}@31337/transfer?address={address}&uint256=19990000"));
    let id = invoice["id"].as_str().unwrap();
    // checkout_url is built from the configured public URL, not from the address the API bound.
    assert_eq!(invoice["checkout_url"], format!("{}/checkout/{id}", app.state.config.settings.api.public_url));
    let (token, signature) = (invoice["session_token"].as_str().unwrap(), invoice["signature"].as_str().unwrap());
    assert_eq!(token.len(), 64);
    assert_eq!(invoice["payment_session_headers"], json!({"x-session-token": token, "x-signature": signature}));
    assert!(app.state.sessions.verify(id.parse().unwrap(), token, signature));
    let created_at = invoice["created_at"].as_i64().unwrap();
    assert!((before..=before + 5).contains(&created_at), "epoch seconds");
    assert_eq!(invoice["expires_at"].as_i64().unwrap() - created_at, 12 * 3600, "default expiry is 12 h");
    assert_eq!(invoice["finished_at"], Value::Null);
    for (field, value) in [
        ("external_id", json!("order-1")),
        ("customer_id", json!("user_1")),
        ("title", json!("Monthly")),
        ("metadata", json!({"order_id": "ORD-123", "qty": 2, "gift": false})),
        ("questions", json!(["Size?"])),
        ("use_return_url", json!(true)),
        ("receiver_override", json!(true)),
        ("receiver_override_address", json!("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")),
    ] {
        assert_eq!(invoice[field], value, "{field} is echoed");
    }
    assert_eq!(invoice["payments"], json!([]));

    // GET returns the same resource.
    let (status, fetched) = app.get_json(&key, &format!("/api/v1/invoices/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, invoice);

    // Every invoice gets its own address; the creation is in the outbox.
    let second: Value = app.create_invoice(&key, json!({"amount": 5})).await.json().await.unwrap();
    assert_ne!(second["pay"]["address"], invoice["pay"]["address"]);
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(events::types_for(&mut conn, id.parse().unwrap()).await.unwrap(), ["invoice.created"]);

    // Another merchant cannot see it; a malformed id is a 400.
    let (_, other) = app.merchant("Other", ALL).await;
    let (status, body) = app.get_json(&other, &format!("/api/v1/invoices/{id}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("resource_missing")));
    let (status, body) = app.get_json(&key, "/api/v1/invoices/not-a-uuid").await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("id")));
    let _ = merchant;
}

async fn every_bad_input_is_a_precise_400(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Strict", ALL).await;
    let long = |n: usize| "x".repeat(n);
    let many_keys: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({}), "parameter_missing", "amount"),
        (json!({"amount": "abc"}), "invalid_amount", "amount"),
        (json!({"amount": "-5"}), "invalid_amount", "amount"),
        (json!({"amount": "1e3"}), "invalid_amount", "amount"),
        (json!({"amount": null}), "invalid_amount", "amount"),
        (json!({"amount": "0.001"}), "amount_out_of_range", "amount"),
        (json!({"amount": "100000100"}), "amount_out_of_range", "amount"),
        (json!({"amount": "1", "currency": "GBP"}), "unsupported_currency", "currency"),
        (json!({"amount": "1", "currency": "US"}), "unsupported_currency", "currency"),
        (json!({"amount": "1", "chain": "mainnet"}), "unsupported_chain", "chain"),
        (json!({"amount": "1", "asset": "DOGE"}), "unsupported_asset", "asset"),
        (json!({"amount": "1", "description": long(256)}), "invalid_parameter", "description"),
        (json!({"amount": "1", "description": ""}), "invalid_parameter", "description"),
        (json!({"amount": "1", "customer_id": long(256)}), "invalid_parameter", "customer_id"),
        (json!({"amount": "1", "external_id": long(129)}), "invalid_parameter", "external_id"),
        (json!({"amount": "1", "title": long(256)}), "invalid_parameter", "title"),
        (json!({"amount": "1", "metadata": ["a"]}), "invalid_metadata", "metadata"),
        (json!({"amount": "1", "metadata": many_keys}), "invalid_metadata", "metadata"),
        (json!({"amount": "1", "metadata": {"a": [[[[[[[{"nested": 9}]]]]]]]}}), "invalid_metadata", "metadata"),
        (json!({"amount": "1", "metadata": {"": 1}}), "invalid_metadata", "metadata"),
        (json!({"amount": "1", "metadata": {"a": long(5200)}}), "invalid_metadata", "metadata"),
        (json!({"amount": "1", "expires_in": 0}), "invalid_parameter", "expires_in"),
        (json!({"amount": "1", "expires_in": 2_592_000_001u64}), "invalid_parameter", "expires_in"),
        (json!({"amount": "1", "expires_in": -1}), "invalid_parameter", "expires_in"),
        (json!({"amount": "1", "expires_in": "soon"}), "invalid_parameter", "expires_in"),
        (json!({"amount": "1", "receiver_override": true}), "parameter_missing", "receiver_override_address"),
        (
            json!({"amount": "1", "receiver_override_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}),
            "parameter_missing",
            "receiver_override",
        ),
        (
            json!({"amount": "1", "receiver_override": true, "receiver_override_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"}),
            "invalid_address",
            "receiver_override_address",
        ),
        (
            json!({"amount": "1", "receiver_override": true, "receiver_override_address": "0x123"}),
            "invalid_address",
            "receiver_override_address",
        ),
        (json!({"amount": "1", "return_url": "http://shop.example"}), "invalid_url", "return_url"),
        (json!({"amount": "1", "callback_url": "not a url"}), "invalid_url", "callback_url"),
        (json!({"amount": "1", "success_url": "ftp://shop.example"}), "invalid_url", "success_url"),
        (json!({"amount": "1", "customer_email": "nobody"}), "invalid_parameter", "customer_email"),
        (json!({"amount": "1", "use_return_url": "yes"}), "invalid_parameter", "use_return_url"),
        (json!({"amount": "1", "questions": ["1", "2", "3", "4", "5", "6"]}), "invalid_parameter", "questions"),
        (json!({"amount": "1", "questions": [long(513)]}), "invalid_parameter", "questions"),
        (json!({"amount": "1", "questions": [""]}), "invalid_parameter", "questions"),
        (json!({"amount": "1", "surprise": true}), "unknown_parameter", "surprise"),
    ];
    for (body, code, param) in cases {
        let response = app.create_invoice(&key, body.clone()).await;
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            (status, error["error"]["code"].as_str(), error["error"]["param"].as_str()),
            (400, Some(code), Some(param)),
            "{body} -> {error}"
        );
    }
    let url = app.url("/api/v1/invoices");
    let not_json = app.client.post(&url).header("x-api-key", &key).body("{amount").send().await.unwrap();
    assert_error(not_json, 400, "invalid_json", None).await;
    let array = app.client.post(&url).header("x-api-key", &key).body("[1]").send().await.unwrap();
    assert_error(array, 400, "invalid_json", None).await;
    let huge = app
        .client
        .post(&url)
        .header("x-api-key", &key)
        .body(format!("{{\"amount\":\"1\",\"description\":\"{}\"}}", long(70_000)))
        .send()
        .await
        .unwrap();
    assert_error(huge, 413, "payload_too_large", None).await;
    let wrong_method = app.client.delete(&url).header("x-api-key", &key).send().await.unwrap();
    assert_error(wrong_method, 405, "method_not_allowed", None).await;
    // Nothing above created an invoice.
    let (_, list) = app.get_json(&key, "/api/v1/invoices").await;
    assert_eq!(list["data"], json!([]));
}

async fn prices_in_eur_uah_usdc_and_eth(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Prices", ALL).await;
    let cases = [
        (json!({"amount": "10", "currency": "EUR"}), "10.8", "10800000", "0.925925925926"),
        (json!({"amount": "1500.00", "currency": "uah"}), "36", "36000000", "41.666666666667"),
        (json!({"amount": "12.345678", "currency": "USDC"}), "12.345678", "12345678", "1"),
        (json!({"amount": 25, "currency": "USD", "asset": "USDT"}), "25", "25000000", "1"),
        (json!({"amount": "30", "asset": "ETH"}), "0.01", "10000000000000000", "3000"),
    ];
    for (body, amount, base, rate) in cases {
        let response = app.create_invoice(&key, body.clone()).await;
        assert_eq!(response.status(), 201, "{body}");
        let invoice: Value = response.json().await.unwrap();
        assert_eq!(invoice["pay"]["amount"], amount, "{body}");
        assert_eq!(invoice["pay"]["amount_base_units"], base, "{body}");
        assert_eq!(invoice["conversion_rate"], rate, "{body}");
    }
    let eth: Value = app.create_invoice(&key, json!({"amount": "30", "asset": "ETH"})).await.json().await.unwrap();
    assert_eq!(eth["pay"]["token_address"], Value::Null);
    let address = eth["pay"]["address"].as_str().unwrap();
    assert_eq!(eth["pay"]["payment_uri"], format!("ethereum:{address}@31337?value=10000000000000000"));
}

async fn idempotency_replays_conflicts_and_releases(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Idem", ALL).await;
    let post = |idem: &str, body: Value| {
        app.client
            .post(app.url("/api/v1/invoices"))
            .header("x-api-key", &key)
            .header("Idempotency-Key", idem)
            .json(&body)
            .send()
    };
    let first = post("123e4567-e89b-42d3-a456-556642440000", json!({"amount": "10", "metadata": {"a": 1, "b": 2}}))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.unwrap();
    // Same body (keys in another order) replays byte for byte.
    let again = app
        .client
        .post(app.url("/api/v1/invoices"))
        .header("x-api-key", &key)
        .header("Idempotency-Key", "123e4567-e89b-42d3-a456-556642440000")
        .header("content-type", "application/json")
        .body(r#"{"metadata": {"b": 2, "a": 1}, "amount": "10"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_body);
    // Different body: conflict.
    let conflict = post("123e4567-e89b-42d3-a456-556642440000", json!({"amount": "11"})).await.unwrap();
    assert_error(conflict, 409, "idempotency_conflict", Some("Idempotency-Key")).await;
    // Keys are per merchant: another merchant's same key is independent.
    let (_, other) = app.merchant("Other", ALL).await;
    let theirs = app
        .client
        .post(app.url("/api/v1/invoices"))
        .header("x-api-key", &other)
        .header("Idempotency-Key", "123e4567-e89b-42d3-a456-556642440000")
        .json(&json!({"amount": "11"}))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    // A failed request stores nothing: the corrected retry with the same key succeeds.
    let bad = post("fix-and-retry", json!({"amount": "nope"})).await.unwrap();
    assert_error(bad, 400, "invalid_amount", Some("amount")).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(post("fix-and-retry", json!({"amount": "3"})).await.unwrap().status(), 201);
    // The same key on another endpoint is a conflict too.
    let elsewhere = app
        .client
        .post(app.url("/api/v1/static-addresses"))
        .header("x-api-key", &key)
        .header("Idempotency-Key", "123e4567-e89b-42d3-a456-556642440000")
        .json(&json!({"customer_id": "c"}))
        .send()
        .await
        .unwrap();
    assert_error(elsewhere, 409, "idempotency_conflict", Some("Idempotency-Key")).await;
    // A malformed key is refused.
    let response = post(&"k".repeat(300), json!({"amount": "3"})).await.unwrap();
    assert_error(response, 400, "invalid_idempotency_key", Some("Idempotency-Key")).await;
    // The dashboard's own key space is not the API's.
    let response = post("dashboard:payout:1", json!({"amount": "3"})).await.unwrap();
    let body = assert_error(response, 400, "invalid_idempotency_key", Some("Idempotency-Key")).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("dashboard:"), "{body}");
    let (_, list) = app.get_json(&key, "/api/v1/invoices").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "one invoice per successful key");
}

async fn fifty_concurrent_requests_with_one_key_create_one_invoice(db: TestDb) {
    let app = TestApp::spawn_with(&db, |c| c.settings.api.rate_limit_burst = 1000).await;
    let (_, key) = app.merchant("Concurrent", ALL).await;
    let mut requests = Vec::new();
    for _ in 0..50 {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/invoices"), key.clone());
        requests.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("x-api-key", key)
                .header("Idempotency-Key", "same-key-50")
                .json(&json!({"amount": "42", "external_id": "order-50"}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }));
    }
    let mut bodies = HashSet::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 201, "{body}");
        bodies.insert(body);
    }
    assert_eq!(bodies.len(), 1, "every response is the first response");
    let count: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM invoices").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(count.0, 1, "exactly one invoice");
}

async fn external_id_is_unique_per_merchant(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Ext", ALL).await;
    assert_eq!(app.create_invoice(&key, json!({"amount": "1", "external_id": "order-7"})).await.status(), 201);
    let again = app.create_invoice(&key, json!({"amount": "2", "external_id": "order-7"})).await;
    assert_error(again, 409, "external_id_conflict", Some("external_id")).await;
    let (_, other) = app.merchant("Ext 2", ALL).await;
    assert_eq!(app.create_invoice(&other, json!({"amount": "1", "external_id": "order-7"})).await.status(), 201);
    // The failed attempt left no orphan deposit address behind.
    let addresses: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM deposit_addresses").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(addresses.0, 2);
}

async fn lists_with_filters_and_cursor_pagination(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Lister", ALL).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let customer = if i % 2 == 0 { "even" } else { "odd" };
        let invoice: Value = app
            .create_invoice(&key, json!({"amount": "1", "customer_id": customer, "external_id": format!("o-{i}")}))
            .await
            .json()
            .await
            .unwrap();
        ids.push(invoice["id"].as_str().unwrap().to_owned());
    }
    ids.reverse(); // newest first
    let (status, page) = app.get_json(&key, "/api/v1/invoices?limit=2").await;
    assert_eq!(status, 200);
    let page_ids: Vec<&str> = page["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!((page_ids, page["has_more"].as_bool()), (vec![ids[0].as_str(), ids[1].as_str()], Some(true)));
    let (_, page) = app.get_json(&key, &format!("/api/v1/invoices?limit=2&starting_after={}", ids[1])).await;
    let page_ids: Vec<&str> = page["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(page_ids, vec![ids[2].as_str(), ids[3].as_str()]);
    let (_, page) = app.get_json(&key, &format!("/api/v1/invoices?limit=2&starting_after={}", ids[3])).await;
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (1, Some(false)));

    let (_, odd) = app.get_json(&key, "/api/v1/invoices?customer_id=odd").await;
    assert_eq!(odd["data"].as_array().unwrap().len(), 2);
    let (_, one) = app.get_json(&key, "/api/v1/invoices?external_id=o-3").await;
    assert_eq!(one["data"][0]["external_id"], "o-3");
    let (_, pending) = app.get_json(&key, "/api/v1/invoices?status=pending&created_after=0").await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 5);
    let (_, paid) = app.get_json(&key, "/api/v1/invoices?status=paid").await;
    assert_eq!(paid["data"], json!([]));
    let (_, future) = app.get_json(&key, "/api/v1/invoices?created_after=99999999999").await;
    assert_eq!(future["data"], json!([]));

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("status=done", "status"),
        ("starting_after=x", "starting_after"),
        ("created_after=yesterday", "created_after"),
        ("sort=asc", "sort"),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/invoices?{query}")))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{query}");
    }
}

async fn cancel_only_while_unpaid(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Canceller", ALL).await;
    let invoice: Value = app.create_invoice(&key, json!({"amount": "5"})).await.json().await.unwrap();
    let id = invoice["id"].as_str().unwrap();
    let cancel = || app.client.post(app.url(&format!("/api/v1/invoices/{id}/cancel"))).header("x-api-key", &key).send();
    let response = cancel().await.unwrap();
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_i64());
    assert_error(cancel().await.unwrap(), 409, "invoice_not_cancellable", None).await;
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        events::types_for(&mut conn, id.parse().unwrap()).await.unwrap(),
        ["invoice.created", "invoice.cancelled"]
    );
    let missing = app
        .client
        .post(app.url(&format!("/api/v1/invoices/{}/cancel", uuid::Uuid::now_v7())))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(missing, 404, "resource_missing", None).await;

    // Still pending, but a payment to it is waiting for confirmations (recorded, the watcher's
    // step to `processing` not yet taken): refused, saying so rather than "this one is pending".
    let waiting: Value = app.create_invoice(&key, json!({"amount": "5"})).await.json().await.unwrap();
    let waiting_id: uuid::Uuid = waiting["id"].as_str().unwrap().parse().unwrap();
    let deposit = depositd_core::deposit::Deposit {
        id: uuid::Uuid::now_v7(),
        chain_id: 31337,
        tx_hash: format!("0x{}", "ab".repeat(32)),
        log_index: 0,
        block_number: 7,
        block_hash: format!("0x{}", "cd".repeat(32)),
        from_address: "0x0000000000000000000000000000000000000001".into(),
        to_address: waiting["pay"]["address"].as_str().unwrap().to_owned(),
        token_address: Some(TEST_USDC.to_owned()),
        asset: "USDC".into(),
        amount: depositd_core::money::BaseUnits::from(alloy::primitives::U256::from(1_000_000u64)),
        state: depositd_core::deposit::DepositState::Detected,
        reject_reason: None,
        merchant_id: invoice_merchant(&app, waiting_id).await,
        invoice_id: Some(waiting_id),
        static_address_id: None,
        detected_at: depositd_core::time::now_ms(),
        confirmed_at: None,
        generation: 0,
    };
    depositd_core::store::deposits::record(&mut conn, &deposit).await.unwrap();
    let refused = app
        .client
        .post(app.url(&format!("/api/v1/invoices/{waiting_id}/cancel")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let body = assert_error(refused, 409, "invoice_not_cancellable", None).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("a payment to this one is waiting for confirmations"), "{message}");
    assert!(!message.contains("this one is pending"), "{message}");
}

/// The merchant an invoice belongs to, from the store.
async fn invoice_merchant(app: &TestApp, id: uuid::Uuid) -> Option<uuid::Uuid> {
    let mut conn = app.store.conn().await.unwrap();
    depositd_core::store::invoices::get_any(&mut conn, id).await.unwrap().map(|i| i.merchant_id)
}

async fn expiry_moves_unpaid_invoices_to_expired(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Expirer", ALL).await;
    let short: Value = app.create_invoice(&key, json!({"amount": "5", "expires_in": 1})).await.json().await.unwrap();
    let long: Value = app.create_invoice(&key, json!({"amount": "5"})).await.json().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(depositd_api::expiry::expire_once(&app.state).await.unwrap(), 1);
    assert_eq!(depositd_api::expiry::expire_once(&app.state).await.unwrap(), 0, "expires once");
    let (_, short) = app.get_json(&key, &format!("/api/v1/invoices/{}", short["id"].as_str().unwrap())).await;
    assert_eq!(short["status"], "expired");
    assert!(short["finished_at"].is_i64());
    let (_, long) = app.get_json(&key, &format!("/api/v1/invoices/{}", long["id"].as_str().unwrap())).await;
    assert_eq!(long["status"], "pending");
    let mut conn = app.store.conn().await.unwrap();
    let types = events::types_for(&mut conn, short["id"].as_str().unwrap().parse().unwrap()).await.unwrap();
    assert_eq!(types, ["invoice.created", "invoice.expired"]);
}

async fn rate_limits_answer_429_with_retry_after(db: TestDb) {
    let app = TestApp::spawn_with(&db, |c| {
        c.settings.invoices.customer_rate_limit_per_minute = 2;
        c.settings.api.rate_limit_per_second = 1;
        c.settings.api.rate_limit_burst = 6;
    })
    .await;
    let (_, key) = app.merchant("Limited", ALL).await;
    for _ in 0..2 {
        assert_eq!(app.create_invoice(&key, json!({"amount": "1", "customer_id": "greedy"})).await.status(), 201);
    }
    let limited = app.create_invoice(&key, json!({"amount": "1", "customer_id": "greedy"})).await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_error(limited, 429, "rate_limited", None).await;
    // Another customer is not affected.
    assert_eq!(app.create_invoice(&key, json!({"amount": "1", "customer_id": "other"})).await.status(), 201);
    // The key's own bucket (burst 6) is now spent.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            app.client
                .get(app.url("/api/v1/invoices"))
                .header("x-api-key", &key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // The API's metrics count it all with bounded labels: the route template, never an id.
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"depositd_api_requests_total{method="POST",route="/api/v1/invoices",status="201"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"depositd_api_rate_limited_total{route="/api/v1/invoices"}"#), "{metrics}");
    assert!(metrics.contains(r#"depositd_invoices_created_total{asset="USDC",chain="anvil"} 3"#), "{metrics}");
    assert!(metrics.contains("depositd_api_request_duration_seconds_bucket"), "{metrics}");
    assert!(!metrics.contains("greedy"), "customer ids are never labels");
}

async fn a_price_feed_prices_while_fresh_and_refuses_when_stale(db: TestDb) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    // A real HTTP price feed on loopback whose timestamp the test controls.
    let as_of = Arc::new(AtomicI64::new(depositd_core::time::now_ms() / 1000));
    let served = as_of.clone();
    let feed = axum::Router::new().route(
        "/usd.json",
        axum::routing::get(move || {
            let served = served.clone();
            async move { axum::Json(json!({"timestamp": served.load(Ordering::SeqCst), "rates": {"GBP": "1.25"}})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let feed_url = format!("http://{}/usd.json", listener.local_addr().unwrap());
    let feed_server = tokio::spawn(async move { axum::serve(listener, feed).await.unwrap() });

    let app = TestApp::spawn_with(&db, |c| c.settings.pricing.feed_url = Some(feed_url.clone())).await;
    let (_, key) = app.merchant("Feed", ALL).await;
    // Before the first refresh the feed's currencies are unavailable (503), not unknown (400).
    assert_error(
        app.create_invoice(&key, json!({"amount": "10", "currency": "GBP"})).await,
        503,
        "rate_unavailable",
        None,
    )
    .await;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let refresher = tokio::spawn(depositd_api::price_feed::run(
        app.state.pricer.clone(),
        feed_url,
        std::time::Duration::from_millis(50),
        shutdown.clone(),
    ));
    let priced = loop {
        let response = app.create_invoice(&key, json!({"amount": "10", "currency": "GBP"})).await;
        if response.status() == 201 {
            break response.json::<Value>().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(priced["pay"]["amount"], "12.5", "10 GBP at 1.25 USD");
    assert_eq!(priced["conversion_rate"], "0.8");

    // The feed reports rates older than max_rate_age_secs: refused, not guessed.
    as_of.store(depositd_core::time::now_ms() / 1000 - 10_000, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_error(
        app.create_invoice(&key, json!({"amount": "10", "currency": "GBP"})).await,
        503,
        "rate_unavailable",
        None,
    )
    .await;
    // Static-table currencies are unaffected.
    assert_eq!(app.create_invoice(&key, json!({"amount": "10", "currency": "EUR"})).await.status(), 201);

    // The feed goes away: the last (stale) snapshot stays refused.
    feed_server.abort();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_error(
        app.create_invoice(&key, json!({"amount": "10", "currency": "GBP"})).await,
        503,
        "rate_unavailable",
        None,
    )
    .await;
    shutdown.cancel();
    refresher.await.unwrap();
}

async fn merchant_amount_bounds_replace_the_defaults(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let mut conn = app.store.conn().await.unwrap();
    let merchant = depositd_core::store::merchants::insert(
        &mut conn,
        &depositd_core::store::merchants::NewMerchant {
            name: "Bounded".into(),
            company_name: None,
            fee_percent: rust_decimal::Decimal::ZERO,
            min_invoice_amount: Some("5".parse().unwrap()),
            max_invoice_amount: Some("50".parse().unwrap()),
        },
    )
    .await
    .unwrap();
    let (_, key) =
        api_keys::create(&mut conn, merchant.id, depositd_core::api_key::KeyMode::Test, ALL, None).await.unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    for amount in ["4.99", "50.01"] {
        let error = assert_error(
            app.create_invoice(&key, json!({"amount": amount})).await,
            400,
            "amount_out_of_range",
            Some("amount"),
        )
        .await;
        assert!(error["error"]["message"].as_str().unwrap().contains("between 5 and 50"), "{error}");
    }
    let ok: Value = app.create_invoice(&key, json!({"amount": "50"})).await.json().await.unwrap();
    assert_eq!(
        (ok["fee"].as_str(), ok["merchant_amount"].as_str()),
        (Some("0"), Some("50")),
        "a 0% fee merchant keeps everything"
    );
}

async fn a_payment_update_never_overwrites_a_concurrent_change(db: TestDb) {
    use depositd_core::invoice::InvoiceStatus;
    use depositd_core::store::{StoreError, invoices};

    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Racer", ALL).await;
    let created: Value = app.create_invoice(&key, json!({"amount": "5", "expires_in": 1})).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().parse().unwrap();
    let mut conn = app.store.conn().await.unwrap();
    // The watcher read the invoice while it was pending...
    let read = invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap();
    // ...then the expiry task expired it...
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(depositd_api::expiry::expire_once(&app.state).await.unwrap(), 1);
    // ...so the watcher's write based on its stale read is refused, not applied.
    let mut stale = read.clone();
    stale.status = InvoiceStatus::Processing;
    let error = invoices::update_payment_state(&mut conn, &read, &stale).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert_eq!(invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap().status, InvoiceStatus::Expired);
}

async fn an_asset_fee_schedule_prices_new_invoices_only(db: TestDb) {
    use depositd_core::store::merchants::{self, AssetFee};
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Fee Shop", ALL).await;
    let before: Value = app.create_invoice(&key, json!({"amount": "10"})).await.json().await.unwrap();
    assert_eq!((before["fee"].as_str(), before["merchant_amount"].as_str()), (Some("0.1"), Some("9.9")));

    // 2.5% + 0.30 USDC from now on; ETH keeps the merchant's 1%.
    let mut conn = app.store.conn().await.unwrap();
    let fee = AssetFee { asset: "USDC".into(), percent: "2.5".parse().unwrap(), fixed: "0.30".parse().unwrap() };
    merchants::set_asset_fee(&mut conn, merchant.id, &fee).await.unwrap();
    let after: Value = app.create_invoice(&key, json!({"amount": "10"})).await.json().await.unwrap();
    assert_eq!((after["fee"].as_str(), after["merchant_amount"].as_str()), (Some("0.55"), Some("9.45")));
    let eth: Value = app.create_invoice(&key, json!({"amount": "30", "asset": "ETH"})).await.json().await.unwrap();
    assert_eq!(eth["fee"], "0.0001", "{eth}");
    // The earlier invoice keeps the schedule it was created under.
    let id = before["id"].as_str().unwrap();
    let stored =
        depositd_core::store::invoices::get(&mut conn, merchant.id, id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.fee_schedule.percent.to_string(), "1");
    assert!(stored.fee_schedule.fixed.is_zero());
    let (_, again) = app.get_json(&key, &format!("/api/v1/invoices/{id}")).await;
    assert_eq!(again["fee"], "0.1");

    // An amount the fee would swallow is refused, naming the amount.
    let error = assert_error(
        app.create_invoice(&key, json!({"amount": "0.30"})).await,
        400,
        "amount_out_of_range",
        Some("amount"),
    )
    .await;
    assert!(error["error"]["message"].as_str().unwrap().contains("does not cover the fee"), "{error}");
}

/// `depositd_invoices` is counted from the store for `/metrics`, one count at a time, and a scrape
/// never waits long for it (`depositd_api::invoice_counts`): with every pooled connection taken,
/// `/metrics` still answers, with the gauge as it stood, and the count catches up once the
/// database is free again. (Before, a scrape waited for a connection and then for a count of the
/// whole table: at 10,000,000 invoices, longer than a scraper waits.)
async fn the_invoice_gauge_never_holds_up_a_scrape(db: TestDb) {
    use std::time::{Duration, Instant};

    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Gauge Shop", ALL).await;
    for _ in 0..2 {
        assert_eq!(app.create_invoice(&key, json!({"amount": "10"})).await.status(), 201);
    }
    let scrape = || async {
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let two = r#"depositd_invoices{status="pending"} 2"#;
    let metrics = scrape().await;
    assert!(metrics.contains(two), "{metrics}");
    // Every status is there, 0 when no invoice has it.
    assert!(metrics.contains(r#"depositd_invoices{status="refunded"} 0"#), "{metrics}");

    // Every connection of the pool taken: the count waits for one (up to the pool's 10 s), the
    // scrapes do not. (The pause lets the last count's rest, ten times its query, run out.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..app.store.pool().options().get_max_connections() {
        held.push(app.store.conn().await.unwrap());
    }
    let mut waits = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let metrics = scrape().await;
        waits.push(started.elapsed());
        assert!(metrics.contains(two), "the gauge as it stood: {metrics}");
    }
    // The first started a count and waited for it as long as a scrape may; the count still
    // waiting, the others started none and answered at once.
    assert!(waits[0] >= depositd_api::invoice_counts::WAIT, "{waits:?}");
    let total: Duration = waits.iter().sum();
    assert!(total < Duration::from_secs(5), "three scrapes waited {waits:?} for a database that was busy");
    drop(held);

    // Free again: the count that waited finishes, and a later one sees the new invoice.
    assert_eq!(app.create_invoice(&key, json!({"amount": "10"})).await.status(), 201);
    let three = r#"depositd_invoices{status="pending"} 3"#;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = scrape().await;
        if metrics.contains(three) {
            break;
        }
        assert!(Instant::now() < deadline, "the gauge never caught up: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
