//! The reference docs' integrations, unchanged (`../shared/seeds/`): each seed's own example
//! request goes to the real daemon (API, watcher, webhooks) on anvil, on both backends; every
//! response field the seed names is asserted, the invoice is paid on chain, and the status words
//! of that seed's view and the webhook's `data` are the seed's. Then every error each seed lists,
//! case by case, with its status code and stable `code`.
//!
//! Adapted from the seeds only where a test must: callback URLs point at the local receiver
//! (a test cannot receive at yoursite.com), and seed 004's example, which has no JSON in the
//! text, is built from its field table (its "10000 = 0.50" contradicts "amount in cents").

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use depositd::daemon::Daemon;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::merchant::MerchantStatus;
use depositd_core::store::{Store, api_keys, merchants};
use depositd_testkit::chain::TestChain;
use depositd_testkit::db::merchant_with_key;
use depositd_testkit::webhooks::{Hit, Receiver};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, TestDb, assert_error, both_backends, test_config, use_test_chain};
use crate::webhooks::verify_official;

both_backends!(
    seed_001_example_to_the_letter_is_paid_and_announced,
    seed_003_example_is_paid_and_reported_in_its_words,
    seed_004_example_is_paid_and_reported_in_its_words,
    seed_001_errors_case_by_case,
    seed_003_errors_case_by_case,
    seed_004_errors_case_by_case,
    compatibility_views_read_each_others_invoices,
);

/// The fields seed 003's response lists.
const SEED_003_FIELDS: &[&str] = &[
    "amount",
    "callback_url",
    "conversion_rate",
    "created_at",
    "currency",
    "customer_id",
    "expires_at",
    "external_id",
    "fail_url",
    "finished_at",
    "invoice_id",
    "merchant_usdt",
    "payment_link",
    "purpose",
    "status",
    "success_url",
];

/// The fields seed 004's response table lists.
const SEED_004_FIELDS: &[&str] = &[
    "amount",
    "checkout_url",
    "created_at",
    "currency",
    "customer_email",
    "customer_name",
    "id",
    "metadata",
    "status",
];

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().expect("an object").keys().map(String::as_str).collect()
}

/// ISO 8601 UTC at second precision, as seeds 003 and 004 write it: `2026-02-25T12:00:00Z`.
fn epoch_of(iso: &Value) -> i64 {
    let text = iso.as_str().unwrap_or_else(|| panic!("an ISO 8601 string, not {iso}"));
    assert!(text.len() == 20 && text.ends_with('Z') && text.as_bytes()[10] == b'T', "ISO 8601 UTC: {text}");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .unix_timestamp()
}

/// The whole daemon on anvil (USDC and USDT), a merchant with a 1% fee, and a webhook endpoint
/// at the receiver's `/hooks`.
struct Seeded {
    chain: TestChain,
    addr: SocketAddr,
    key: String,
    client: reqwest::Client,
    receiver: Receiver,
    secret: String,
    public_url: String,
    shutdown: CancellationToken,
}

