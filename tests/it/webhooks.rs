//! Webhooks against a real HTTP receiver on 127.0.0.1, on both backends: endpoint management,
//! signatures checked with the official Standard Webhooks library (npm `standardwebhooks`),
//! retries until success with every attempt recorded, 410 disabling, redirects not followed, the
//! SSRF guard, secret rotation, callback URLs, redelivery with a stable id, the outbox surviving a
//! crash, and two workers sharing one queue without a double delivery.

use std::collections::HashMap;

use depositd_core::api_key::Scope;
use depositd_core::config::Config;
use depositd_testkit::anvil::free_port;
use depositd_testkit::webhooks::{Hit, Receiver};
use depositd_webhooks::Deliverer;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, assert_error, both_backends};

both_backends!(
    endpoints_are_managed_and_secrets_shown_once,
    deliveries_retry_until_success_and_verify_with_the_official_library,
    gone_disables_the_endpoint_and_redirects_are_not_followed,
    internal_targets_are_refused,
    a_rotated_secret_signs_alongside_the_old_one,
    callback_urls_receive_their_resources_events,
    events_are_listed_and_redelivered_with_the_same_id,
    two_workers_never_deliver_the_same_event_twice,
    a_committed_delivery_is_sent_without_waiting_for_the_poll,
    a_burst_to_one_endpoint_goes_out_in_order_in_one_tick,
    concurrent_creates_of_one_url_make_one_endpoint,
);

