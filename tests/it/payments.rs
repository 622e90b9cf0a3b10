//! The payer's session API (seed 001): what a browser may see with the invoice's session token
//! and signature, and nothing more; one 401 for every wrong session; answers to the questions.

use depositd_core::api_key::Scope;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, assert_error, both_backends};

both_backends!(
    the_payer_sees_what_paying_needs_and_nothing_else,
    answers_are_checked_against_the_questions,
    cors_only_for_the_merchants_checkout_origins,
);

async fn session_get(app: &TestApp, id: &str, token: Option<&str>, signature: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(&format!("/api/v1/payments/{id}")));
    if let Some(token) = token {
        request = request.header("x-session-token", token);
    }
    if let Some(signature) = signature {
        request = request.header("x-signature", signature);
    }
    request.send().await.unwrap()
}

fn session(invoice: &Value) -> (&str, &str, &str) {
    (
        invoice["id"].as_str().unwrap(),
        invoice["session_token"].as_str().unwrap(),
        invoice["signature"].as_str().unwrap(),
    )
}

async fn the_payer_sees_what_paying_needs_and_nothing_else(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Payer Shop", &Scope::ALL).await;
    let create = |body: Value| {
        let app = &app;
        let key = key.clone();
        async move { app.create_invoice(&key, body).await.json::<Value>().await.unwrap() }
    };
    let invoice = create(json!({"amount": "12.5", "currency": "EUR", "description": "Two tickets",
        "customer_id": "cust-secret-42", "customer_email": "payer@example.com", "external_id": "order-77",
        "metadata": {"internal_note": "vip-discount-code"}, "callback_url": "https://shop.example.com/cb",
        "return_url": "https://shop.example.com/done", "fail_url": "https://shop.example.com/failed"}))
    .await;
    let (id, token, signature) = session(&invoice);

    let response = session_get(&app, id, Some(token), Some(signature)).await;
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["invoice_id"], invoice["id"]);
    assert_eq!(
        (seen["status"].as_str(), seen["amount"].as_str(), seen["currency"].as_str()),
        (Some("pending"), Some("12.5"), Some("EUR"))
    );
    assert_eq!(seen["pay"], invoice["pay"], "the same pay instructions as the merchant's invoice");
    assert_eq!(seen["amount_due"], invoice["amount_due"]);
    assert_eq!(
        (seen["title"].as_str(), seen["footer"].as_str()),
        (Some("Payer Shop"), Some("Payer Shop")),
        "company name by default"
    );
    assert_eq!(seen["description"], "Two tickets");
    assert!(seen["return_url"].is_null() && seen["fail_url"].is_null(), "redirects only once paid or expired");
    let text = seen.to_string();
    for hidden in ["cust-secret-42", "payer@example.com", "order-77", "vip-discount-code", "shop.example.com/cb"] {
        assert!(!text.contains(hidden), "the payer must not see {hidden:?}: {text}");
    }
    // Field names, not text: a hex address or hash may well spell "fee".
    let names = field_names(&seen);
    for hidden in ["merchant", "fee", "metadata", "session_token", "customer", "external_id", "callback"] {
        assert!(!names.iter().any(|n| n.contains(hidden)), "the payer must not see a {hidden:?} field: {text}");
    }

    // Every wrong session is the same 401.
    let other = create(json!({"amount": "3"})).await;
    let (other_id, other_token, other_signature) = session(&other);
    for (id, token, signature) in [
        (id, None, None),
        (id, Some(token), None),
        (id, None, Some(signature)),
        (id, Some(token), Some(other_signature)),
        (id, Some(other_token), Some(other_signature)),
        (other_id, Some(token), Some(signature)),
        (id, Some(token), Some("not-hex")),
        ("not-a-uuid", Some(token), Some(signature)),
        ("0190b5a6-0000-7000-8000-000000000000", Some(token), Some(signature)),
    ] {
        assert_error(session_get(&app, id, token, signature).await, 401, "invalid_session", None).await;
    }
    assert_eq!(session_get(&app, other_id, Some(other_token), Some(other_signature)).await.status(), 200);
}