impl Seeded {
    async fn start(db: &TestDb, default_asset: &str) -> Seeded {
        let chain = TestChain::start(&[("USD Coin", "USDC"), ("Tether USD", "USDT")]).await.expect("anvil starts");
        let store = db.store().await;
        let (_, key) = merchant_with_key(&store, "Seed Shop", Decimal::ONE, &Scope::ALL).await.unwrap();
        store.close().await;
        let mut config = test_config(db);
        let tokens = [("USDC", chain.tokens[0]), ("USDT", chain.tokens[1])];
        use_test_chain(&mut config.chains[0], &chain, 2, &tokens);
        config.settings.chains.default_asset = default_asset.into();
        config.settings.api.listen = "127.0.0.1:0".parse().unwrap();
        config.settings.webhooks.allow_http = true;
        config.settings.webhooks.allow_private_targets = true;
        config.settings.invoices.allow_http_urls = true;
        let public_url = config.settings.api.public_url.clone();
        let daemon = Daemon::build(config, &[]).await.expect("the daemon builds");
        let addr = daemon.api_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(daemon.run(shutdown.clone()));
        let client = reqwest::Client::new();
        let receiver = Receiver::start().await;
        let endpoint: Value = client
            .post(format!("http://{addr}/api/v1/webhook-endpoints"))
            .header("x-api-key", key.expose_secret())
            .json(&json!({"url": receiver.url("/hooks")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let secret = endpoint["secret"].as_str().unwrap().to_owned();
        Seeded { chain, addr, key: key.expose_secret().to_owned(), client, receiver, secret, public_url, shutdown }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).header("x-api-key", &self.key).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Pays invoice `id` in full on chain (reading where and how much from seed 001's view, which
    /// every invoice has) and waits until the daemon says it is paid.
    async fn pay(&self, id: &str) -> Value {
        let (_, invoice) = self.get(&format!("/api/v1/invoices/{id}")).await;
        let token: Address = invoice["pay"]["token_address"].as_str().unwrap().parse().unwrap();
        let amount: u64 = invoice["pay"]["amount_base_units"].as_str().unwrap().parse().unwrap();
        self.chain.pay_token(token, invoice["pay"]["address"].as_str().unwrap(), amount).await;
        self.chain.mine(2).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, current) = self.get(&format!("/api/v1/invoices/{id}")).await;
            if current["status"] == "paid" {
                return current;
            }
            assert!(Instant::now() < deadline, "invoice {id} was not paid within 60 s: {current}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for the delivery of `event_type` about resource `id` at `path`.
    async fn delivered(&self, path: &str, event_type: &str, id: &str) -> Hit {
        let matches = |h: &Hit| {
            h.path == path
                && h.event_type() == event_type
                && [&h.event()["data"]["id"], &h.event()["data"]["invoice_id"]].iter().any(|v| v.as_str() == Some(id))
        };
        let arrived = self.receiver.wait_until(Duration::from_secs(30), |hits| hits.iter().any(matches)).await;
        assert!(arrived, "{event_type} about {id} never reached {path}: {:?}", self.receiver.hits());
        self.receiver.hits().into_iter().find(matches).unwrap()
    }
}

impl Drop for Seeded {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn seed_001_example_to_the_letter_is_paid_and_announced(db: TestDb) {
    let env = Seeded::start(&db, "USDC").await;
    // Seed 001's fields with its own examples; `amount` a JSON number in USD, as 001 says.
    let customer = "c".repeat(255);
    let body = json!({
        "amount": 5000,
        "description": "Premium Plan Subscription",
        "customer_id": customer,
        "metadata": {"order_id": "ORD-123", "items": [{"id": "SKU-1", "qty": 2}]},
        "expires_in": 43200000,
        "title": "Monthly Subscription - Premium Plan",
        "footer": "Thank you for your business!",
        "customer_email": "customer@example.com",
        "return_url": "https://merchant.example.com/checkout/complete",
        "use_return_url": true,
        "questions": ["Name on the receipt?"]
    });
    let response = env
        .client
        .post(env.url("/api/v1/invoices"))
        .header("x-api-key", &env.key)
        .header("Idempotency-Key", "123e4567-e89b-42d3-a456-556642440000")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let invoice: Value = response.json().await.unwrap();
    // {"amount": 5000} on seed 001's route is 5,000 USD (seed 004's route would read 50.00).
    assert_eq!((invoice["amount"].as_str(), invoice["currency"].as_str()), (Some("5000"), Some("USD")));
    assert_eq!(invoice["pay"]["amount"], "5000");
    assert_eq!(invoice["metadata"], body["metadata"], "structured metadata is kept as given");
    assert_eq!(invoice["customer_id"], customer);
    for field in ["id", "checkout_url", "expires_at", "session_token", "signature", "payment_session_headers"] {
        assert!(!invoice[field].is_null(), "seed 001's response names {field}: {invoice}");
    }
    assert_eq!(invoice["expires_at"].as_i64().unwrap() - invoice["created_at"].as_i64().unwrap(), 43200);
    assert_eq!(
        invoice["payment_session_headers"],
        json!({"x-session-token": invoice["session_token"], "x-signature": invoice["signature"]})
    );
    let id = invoice["id"].as_str().unwrap();

    let paid = env.pay(id).await;
    assert_eq!(paid["amount_paid"], "5000");
    let hit = env.delivered("/hooks", "invoice.paid", id).await;
    let data = hit.event()["data"].clone();
    assert_eq!((data["object"].as_str(), data["status"].as_str()), (Some("invoice"), Some("paid")));
    assert_eq!(data["metadata"], body["metadata"]);
    assert!(verify_official(&env.secret, &[hit]).contains(&"invoice.paid".to_owned()));
}

async fn seed_003_example_is_paid_and_reported_in_its_words(db: TestDb) {
    let env = Seeded::start(&db, "USDT").await;
    let example = json!({
        "amount": "1500.00",
        "callback_url": env.receiver.url("/webhooks/payment"),
        "currency_code": "UAH",
        "customer_id": "user_12345",
        "external_id": "order-2026-0001",
        "fail_url": "https://yoursite.com/payment/failed",
        "purpose": "Payment for Premium subscription",
        "success_url": "https://yoursite.com/payment/success"
    });
    let response = env
        .client
        .post(env.url("/api/v1/create-invoice"))
        .header("Content-Type", "application/json")
        .header("X-Api-Key", &env.key)
        .body(example.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    assert_eq!(keys(&created), SEED_003_FIELDS.iter().copied().collect(), "exactly seed 003's fields: {created}");
    let id = created["invoice_id"].as_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&id).expect("invoice_id is a UUID");
    for (field, expected) in [
        ("external_id", "order-2026-0001"),
        ("amount", "1500.00"),
        ("currency", "UAH"),
        ("status", "pending"),
        ("customer_id", "user_12345"),
        ("purpose", "Payment for Premium subscription"),
        ("success_url", "https://yoursite.com/payment/success"),
        ("fail_url", "https://yoursite.com/payment/failed"),
    ] {
        assert_eq!(created[field], expected, "{field}: {created}");
    }
    assert_eq!(created["callback_url"], example["callback_url"]);
    assert_eq!(created["payment_link"], format!("{}/checkout/{id}", env.public_url.trim_end_matches('/')));
    // 1500 UAH at 0.024 USD is 36 USDT, so 41.67 UAH per USDT; the merchant gets 36 less 1%.
    let rate: Decimal = created["conversion_rate"].as_str().unwrap().parse().unwrap();
    assert_eq!(rate.round_dp(2), "41.67".parse().unwrap());
    let merchant_usdt: Decimal = created["merchant_usdt"].as_str().unwrap().parse().unwrap();
    assert_eq!(merchant_usdt, "35.64".parse().unwrap());
    let created_at = epoch_of(&created["created_at"]);
    assert_eq!(epoch_of(&created["expires_at"]) - created_at, 12 * 3600, "the default lifetime");
    assert!(created["finished_at"].is_null());

    // The same invoice through seed 001's read, and through seed 003's status read.
    let (status, full) = env.get(&format!("/api/v1/invoices/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!((full["amount"].as_str(), full["pay"]["asset"].as_str()), (Some("1500"), Some("USDT")));
    assert_eq!(full["created_at"].as_i64(), Some(created_at));
    assert_eq!(env.get(&format!("/api/v1/invoice-status/{id}")).await, (200, created.clone()));

    env.pay(&id).await;
    let (_, status) = env.get(&format!("/api/v1/invoice-status/{id}")).await;
    assert_eq!(status["status"], "success");
    let finished = epoch_of(&status["finished_at"]);
    assert!(finished >= created_at, "finished_at after created_at");

    // The webhooks carry seed 003's view, to the callback URL and to the endpoint, signed as ever.
    for path in ["/webhooks/payment", "/hooks"] {
        let hit = env.delivered(path, "invoice.paid", &id).await;
        let data = &hit.event()["data"];
        assert_eq!(keys(data), SEED_003_FIELDS.iter().copied().collect(), "{data}");
        assert_eq!((data["status"].as_str(), data["invoice_id"].as_str()), (Some("success"), Some(id.as_str())));
        assert_eq!(data["finished_at"], status["finished_at"]);
    }
    let created_hook = env.delivered("/hooks", "invoice.created", &id).await;
    assert_eq!(created_hook.event()["data"]["status"], "pending");
    let paid_hook = env.delivered("/hooks", "invoice.paid", &id).await;
    assert_eq!(verify_official(&env.secret, &[paid_hook]), ["invoice.paid"]);
}

async fn seed_004_example_is_paid_and_reported_in_its_words(db: TestDb) {
    let env = Seeded::start(&db, "USDC").await;
    let example = json!({
        "amount": 5000,
        "currency": "usd",
        "return_url": "https://yourstore.com/order/complete",
        "customer_email": "customer@example.com",
        "customer_name": "John Doe",
        "metadata": {"order_id": "12345", "product": "Premium Plan", "quantity": 2, "gift": false}
    });
    let send = || {
        env.client
            .post(env.url("/api/v1/hosted-payments"))
            .header("Authorization", format!("Bearer {}", env.key))
            .header("Idempotency-Key", "order-12345-attempt")
            .json(&example)
            .send()
    };
    let response = send().await.unwrap();
    assert_eq!(response.status(), 200, "seed 004 answers 200 OK");
    let created: Value = response.json().await.unwrap();
    assert_eq!(keys(&created), SEED_004_FIELDS.iter().copied().collect(), "exactly seed 004's fields: {created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["amount"], 5000, "cents, an integer");
    assert_eq!(created["currency"], "usd");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["checkout_url"], format!("{}/checkout/{id}", env.public_url.trim_end_matches('/')));
    assert_eq!(created["customer_email"], "customer@example.com");
    assert_eq!(created["customer_name"], "John Doe");
    assert_eq!(created["metadata"], example["metadata"]);
    epoch_of(&created["created_at"]);

    // A retry with the same Idempotency-Key is the same payment.
    let retried = send().await.unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.json::<Value>().await.unwrap(), created);

    // 5000 cents are 50.00 USD: seed 001's read of the same invoice.
    let (_, full) = env.get(&format!("/api/v1/invoices/{id}")).await;
    assert_eq!((full["amount"].as_str(), full["currency"].as_str()), (Some("50"), Some("USD")));
    assert_eq!((full["pay"]["amount"].as_str(), full["pay"]["asset"].as_str()), (Some("50"), Some("USDC")));
    assert_eq!(full["customer_name"], "John Doe");

    env.pay(&id).await;
    let response = env
        .client
        .get(env.url(&format!("/api/v1/hosted-payments/{id}")))
        .header("Authorization", format!("Bearer {}", env.key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let paid: Value = response.json().await.unwrap();
    assert_eq!(paid["status"], "completed");
    assert_eq!(paid["amount"], 5000);

    let hit = env.delivered("/hooks", "invoice.paid", &id).await;
    let data = &hit.event()["data"];
    assert_eq!(keys(data), SEED_004_FIELDS.iter().copied().collect(), "{data}");
    assert_eq!((data["status"].as_str(), data["amount"].as_i64()), (Some("completed"), Some(5000)));
    assert_eq!(data["metadata"], example["metadata"]);
    assert_eq!(verify_official(&env.secret, &[hit]), ["invoice.paid"]);
}

async fn post(app: &TestApp, path: &str, auth: Option<(&str, String)>, body: &Value) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(body);
    if let Some((header, value)) = auth {
        request = request.header(header, value);
    }
    request.send().await.unwrap()
}

/// A key of `merchant`'s and its id (to revoke it).
async fn key_of(store: &Store, merchant_id: uuid::Uuid) -> (uuid::Uuid, String) {
    let mut conn = store.conn().await.unwrap();
    let (key, secret) = api_keys::create(&mut conn, merchant_id, KeyMode::Test, &Scope::ALL, None).await.unwrap();
    (key.id, secret.expose_secret().to_owned())
}

async fn seed_001_errors_case_by_case(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Seed 001 Shop", &Scope::ALL).await;
    let auth = || Some(("x-api-key", key.clone()));
    // 400: missing or invalid amount, invalid metadata.
    for (body, code, param) in [
        (json!({}), "parameter_missing", "amount"),
        (json!({"amount": "abc"}), "invalid_amount", "amount"),
        (json!({"amount": "0.001"}), "amount_out_of_range", "amount"),
        (json!({"amount": "10", "metadata": ["not", "an", "object"]}), "invalid_metadata", "metadata"),
        (json!({"amount": "10", "metadata": {"deep": [[[[[[[[1]]]]]]]]}}), "invalid_metadata", "metadata"),
        (json!({"amount": "10", "metadata": {"blob": "x".repeat(5200)}}), "invalid_metadata", "metadata"),
        (json!({"amount": "10", "customer_id": "c".repeat(256)}), "invalid_parameter", "customer_id"),
    ] {
        assert_error(post(&app, "/api/v1/invoices", auth(), &body).await, 400, code, Some(param)).await;
    }
    // 401: missing or invalid merchant auth.
    assert_error(post(&app, "/api/v1/invoices", None, &json!({"amount": "10"})).await, 401, "missing_api_key", None)
        .await;
    let wrong = Some(("Authorization", "Bearer dk_test_notakey".to_owned()));
    assert_error(post(&app, "/api/v1/invoices", wrong, &json!({"amount": "10"})).await, 401, "invalid_api_key", None)
        .await;
    // 409: the same Idempotency-Key with another request.
    let with_key = |amount: &str| {
        app.client
            .post(app.url("/api/v1/invoices"))
            .header("x-api-key", &key)
            .header("Idempotency-Key", "123e4567-e89b-42d3-a456-556642440000")
            .json(&json!({"amount": amount}))
            .send()
    };
    assert_eq!(with_key("10").await.unwrap().status(), 201);
    assert_error(with_key("11").await.unwrap(), 409, "idempotency_conflict", Some("Idempotency-Key")).await;
}

async fn seed_003_errors_case_by_case(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Seed 003 Shop", &Scope::ALL).await;
    let valid = json!({"amount": "1500.00", "currency_code": "UAH", "customer_id": "user_1", "external_id": "order-1"});
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let auth = || Some(("X-Api-Key", key.clone()));
    for (body, code, param) in [
        (without("amount"), "parameter_missing", "amount"),
        (without("currency_code"), "parameter_missing", "currency_code"),
        (without("customer_id"), "parameter_missing", "customer_id"),
        (without("external_id"), "parameter_missing", "external_id"),
        (with("amount", json!(1500)), "invalid_parameter", "amount"),
        (with("amount", json!("15,00")), "invalid_amount", "amount"),
        (with("amount", json!(" 1500.00")), "invalid_amount", "amount"),
        (with("amount", json!("01500")), "invalid_amount", "amount"),
        (with("amount", json!("1500.")), "invalid_amount", "amount"),
        (with("currency_code", json!("uah")), "invalid_currency_code", "currency_code"),
        (with("currency_code", json!("UAHX")), "invalid_currency_code", "currency_code"),
        (with("currency_code", json!("XYZ")), "unsupported_currency", "currency_code"),
        (with("customer_id", json!("c".repeat(129))), "invalid_parameter", "customer_id"),
        (with("external_id", json!("e".repeat(129))), "invalid_parameter", "external_id"),
        (with("callback_url", json!("http://10.0.0.1/hook")), "invalid_url", "callback_url"),
        (with("success_url", json!("not a url")), "invalid_url", "success_url"),
        (with("currency", json!("UAH")), "unknown_parameter", "currency"),
    ] {
        assert_error(post(&app, "/api/v1/create-invoice", auth(), &body).await, 400, code, Some(param)).await;
    }
    let first: Value = post(&app, "/api/v1/create-invoice", auth(), &valid).await.json().await.unwrap();
    // external_id is unique per merchant; the 409 names the invoice that has it (seed 003 has no
    // Idempotency-Key: a merchant whose first response was lost finds its invoice this way).
    let taken = assert_error(
        post(&app, "/api/v1/create-invoice", auth(), &valid).await,
        409,
        "external_id_conflict",
        Some("external_id"),
    )
    .await;
    let message = taken["error"]["message"].as_str().unwrap();
    assert!(message.contains(first["invoice_id"].as_str().unwrap()), "{message}");
    assert_error(
        app.client.get(app.url("/api/v1/invoice-status/not-a-uuid")).header("x-api-key", &key).send().await.unwrap(),
        400,
        "invalid_parameter",
        Some("invoice_id"),
    )
    .await;
    assert_error(post(&app, "/api/v1/create-invoice", None, &valid).await, 401, "missing_api_key", None).await;
    let (status, _) = app.get_json(&key, "/api/v1/invoice-status/0190b5a6-0000-7000-8000-000000000000").await;
    assert_eq!(status, 404);
}

async fn seed_004_errors_case_by_case(db: TestDb) {
    // A per-key limit low enough to reach: seed 004's 429.
    let app = TestApp::spawn_with(&db, |config| {
        config.settings.api.rate_limit_per_second = 1;
        config.settings.api.rate_limit_burst = 40;
    })
    .await;
    let (merchant, key) = app.merchant("Seed 004 Shop", &Scope::ALL).await;
    let bearer = |key: &str| Some(("Authorization", format!("Bearer {key}")));
    let valid = json!({"amount": 5000, "currency": "usd", "return_url": "https://yourstore.com/done"});
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let many_keys: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    // 400: each of seed 004's cases.
    for (body, code, param) in [
        (with("amount", json!(49)), "amount_too_small", "amount"),
        (with("amount", json!(0)), "amount_too_small", "amount"),
        (with("amount", json!(50.5)), "invalid_parameter", "amount"),
        (with("amount", json!("5000")), "invalid_parameter", "amount"),
        (with("currency", json!("eur")), "unsupported_currency", "currency"),
        (with("currency", json!("USD")), "unsupported_currency", "currency"),
        (without("amount"), "parameter_missing", "amount"),
        (without("currency"), "parameter_missing", "currency"),
        (without("return_url"), "parameter_missing", "return_url"),
        (with("return_url", json!("not a url")), "invalid_url", "return_url"),
        (with("return_url", json!("http://yourstore.com/done")), "invalid_url", "return_url"),
        (with("return_url", json!("ftp://yourstore.com/done")), "invalid_url", "return_url"),
        (with("metadata", Value::Object(many_keys)), "invalid_metadata", "metadata"),
        (with("metadata", json!({"nested": {"no": 1}})), "invalid_metadata", "metadata"),
        (with("customer_email", json!("nobody")), "invalid_parameter", "customer_email"),
    ] {
        assert_error(post(&app, "/api/v1/hosted-payments", bearer(&key), &body).await, 400, code, Some(param)).await;
    }
    // Cents past the server's bound, in cents.
    let too_much = assert_error(
        post(&app, "/api/v1/hosted-payments", bearer(&key), &with("amount", json!(10_000_010_000_u64))).await,
        400,
        "amount_out_of_range",
        Some("amount"),
    )
    .await;
    assert!(too_much["error"]["message"].as_str().unwrap().contains("10000009999"), "{too_much}");
    assert_eq!(post(&app, "/api/v1/hosted-payments", bearer(&key), &valid).await.status(), 200);
    // Inside the bounds but not covering a fixed fee: the fee's own message, not the bounds'.
    let fee = merchants::AssetFee { asset: "USDC".into(), percent: Decimal::ZERO, fixed: Decimal::ONE };
    merchants::set_asset_fee(&mut app.store.conn().await.unwrap(), merchant.id, &fee).await.unwrap();
    let short = assert_error(
        post(&app, "/api/v1/hosted-payments", bearer(&key), &with("amount", json!(60))).await,
        400,
        "amount_out_of_range",
        Some("amount"),
    )
    .await;
    assert!(short["error"]["message"].as_str().unwrap().contains("fee"), "{short}");
    // JSON Schema's integer: 5000.0 is 5000 cents.
    let whole: Value =
        post(&app, "/api/v1/hosted-payments", bearer(&key), &with("amount", json!(5000.0))).await.json().await.unwrap();
    assert_eq!(whole["amount"], 5000);

    // 401: no key, a malformed one, an unknown one, a revoked one, an inactive shop.
    let path = "/api/v1/hosted-payments";
    assert_error(post(&app, path, None, &valid).await, 401, "missing_api_key", None).await;
    let basic = Some(("Authorization", "Basic dXNlcjpwYXNz".to_owned()));
    assert_error(post(&app, path, basic, &valid).await, 401, "invalid_api_key", None).await;
    assert_error(post(&app, path, bearer("dk_test_0000"), &valid).await, 401, "invalid_api_key", None).await;
    let (revoked_id, revoked) = key_of(&app.store, merchant.id).await;
    api_keys::revoke(&mut app.store.conn().await.unwrap(), revoked_id).await.unwrap();
    assert_error(post(&app, path, bearer(&revoked), &valid).await, 401, "api_key_revoked", None).await;
    merchants::set_status(&mut app.store.conn().await.unwrap(), merchant.id, MerchantStatus::Disabled).await.unwrap();
    assert_error(post(&app, path, bearer(&key), &valid).await, 401, "merchant_inactive", None).await;
    merchants::set_status(&mut app.store.conn().await.unwrap(), merchant.id, MerchantStatus::Active).await.unwrap();

    // 429: past the key's burst.
    let mut limited = None;
    for _ in 0..60 {
        let response = post(&app, path, bearer(&key), &valid).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let limited = limited.expect("the per-key limit answers 429 past its burst");
    assert!(limited.headers().contains_key("retry-after"));
    assert_error(limited, 429, "rate_limited", None).await;
}

async fn compatibility_views_read_each_others_invoices(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Views Shop", &Scope::ALL).await;
    // Seed 001's invoice through seed 003's and 004's reads.
    let invoice = app.created_invoice(&key, json!({"amount": "12.34", "external_id": "o-1"})).await;
    let id = invoice["id"].as_str().unwrap();
    let (status, seen) = app.get_json(&key, &format!("/api/v1/invoice-status/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!((seen["invoice_id"].as_str(), seen["amount"].as_str()), (Some(id), Some("12.34")));
    assert_eq!((seen["external_id"].as_str(), seen["status"].as_str()), (Some("o-1"), Some("pending")));
    let (status, seen) = app.get_json(&key, &format!("/api/v1/hosted-payments/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!((seen["amount"].as_i64(), seen["currency"].as_str()), (Some(1234), Some("usd")));
    // A price that is not whole cents has no seed 004 view.
    let odd = app.created_invoice(&key, json!({"amount": "1.005"})).await;
    let response = app
        .client
        .get(app.url(&format!("/api/v1/hosted-payments/{}", odd["id"].as_str().unwrap())))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "not_representable_in_cents", None).await;

    // Cancelled: seed 003 says cancelled, seed 004 failed.
    let bearer = Some(("Authorization", format!("Bearer {key}")));
    let payment: Value = post(
        &app,
        "/api/v1/hosted-payments",
        bearer,
        &json!({"amount": 990, "currency": "usd", "return_url": "https://shop.example.com/r"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let payment_id = payment["id"].as_str().unwrap();
    let cancel = app
        .client
        .post(app.url(&format!("/api/v1/invoices/{payment_id}/cancel")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let (_, seen) = app.get_json(&key, &format!("/api/v1/hosted-payments/{payment_id}")).await;
    assert_eq!(seen["status"], "failed");
    let (_, seen) = app.get_json(&key, &format!("/api/v1/invoice-status/{payment_id}")).await;
    assert_eq!(seen["status"], "cancelled");
    assert!(seen["finished_at"].is_null(), "seed 003: null until paid: {seen}");
    let (_, seen) = app.get_json(&key, &format!("/api/v1/invoices/{payment_id}")).await;
    assert_eq!((seen["status"].as_str(), seen["amount"].as_str()), (Some("cancelled"), Some("9.9")));
}