/// Verifies each hit with `secret` using the official library; returns the verified types (or
/// `ERROR: ...`).
pub(crate) fn verify_official(secret: &str, hits: &[Hit]) -> Vec<String> {
    use std::io::Write;
    let input: Vec<Value> = hits
        .iter()
        .map(|h| {
            let headers: HashMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
                .into_iter()
                .map(|k| (k, h.headers.get(k).map(String::as_str).unwrap_or_default()))
                .collect();
            json!({"secret": secret, "headers": headers, "body": h.body})
        })
        .collect();
    let mut child = std::process::Command::new("node")
        .arg("tests/support/verify-webhooks.js")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs (installed with the dev tools)");
    child.stdin.take().unwrap().write_all(Value::from(input).to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the verifier ran");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Webhooks on loopback over http (as dev allows), retries without waiting.
fn permissive(config: &mut Config) {
    config.settings.webhooks.allow_http = true;
    config.settings.webhooks.allow_private_targets = true;
    config.settings.webhooks.retry_schedule_secs = vec![0, 0, 0];
    config.settings.invoices.allow_http_urls = true;
}

struct Setup {
    app: TestApp,
    key: String,
}

async fn setup(db: &TestDb, adjust: impl FnOnce(&mut Config)) -> Setup {
    let app = TestApp::spawn_with(db, adjust).await;
    let (_, key) = app.merchant("Hook Shop", &Scope::ALL).await;
    Setup { app, key }
}

impl Setup {
    fn worker(&self) -> Deliverer {
        let state = &self.app.state;
        Deliverer::new(
            state.store.clone(),
            &state.wallet,
            state.config.settings.webhooks.clone(),
            state.metrics.clone(),
        )
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.app.client.post(self.app.url(path)).header("x-api-key", &self.key).json(&body).send().await.unwrap()
    }

    /// Registers an endpoint; returns (id, secret).
    async fn endpoint(&self, url: &str, events: &[&str]) -> (String, String) {
        let response = self.post("/api/v1/webhook-endpoints", json!({"url": url, "enabled_events": events})).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (body["id"].as_str().unwrap().to_owned(), body["secret"].as_str().unwrap().to_owned())
    }

    async fn invoice(&self, body: Value) -> Value {
        let response = self.app.create_invoice(&self.key, body).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// Ticks the worker until the queue has nothing due.
    async fn drain(&self, worker: &Deliverer) {
        for _ in 0..50 {
            if worker.tick().await.unwrap() == 0 {
                return;
            }
        }
        panic!("the queue did not drain");
    }

    async fn event(&self, id: &str) -> Value {
        let (status, event) = self.app.get_json(&self.key, &format!("/api/v1/events/{id}")).await;
        assert_eq!(status, 200, "{event}");
        event
    }
}

async fn endpoints_are_managed_and_secrets_shown_once(db: TestDb) {
    let s = setup(&db, permissive).await;
    let (id, secret) = s.endpoint("https://hooks.example.com/depositd", &["invoice.paid", "invoice.created"]).await;
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    let (status, shown) = s.app.get_json(&s.key, &format!("/api/v1/webhook-endpoints/{id}")).await;
    assert_eq!(status, 200);
    assert!(shown.get("secret").is_none(), "the secret is shown once: {shown}");
    assert_eq!(shown["enabled_events"], json!(["invoice.created", "invoice.paid"]));
    assert!(!shown.to_string().contains(&secret[6..]));

    let patched: Value = s
        .app
        .client
        .patch(s.app.url(&format!("/api/v1/webhook-endpoints/{id}")))
        .header("x-api-key", &s.key)
        .json(&json!({"enabled_events": [], "description": "all events", "enabled": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((patched["enabled_events"].clone(), patched["status"].as_str()), (json!([]), Some("disabled")));
    let rotated: Value =
        s.post(&format!("/api/v1/webhook-endpoints/{id}/rotate-secret"), json!({})).await.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated["previous_secret_expires_at"].is_i64());
    let (_, list) = s.app.get_json(&s.key, "/api/v1/webhook-endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // One destination, one endpoint.
    let twin = s.post("/api/v1/webhook-endpoints", json!({"url": "https://hooks.example.com/depositd"})).await;
    assert_error(twin, 409, "url_in_use", Some("url")).await;

    // Bad input: precise 400s naming the field.
    for (body, code, param) in [
        (json!({"url": "ftp://x.example.com"}), "invalid_url", "url"),
        (json!({"url": "not a url"}), "invalid_url", "url"),
        (
            json!({"url": "https://x.example.com", "enabled_events": ["invoice.paid", "invoice.shipped"]}),
            "invalid_event_type",
            "enabled_events[1]",
        ),
        (json!({"url": "https://x.example.com", "colour": "red"}), "unknown_parameter", "colour"),
        (json!({"enabled_events": []}), "parameter_missing", "url"),
    ] {
        assert_error(s.post("/api/v1/webhook-endpoints", body).await, 400, code, Some(param)).await;
    }
    // The test event goes to the endpoint it tests only: it cannot be subscribed to, on create
    // or on change.
    let body = json!({"url": "https://x.example.com", "enabled_events": ["webhook_endpoint.test"]});
    let refused = assert_error(
        s.post("/api/v1/webhook-endpoints", body).await,
        400,
        "invalid_event_type",
        Some("enabled_events[0]"),
    )
    .await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("cannot be subscribed"), "{refused}");
    let response = s
        .app
        .client
        .patch(s.app.url(&format!("/api/v1/webhook-endpoints/{id}")))
        .header("x-api-key", &s.key)
        .json(&json!({"enabled_events": ["invoice.paid", "webhook_endpoint.test"]}))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_event_type", Some("enabled_events[1]")).await;
    let (_, read_only) = s.app.merchant("Reader", &[Scope::WebhooksRead]).await;
    let response = s
        .app
        .client
        .post(s.app.url("/api/v1/webhook-endpoints"))
        .header("x-api-key", &read_only)
        .json(&json!({"url": "https://x.example.com"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "insufficient_scope", None).await;

    let deleted =
        s.app.client.delete(s.app.url(&format!("/api/v1/webhook-endpoints/{id}"))).header("x-api-key", &s.key);
    let deleted: Value = deleted.send().await.unwrap().json().await.unwrap();
    assert_eq!(deleted["deleted"], true);
    let (status, _) = s.app.get_json(&s.key, &format!("/api/v1/webhook-endpoints/{id}")).await;
    assert_eq!(status, 404);
}

async fn deliveries_retry_until_success_and_verify_with_the_official_library(db: TestDb) {
    let s = setup(&db, permissive).await;
    // The receiver is down at first: its port is free, nothing listens.
    let port = free_port().unwrap();
    let (_, secret) = s.endpoint(&format!("http://127.0.0.1:{port}/hook"), &[]).await;
    // The state change commits with its event and delivery while no worker runs (as after a
    // crash); a worker started later delivers it.
    let invoice = s.invoice(json!({"amount": "5"})).await;
    let worker = s.worker();
    assert_eq!(worker.tick().await.unwrap(), 1, "one delivery due");

    let receiver = Receiver::start_on(port).await;
    receiver.script(&[500]);
    worker.tick().await.unwrap();
    worker.tick().await.unwrap();
    s.drain(&worker).await;

    let hits = receiver.hits();
    assert_eq!(hits.len(), 2, "a 500, then the success; nothing after it");
    assert_eq!(hits[0].headers["webhook-id"], hits[1].headers["webhook-id"], "retries keep the event id");
    assert_eq!(verify_official(&secret, &hits), ["invoice.created", "invoice.created"]);
    let body: Value = serde_json::from_str(&hits[1].body).unwrap();
    assert_eq!(body["data"]["id"], invoice["id"], "the event carries the resource as the API shows it");
    assert_eq!(body["id"].as_str(), Some(hits[1].headers["webhook-id"].as_str()));
    // A tampered body fails the official verification: the check is not vacuous.
    let mut tampered = hits[1].clone();
    tampered.body = tampered.body.replace("\"5\"", "\"500\"");
    assert!(verify_official(&secret, &[tampered])[0].starts_with("ERROR"));

    let event = s.event(&hits[0].headers["webhook-id"]).await;
    let delivery = &event["deliveries"][0];
    assert_eq!((delivery["state"].as_str(), delivery["attempt_count"].as_u64()), (Some("succeeded"), Some(3)));
    let attempts = delivery["attempts"].as_array().unwrap();
    assert!(
        attempts[0]["status_code"].is_null() && attempts[0]["error"].as_str().unwrap().contains("connect"),
        "{event}"
    );
    assert_eq!(attempts[1]["status_code"], 500);
    assert_eq!(
        (attempts[2]["status_code"].as_u64(), attempts[2]["response_body"].as_str()),
        (Some(200), Some("receiver says hello"))
    );
    let metrics = s.app.client.get(s.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"depositd_webhook_attempts_total{result="succeeded"} 1"#), "{metrics}");
    assert!(metrics.contains("depositd_webhook_queue_depth 0"), "{metrics}");
}

async fn gone_disables_the_endpoint_and_redirects_are_not_followed(db: TestDb) {
    let s = setup(&db, permissive).await;
    let receiver = Receiver::start().await;
    let (gone, _) = s.endpoint(&receiver.url("/gone"), &["invoice.created"]).await;
    let (_, _) = s.endpoint(&receiver.url("/redirect"), &["invoice.created"]).await;
    s.endpoint(&receiver.url("/watching"), &["webhook_endpoint.disabled"]).await;
    s.invoice(json!({"amount": "5"})).await;
    let worker = s.worker();
    worker.tick().await.unwrap();

    let (_, endpoint) = s.app.get_json(&s.key, &format!("/api/v1/webhook-endpoints/{gone}")).await;
    assert_eq!(endpoint["status"], "disabled", "{endpoint}");
    assert!(endpoint["disabled_reason"].as_str().unwrap().contains("410"));
    // The redirect was answered, never followed.
    let paths: Vec<String> = receiver.hits().iter().map(|h| h.path.clone()).collect();
    assert!(paths.contains(&"/redirect".to_owned()) && !paths.contains(&"/landing".to_owned()), "{paths:?}");
    // The redirecting endpoint uses up its retries: failed, and (never a success) disabled too.
    // The merchant hears of both on another endpoint.
    s.drain(&worker).await;
    let watching: Vec<String> = receiver.hits().iter().filter(|h| h.path == "/watching").map(Hit::event_type).collect();
    assert_eq!(watching, ["webhook_endpoint.disabled", "webhook_endpoint.disabled"]);
    let (_, events) = s.app.get_json(&s.key, "/api/v1/events?type=invoice.created").await;
    let states: Vec<&str> =
        events["data"][0]["deliveries"].as_array().unwrap().iter().map(|d| d["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["failed", "failed"], "{events}");
    let redirects = receiver.hits().iter().filter(|h| h.path == "/redirect").count();
    assert_eq!(redirects, 4, "the first attempt and three retries");
}

async fn internal_targets_are_refused(db: TestDb) {
    let s = setup(&db, |c| {
        c.settings.webhooks.allow_http = true;
        c.settings.webhooks.retry_schedule_secs = vec![0];
        c.settings.invoices.allow_http_urls = true;
    })
    .await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
    ] {
        let response = s.post("/api/v1/webhook-endpoints", json!({"url": url})).await;
        assert_error(response, 400, "url_not_allowed", Some("url")).await;
    }
    // A callback URL on loopback is refused when it is set (tests/it/hardening.rs) and again at
    // delivery: here it was set while the operator allowed private targets, and the worker runs
    // after they were disallowed. The guard refuses to connect, and the receiver never hears a thing.
    let receiver = Receiver::start().await;
    let response =
        s.app.create_invoice(&s.key, json!({"amount": "5", "callback_url": receiver.url("/callback")})).await;
    assert_error(response, 400, "url_not_allowed", Some("callback_url")).await;
    let allowing = TestApp::spawn_with(&db, |c| {
        c.settings.webhooks.allow_http = true;
        c.settings.webhooks.allow_private_targets = true;
        c.settings.invoices.allow_http_urls = true;
    })
    .await;
    let response =
        allowing.create_invoice(&s.key, json!({"amount": "5", "callback_url": receiver.url("/callback")})).await;
    assert_eq!(response.status(), 201);
    s.drain(&s.worker()).await;
    assert!(receiver.hits().is_empty(), "nothing reached the internal address");
    let (_, events) = s.app.get_json(&s.key, "/api/v1/events?type=invoice.created").await;
    let event = s.event(events["data"][0]["id"].as_str().unwrap()).await;
    let attempt = &event["deliveries"][0]["attempts"][0];
    assert!(attempt["error"].as_str().unwrap().contains("internal address"), "{event}");
    let metrics = s.app.client.get(s.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"depositd_webhook_attempts_total{result="refused"} 2"#), "{metrics}");
}

async fn a_rotated_secret_signs_alongside_the_old_one(db: TestDb) {
    let s = setup(&db, permissive).await;
    let receiver = Receiver::start().await;
    let (id, old) = s.endpoint(&receiver.url("/hook"), &[]).await;
    let rotated: Value =
        s.post(&format!("/api/v1/webhook-endpoints/{id}/rotate-secret"), json!({})).await.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    s.invoice(json!({"amount": "5"})).await;
    s.drain(&s.worker()).await;
    let hits = receiver.hits();
    assert_eq!(hits[0].headers["webhook-signature"].split(' ').count(), 2, "both signatures during the grace period");
    assert_eq!(verify_official(&old, &hits), ["invoice.created"]);
    assert_eq!(verify_official(&new, &hits), ["invoice.created"]);
    assert!(verify_official("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &hits)[0].starts_with("ERROR"));
}

async fn callback_urls_receive_their_resources_events(db: TestDb) {
    let s = setup(&db, permissive).await;
    let receiver = Receiver::start().await;
    let created: Value = s.post("/api/v1/callback-secret", json!({})).await.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(created["previous_secret_expires_at"].is_null(), "the first secret replaces none");
    s.invoice(json!({"amount": "5", "callback_url": receiver.url("/orders/1001")})).await;
    s.invoice(json!({"amount": "6"})).await;
    s.drain(&s.worker()).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "only the invoice with the callback_url reports there");
    assert_eq!(hits[0].path, "/orders/1001");
    assert_eq!(verify_official(&secret, &hits), ["invoice.created"]);
}

async fn events_are_listed_and_redelivered_with_the_same_id(db: TestDb) {
    let s = setup(&db, permissive).await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = s.endpoint(&receiver.url("/hook"), &["invoice.created", "invoice.cancelled"]).await;
    let invoice = s.invoice(json!({"amount": "5"})).await;
    let id = invoice["id"].as_str().unwrap();
    let cancel = s.post(&format!("/api/v1/invoices/{id}/cancel"), json!({})).await;
    assert_eq!(cancel.status(), 200);
    let worker = s.worker();
    s.drain(&worker).await;
    let types: Vec<String> = receiver.hits().iter().map(Hit::event_type).collect();
    assert_eq!(types, ["invoice.created", "invoice.cancelled"]);

    let (_, all) = s.app.get_json(&s.key, &format!("/api/v1/events?resource_id={id}")).await;
    let listed: Vec<&str> = all["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(listed, ["invoice.cancelled", "invoice.created"]);
    assert_eq!(all["data"][0]["data"]["status"], "cancelled");
    let (_, pending) = s.app.get_json(&s.key, "/api/v1/events?delivery_state=pending").await;
    assert_eq!(pending["data"], json!([]));
    for (query, param) in
        [("type=invoice.shipped", "type"), ("delivery_state=lost", "delivery_state"), ("resource_id=x", "resource_id")]
    {
        let response = s.app.client.get(s.app.url(&format!("/api/v1/events?{query}"))).header("x-api-key", &s.key);
        let code = if param == "type" { "invalid_event_type" } else { "invalid_parameter" };
        assert_error(response.send().await.unwrap(), 400, code, Some(param)).await;
    }

    let created_id = all["data"][1]["id"].as_str().unwrap();
    // The endpoint moves; a redelivery goes to where it is now, and only there.
    let moved = s
        .app
        .client
        .patch(s.app.url(&format!("/api/v1/webhook-endpoints/{endpoint_id}")))
        .header("x-api-key", &s.key)
        .json(&json!({"url": receiver.url("/moved")}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let redelivered = s.post(&format!("/api/v1/events/{created_id}/redeliver"), json!({})).await;
    assert_eq!(redelivered.status(), 202);
    s.drain(&worker).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[2].path, "/moved");
    assert_eq!(hits[2].headers["webhook-id"], created_id, "a redelivery keeps the event id");
    assert_eq!(hits[2].body, hits[0].body, "and the payload");
    let response = s.post(&format!("/api/v1/events/{}/redeliver", uuid::Uuid::now_v7()), json!({})).await;
    assert_error(response, 404, "resource_missing", None).await;
}

async fn two_workers_never_deliver_the_same_event_twice(db: TestDb) {
    let s = setup(&db, permissive).await;
    let receiver = Receiver::start().await;
    s.endpoint(&receiver.url("/hook"), &["invoice.created"]).await;
    for i in 0..30 {
        s.invoice(json!({"amount": format!("{}", i + 1)})).await;
    }
    // Two workers (two daemons on one database) drain one queue at the same time.
    let (a, b) = (s.worker(), s.worker());
    let run = |worker: Deliverer| async move {
        for _ in 0..50 {
            if worker.tick().await.unwrap() == 0 {
                break;
            }
        }
    };
    tokio::join!(run(a), run(b));
    let hits = receiver.hits();
    let mut ids: Vec<&str> = hits.iter().map(|h| h.headers["webhook-id"].as_str()).collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    assert_eq!((total, ids.len()), (30, 30), "every event delivered exactly once");
}

async fn a_committed_delivery_is_sent_without_waiting_for_the_poll(db: TestDb) {
    // The worker polls its queue once an hour here: only the wake-up from the commit that queued
    // the delivery can get it out within the test's lifetime.
    let s = setup(&db, |config| {
        permissive(config);
        config.settings.webhooks.poll_interval_ms = 3_600_000;
    })
    .await;
    let receiver = Receiver::start().await;
    s.endpoint(&receiver.url("/hook"), &["invoice.created"]).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(s.worker().run(shutdown.clone()));
    for round in 1..=3 {
        let invoice = s.invoice(json!({"amount": format!("{round}")})).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while receiver.hits().len() < round {
            assert!(std::time::Instant::now() < deadline, "delivery {round} was not sent without a poll");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let body: Value = serde_json::from_str(&receiver.hits()[round - 1].body).unwrap();
        assert_eq!(body["data"]["id"], invoice["id"]);
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

async fn a_burst_to_one_endpoint_goes_out_in_order_in_one_tick(db: TestDb) {
    let s = setup(&db, permissive).await;
    let receiver = Receiver::start().await;
    s.endpoint(&receiver.url("/hook"), &["invoice.created"]).await;
    let mut created = Vec::new();
    for i in 0..20 {
        created.push(s.invoice(json!({"amount": format!("{}", i + 1)})).await["id"].clone());
    }
    // One tick sends the whole burst (not one delivery per tick), in the order of the events.
    let worker = s.worker();
    assert_eq!(worker.tick().await.unwrap(), 20);
    let order = |hits: &[Hit]| -> Vec<Value> {
        hits.iter().map(|h| serde_json::from_str::<Value>(&h.body).unwrap()["data"]["id"].clone()).collect()
    };
    assert_eq!(order(&receiver.hits()), created, "all twenty, oldest first, in one tick");

    // A failed attempt stops its destination's queue for the tick: the later events wait for the
    // next tick, where the retried one (due at once here) still goes first.
    let mut more = Vec::new();
    for i in 0..3 {
        more.push(s.invoice(json!({"amount": format!("{}", i + 100)})).await["id"].clone());
    }
    receiver.script(&[200, 500]);
    assert_eq!(worker.tick().await.unwrap(), 3);
    let hits = receiver.hits();
    assert_eq!(order(&hits[20..]), more[..2], "the second failed and the third was held back");
    s.drain(&worker).await;
    let hits = receiver.hits();
    assert_eq!(order(&hits[22..]), [more[1].clone(), more[2].clone()], "the retry first, then the held one");
    assert_eq!(hits.len(), 24);
}

/// Two creates of the same URL at once: the merchant's row lock orders them, so one is created
/// (201) and the other sees it (409 `url_in_use`), and there is exactly one endpoint, in every
/// round.
async fn concurrent_creates_of_one_url_make_one_endpoint(db: TestDb) {
    let s = setup(&db, |c| {
        permissive(c);
        c.settings.api.rate_limit_burst = 1000;
    })
    .await;
    for round in 0..5 {
        let url = format!("https://hooks.example.com/race/{round}");
        let body = json!({"url": url, "enabled_events": ["invoice.paid"]});
        let (a, b) = tokio::join!(
            s.post("/api/v1/webhook-endpoints", body.clone()),
            s.post("/api/v1/webhook-endpoints", body.clone())
        );
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}");
        let refused = if a.status() == 409 { a } else { b };
        assert_error(refused, 409, "url_in_use", Some("url")).await;
        let (_, list) = s.app.get_json(&s.key, "/api/v1/webhook-endpoints").await;
        let same = list["data"].as_array().unwrap().iter().filter(|e| e["url"] == url.as_str()).count();
        assert_eq!(same, 1, "round {round}: {list}");
    }
}