async fn answers_are_checked_against_the_questions(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Quiz Shop", &Scope::ALL).await;
    let invoice: Value = app
        .create_invoice(&key, json!({"amount": "5", "title": "Concert", "questions": ["Name on the ticket?", "Seat?"]}))
        .await
        .json()
        .await
        .unwrap();
    let (id, token, signature) = session(&invoice);
    let answer = |id: String, body: Value| {
        app.client
            .post(app.url(&format!("/api/v1/payments/{id}/answers")))
            .header("x-session-token", token)
            .header("x-signature", signature)
            .json(&body)
            .send()
    };
    for (body, param) in [
        (json!({"answers": ["Ada"]}), "answers"),
        (json!({"answers": ["Ada", " "]}), "answers[1]"),
        (json!({"answers": ["Ada", "x".repeat(513)]}), "answers[1]"),
        (json!({"answers": "Ada"}), "answers"),
        (json!({"answers": ["Ada", "A1"], "extra": 1}), "extra"),
    ] {
        let code = if param == "extra" { "unknown_parameter" } else { "invalid_parameter" };
        assert_error(answer(id.to_owned(), body).await.unwrap(), 400, code, Some(param)).await;
    }
    let response = answer(id.to_owned(), json!({"answers": [" Ada Lovelace ", "A1"]})).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!((seen["answered"].as_bool(), seen["title"].as_str()), (Some(true), Some("Concert")));
    assert_eq!(seen["questions"], json!(["Name on the ticket?", "Seat?"]));
    // The merchant reads them on the invoice.
    let (_, merchant_view) = app.get_json(&key, &format!("/api/v1/invoices/{id}")).await;
    assert_eq!(merchant_view["answers"], json!(["Ada Lovelace", "A1"]));

    let plain: Value = app.create_invoice(&key, json!({"amount": "5"})).await.json().await.unwrap();
    let (plain_id, plain_token, plain_signature) = session(&plain);
    let response = app
        .client
        .post(app.url(&format!("/api/v1/payments/{plain_id}/answers")))
        .header("x-session-token", plain_token)
        .header("x-signature", plain_signature)
        .json(&json!({"answers": []}))
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "no_questions", None).await;
    // Another invoice's session cannot answer this one.
    let response = app
        .client
        .post(app.url(&format!("/api/v1/payments/{id}/answers")))
        .header("x-session-token", plain_token)
        .header("x-signature", plain_signature)
        .json(&json!({"answers": ["Eve", "Z9"]}))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_session", None).await;
}

async fn cors_only_for_the_merchants_checkout_origins(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Cors Shop", &Scope::ALL).await;
    let mut conn = app.store.conn().await.unwrap();
    depositd_core::store::merchants::set_checkout_origins(&mut conn, merchant.id, &["https://shop.example.com".into()])
        .await
        .unwrap();
    let invoice: Value = app.create_invoice(&key, json!({"amount": "5"})).await.json().await.unwrap();
    let (id, token, signature) = session(&invoice);
    let path = format!("/api/v1/payments/{id}");
    let allowed_origin = |response: &reqwest::Response| {
        response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned())
    };

    // The merchant's own shop: the preflight and the request are allowed, for that origin only.
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url(&path))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-session-token,x-signature")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(allowed_origin(&preflight).as_deref(), Some("https://shop.example.com"));
    let allowed_headers = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(
        allowed_headers.contains("x-session-token") && allowed_headers.contains("x-signature"),
        "{allowed_headers}"
    );
    let read = app
        .client
        .get(app.url(&path))
        .header("origin", "https://shop.example.com")
        .header("x-session-token", token)
        .header("x-signature", signature)
        .send()
        .await
        .unwrap();
    assert_eq!((read.status().as_u16(), allowed_origin(&read).as_deref()), (200, Some("https://shop.example.com")));

    // Any other site: no CORS grant, so a browser will not let its code read the session.
    for origin in ["https://evil.example.net", "http://shop.example.com", "https://shop.example.com.evil.net"] {
        let read = app
            .client
            .get(app.url(&path))
            .header("origin", origin)
            .header("x-session-token", token)
            .header("x-signature", signature)
            .send()
            .await
            .unwrap();
        assert_eq!(allowed_origin(&read), None, "{origin}");
    }
    // Another merchant's invoice does not inherit this merchant's origins.
    let (_, other_key) = app.merchant("Other Cors Shop", &Scope::ALL).await;
    let other: Value = app.create_invoice(&other_key, json!({"amount": "5"})).await.json().await.unwrap();
    let read = app
        .client
        .get(app.url(&format!("/api/v1/payments/{}", other["id"].as_str().unwrap())))
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed_origin(&read), None);
    // The merchant API never answers CORS.
    let read = app
        .client
        .get(app.url("/api/v1/invoices"))
        .header("origin", "https://shop.example.com")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed_origin(&read), None);
}

/// Every object key in `value`, at any depth.
fn field_names(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) => map.iter().flat_map(|(k, v)| std::iter::once(k.clone()).chain(field_names(v))).collect(),
        Value::Array(items) => items.iter().flat_map(field_names).collect(),
        _ => Vec::new(),
    }
}
