//! The checkout page's live stream and languages (issue 23): `GET /api/v1/payments/{id}/events`
//! sends the payment session at once and again on every change, over real HTTP while a real
//! anvil chain pays the invoice and the real watcher sees it, and ends once the invoice is
//! finished; the page is rendered in the language asked for.

use depositd_core::api_key::Scope;
use depositd_testkit::chain::TestChain;
use depositd_watcher::ChainWatcher;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, both_backends, use_test_chain};

both_backends!(the_stream_sends_every_change_and_ends_when_paid, the_page_speaks_the_language_asked_for);

/// Reads one `session` event off a `text/event-stream` response (skipping keep-alive comments);
/// `None` when the stream ended.
async fn next_session(response: &mut reqwest::Response, buffer: &mut String) -> Option<Value> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            if data.is_empty() {
                continue;
            }
            assert!(block.lines().any(|l| l == "event: session"), "{block}");
            return Some(serde_json::from_str(&data.join("\n")).unwrap());
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), response.chunk())
            .await
            .expect("an event or the end within 20 s")
            .unwrap()?;
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// Reads sessions until one satisfies `done` (at most five: detection, confirmations, status),
/// checking that each differs from the one before (the stream sends changes, not ticks).
async fn until(
    response: &mut reqwest::Response,
    buffer: &mut String,
    previous: &mut Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..5 {
        let session = next_session(response, buffer).await.expect("the stream is open until the invoice is finished");
        assert_ne!(&session, previous, "an event is a change");
        *previous = session.clone();
        if done(&session) {
            return session;
        }
    }
    panic!("no matching session in five events; the last: {previous}");
}

async fn drain(watcher: &mut ChainWatcher) {
    for _ in 0..100 {
        if !watcher.tick().await.unwrap() {
            return;
        }
    }
    panic!("the watcher never caught up");
}

async fn the_stream_sends_every_change_and_ends_when_paid(db: TestDb) {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut chain_config = None;
    let app = TestApp::spawn_with(&db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 2, &[("USDC", usdc)]);
        chain_config = Some(c.chains[0].clone());
    })
    .await;
    let mut watcher = app.watcher(&chain_config.unwrap());
    let (_, key) = app.merchant("Live Shop", &Scope::ALL).await;
    let invoice = app.created_invoice(&key, json!({"amount": "10", "asset": "USDC"})).await;
    let id = invoice["id"].as_str().unwrap();
    let url = app.url(&format!("/api/v1/payments/{id}/events"));

    // The payer routes' one 401, whatever is wrong.
    for (token, signature) in [(None, None), (Some("wrong"), invoice["signature"].as_str())] {
        let mut request = app.client.get(&url);
        if let Some(token) = token {
            request = request.header("x-session-token", token);
        }
        if let Some(signature) = signature {
            request = request.header("x-signature", signature);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_session", "{body}");
    }

    let mut stream = app
        .client
        .get(&url)
        .header("x-session-token", invoice["session_token"].as_str().unwrap())
        .header("x-signature", invoice["signature"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut buffer = String::new();

    // At once: the session as the payer API shows it.
    let first = next_session(&mut stream, &mut buffer).await.expect("the first session");
    let (_, polled) = {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/payments/{id}")))
            .header("x-session-token", invoice["session_token"].as_str().unwrap())
            .header("x-signature", invoice["signature"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(first, polled, "the stream sends what GET /api/v1/payments/{{id}} answers");
    assert_eq!(first["status"], "pending");

    // Paid in two parts: every event is a change, and the stream keeps up with the chain.
    let address = invoice["pay"]["address"].as_str().unwrap();
    chain.pay_token(usdc, address, 4_000_000).await;
    chain.mine(1).await;
    drain(&mut watcher).await;
    let mut previous = first;
    let underpaid =
        until(&mut stream, &mut buffer, &mut previous, |s| s["payment_flags"] == json!(["underpaid"])).await;
    assert_eq!((underpaid["status"].as_str(), underpaid["amount_due"].as_str()), (Some("pending"), Some("6")));

    chain.pay_token(usdc, address, 6_000_000).await;
    chain.mine(2).await;
    drain(&mut watcher).await;
    let last = until(&mut stream, &mut buffer, &mut previous, |s| s["status"] == "paid").await;
    assert_eq!(last["amount_due"], "0", "{last}");
    // Paid is final: the server ends the stream.
    assert_eq!(next_session(&mut stream, &mut buffer).await, None);

    // A stream opened on a finished invoice sends it once and ends.
    let mut again = app
        .client
        .get(&url)
        .header("x-session-token", invoice["session_token"].as_str().unwrap())
        .header("x-signature", invoice["signature"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let mut buffer = String::new();
    assert_eq!(next_session(&mut again, &mut buffer).await.unwrap()["status"], "paid");
    assert_eq!(next_session(&mut again, &mut buffer).await, None);
}

async fn the_page_speaks_the_language_asked_for(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (_, key) = app.merchant("Sprachen Shop", &Scope::ALL).await;
    let invoice = app.created_invoice(&key, json!({"amount": "19.99", "currency": "EUR"})).await;
    let id = invoice["id"].as_str().unwrap();
    let page = |query: &'static str, accept: Option<&'static str>| {
        let mut request = app.client.get(app.url(&format!("/checkout/{id}{query}")));
        if let Some(accept) = accept {
            request = request.header("accept-language", accept);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["vary"], "accept-language");
            let lang = response.headers()["content-language"].to_str().unwrap().to_owned();
            (lang, response.text().await.unwrap())
        }
    };
    for (query, accept, lang, words) in [
        ("", None, "en", "Waiting for payment..."),
        ("?lang=de", None, "de", "Warte auf Zahlung..."),
        ("?lang=de", Some("es"), "de", "Senden Sie genau "),
        ("", Some("es-MX,es;q=0.9,en;q=0.5"), "es", "Esperando el pago..."),
        ("", Some("pt-BR, fr;q=0.7, de;q=0.6"), "fr", "En attente du paiement..."),
        ("?lang=xx", Some("ja"), "en", "Send exactly "),
    ] {
        let (served, html) = page(query, accept).await;
        assert_eq!(served, lang, "{query} {accept:?}");
        assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{query} {accept:?}");
        assert!(html.contains(words), "{query} {accept:?} shows {words:?}");
        // The switcher offers every language, the current one marked.
        for other in ["en", "de", "es", "fr"] {
            assert!(html.contains(&format!("href=\"?lang={other}\"")), "{other} in the switcher");
        }
        assert!(html.contains(&format!("lang=\"{lang}\" hreflang=\"{lang}\" aria-current=\"true\"")));
    }
    // A bad link's page in the payer's language too.
    let missing = app
        .client
        .get(app.url(&format!("/checkout/{}", uuid::Uuid::now_v7())))
        .header("accept-language", "de-DE")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("Zahlungslink nicht gefunden"));
}
