//! The dashboard's Webhooks, Events and Settings pages over real HTTP on both backends: an
//! endpoint created with its secret shown once, a test event delivered through the delivery
//! worker to a real receiver and verified with its signature, the event log with the attempt's
//! status code, redelivery, rotation, disabling that stops deliveries, settings validated next to
//! their fields, roles (viewer and developer refused by the server), CSRF, and one merchant's
//! session on another's endpoint and event.

use depositd_core::api_key::Scope;
use depositd_core::config::Config;
use depositd_core::member::Role;
use depositd_core::store::{events, merchants, webhooks as rows};
use depositd_core::webhooks::signature_header;
use depositd_testkit::webhooks::{Hit, Receiver};
use depositd_webhooks::Deliverer;
use secrecy::SecretString;
use uuid::Uuid;

use crate::dashboard::{Browser, PASSWORD, csrf_of, member};
use crate::dashboard_money::hidden;
use crate::helpers::{TestApp, TestDb, both_backends};

both_backends!(
    a_test_event_is_delivered_signed_and_redelivered,
    writes_are_refused_to_whom_they_must_be,
    settings_are_checked_next_to_their_fields,
);

const WEBHOOKS: &str = "/dashboard/developers/webhooks";

/// Webhooks on loopback over http, retries without waiting.
fn permissive(config: &mut Config) {
    config.settings.webhooks.allow_http = true;
    config.settings.webhooks.allow_private_targets = true;
    config.settings.webhooks.retry_schedule_secs = vec![0, 0, 0];
    config.settings.invoices.allow_http_urls = true;
}

fn worker(app: &TestApp) -> Deliverer {
    let state = &app.state;
    Deliverer::new(state.store.clone(), &state.wallet, state.config.settings.webhooks.clone(), state.metrics.clone())
}

/// Ticks the worker until nothing is due.
async fn drain(worker: &Deliverer) {
    for _ in 0..50 {
        if worker.tick().await.unwrap() == 0 {
            return;
        }
    }
    panic!("the queue did not drain");
}

/// The secret a page shows once.
fn shown_secret(html: &str) -> String {
    let marker = "id=\"new-secret\" class=\"mono\" readonly value=\"";
    let start = html.find(marker).expect("the page shows a secret") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// Whether one of the hit's signatures is `secret`'s (Standard Webhooks).
fn signed_with(hit: &Hit, secret: &str) -> bool {
    let timestamp: i64 = hit.headers["webhook-timestamp"].parse().unwrap();
    let expected =
        signature_header(&[SecretString::from(secret.to_owned())], &hit.headers["webhook-id"], timestamp, &hit.body)
            .unwrap();
    hit.headers["webhook-signature"].split(' ').any(|s| s == expected)
}

/// The event id a test event's redirect names.
fn event_of(location: &str) -> String {
    location.strip_prefix("/dashboard/developers/events/").expect("the event's page").to_owned()
}

async fn endpoint_ids(app: &TestApp, merchant_id: Uuid) -> Vec<Uuid> {
    let mut conn = app.store.conn().await.unwrap();
    rows::list_endpoints(&mut conn, merchant_id, None, 100).await.unwrap().into_iter().map(|e| e.id).collect()
}

async fn a_test_event_is_delivered_signed_and_redelivered(db: TestDb) {
    let app = TestApp::spawn_with(&db, permissive).await;
    let (shop, _) = app.merchant("Hook Shop", &Scope::MERCHANT).await;
    member(&app, shop.id, "dev@hook.example", Role::Developer).await;
    let receiver = Receiver::start().await;
    let worker = worker(&app);
    let mut dev = Browser::new(&app);
    assert_eq!(dev.sign_in("dev@hook.example", PASSWORD).await.status, 303);

    // A refused URL is said next to its field, with the API's words.
    let page = dev.get(WEBHOOKS).await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    let refused =
        dev.post(WEBHOOKS, &[("csrf", &csrf), ("url", "ftp://hooks.example"), ("event", "invoice.paid")]).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("id=\"url-error\""), "{}", refused.body);
    assert!(refused.body.contains("url must be an https:// URL"), "{}", refused.body);
    assert!(endpoint_ids(&app, shop.id).await.is_empty());

    // Created: the secret is shown this once.
    let url = receiver.url("/hooks");
    let created = dev.post(WEBHOOKS, &[("csrf", &csrf), ("url", &url), ("event", "invoice.paid")]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = shown_secret(&created.body);
    assert!(secret.starts_with("whsec_"), "{secret}");
    let listed = dev.get(WEBHOOKS).await;
    assert!(listed.body.contains(&url) && !listed.body.contains(&secret), "shown once only");
    let id = endpoint_ids(&app, shop.id).await[0];
    let endpoint_page = format!("{WEBHOOKS}/{id}");
    assert!(dev.get(&endpoint_page).await.body.contains("invoice.paid"));
    // The same URL again is refused by the lifecycle's rule.
    let again = dev.post(WEBHOOKS, &[("csrf", &csrf), ("url", &url)]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("another of your webhook endpoints has this url"));

    // A test event, through the delivery worker, to this endpoint alone, signed.
    let sent = dev.post(&format!("{endpoint_page}/test"), &[("csrf", &csrf)]).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let event_id = event_of(sent.location.as_deref().unwrap());
    drain(&worker).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "only the test event: the endpoint lists invoice.paid alone");
    assert_eq!(hits[0].event_type(), "webhook_endpoint.test");
    assert_eq!(hits[0].headers["webhook-id"], event_id);
    assert!(signed_with(&hits[0], &secret), "signed with the endpoint's secret");
    assert!(!signed_with(&hits[0], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "the check can fail");

    // The event log shows the attempt with its status code; redeliver sends it again.
    let event_page = format!("/dashboard/developers/events/{event_id}");
    let shown = dev.get(&event_page).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body.matches("<td class=\"status-code\">200</td>").count(), 1, "{}", shown.body);
    assert!(shown.body.contains(&url));
    let log = dev.get(&format!("/dashboard/developers/events?resource_id={id}")).await;
    assert!(log.body.contains(&event_id) && log.body.contains("webhook_endpoint.test"));
    let redelivered = dev.post(&format!("{event_page}/redeliver"), &[("csrf", &csrf)]).await;
    assert_eq!((redelivered.status, redelivered.location.as_deref()), (303, Some(event_page.as_str())));
    drain(&worker).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2, "redelivered once");
    assert_eq!(hits[1].headers["webhook-id"], event_id, "the same event");
    assert_eq!(hits[1].body, hits[0].body, "byte for byte");
    assert_eq!(dev.get(&event_page).await.body.matches("<td class=\"status-code\">200</td>").count(), 2);

    // Rotated: the new secret is shown once and signs the next delivery.
    let version = hidden(&dev.get(&endpoint_page).await.body, "updated_at");
    let rotate = [("csrf", csrf.as_str()), ("updated_at", version.as_str())];
    let rotated = dev.post(&format!("{endpoint_page}/rotate-secret"), &rotate).await;
    assert_eq!(rotated.status, 200);
    let new_secret = shown_secret(&rotated.body);
    assert_ne!(new_secret, secret);
    // The same form again (a double click, a resend): refused, so the original secret keeps its
    // grace period and the secret just shown stays the one in force.
    let twice = dev.post(&format!("{endpoint_page}/rotate-secret"), &rotate).await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    assert!(twice.body.contains("the endpoint changed since this page was shown"), "{}", twice.body);
    let without_version = dev.post(&format!("{endpoint_page}/rotate-secret"), &[("csrf", &csrf)]).await;
    assert_eq!(without_version.status, 400, "{}", without_version.body);
    // The page after the rotation carries the new version: rotating from it is possible.
    assert_ne!(hidden(&rotated.body, "updated_at"), version);
    assert!(!dev.get(&endpoint_page).await.body.contains(&new_secret));
    assert_eq!(dev.post(&format!("{endpoint_page}/test"), &[("csrf", &csrf)]).await.status, 303);
    drain(&worker).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    assert!(signed_with(&hits[2], &new_secret), "the new secret signs");
    assert!(signed_with(&hits[2], &secret), "the original secret still verifies during the grace period");

    // Disabled: what was queued is not sent, a redelivery goes nowhere, a test is refused.
    assert_eq!(dev.post(&format!("{endpoint_page}/test"), &[("csrf", &csrf)]).await.status, 303);
    let disabled = dev.post(&format!("{endpoint_page}/disable"), &[("csrf", &csrf)]).await;
    assert_eq!(disabled.status, 303);
    assert!(dev.get(&endpoint_page).await.body.contains("disabled by the merchant"));
    assert_eq!(dev.post(&format!("{event_page}/redeliver"), &[("csrf", &csrf)]).await.status, 303);
    drain(&worker).await;
    assert_eq!(receiver.hits().len(), 3, "a disabled endpoint receives nothing");
    let test_refused = dev.post(&format!("{endpoint_page}/test"), &[("csrf", &csrf)]).await;
    assert_eq!(test_refused.status, 409);
    assert!(test_refused.body.contains("the endpoint is disabled"));
    // Enabled again, it receives again.
    assert_eq!(dev.post(&format!("{endpoint_page}/enable"), &[("csrf", &csrf)]).await.status, 303);
    assert_eq!(dev.post(&format!("{endpoint_page}/test"), &[("csrf", &csrf)]).await.status, 303);
    drain(&worker).await;
    assert_eq!(receiver.hits().len(), 4);

    // Edited, then deleted.
    let other = receiver.url("/other");
    let edited = dev
        .post(&endpoint_page, &[("csrf", &csrf), ("url", &other), ("description", "orders"), ("event", "payout.sent")])
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    let bad_edit = dev.post(&endpoint_page, &[("csrf", &csrf), ("url", &other), ("event", "invoice.shipped")]).await;
    assert_eq!(bad_edit.status, 400);
    assert!(bad_edit.body.contains("id=\"events-error\"") && bad_edit.body.contains("is not an event type"));
    let mut conn = app.store.conn().await.unwrap();
    let endpoint = rows::get_endpoint(&mut conn, shop.id, id).await.unwrap().unwrap();
    assert_eq!((endpoint.url.as_str(), endpoint.enabled_events.clone()), (other.as_str(), vec!["payout.sent".into()]));
    assert_eq!(endpoint.description.as_deref(), Some("orders"));
    drop(conn);
    let deleted = dev.post(&format!("{endpoint_page}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!((deleted.status, deleted.location.as_deref()), (303, Some(WEBHOOKS)));
    assert!(endpoint_ids(&app, shop.id).await.is_empty());
    assert_eq!(dev.get(&endpoint_page).await.status, 404);

    // Every change is in the event log as who did what, and no secret is.
    let mut conn = app.store.conn().await.unwrap();
    let recorded = events::types_for(&mut conn, id).await.unwrap();
    assert_eq!(recorded.iter().filter(|t| *t == "member.action").count(), 10, "{recorded:?}");
    let mut audit = String::new();
    for event in rows::list_events(&mut conn, shop.id, &Default::default(), 100).await.unwrap() {
        audit.push_str(&event.payload);
    }
    assert!(!audit.contains(&secret[6..]) && !audit.contains(&new_secret[6..]), "no secret in any event");
    // The audit names the endpoint and its URL's host, never the URL (its path may carry a token).
    let mut actions_text = String::new();
    for event in rows::list_events(&mut conn, shop.id, &Default::default(), 100).await.unwrap() {
        if event.event_type.as_str() == "member.action" && event.payload.contains(&id.to_string()) {
            actions_text.push_str(&event.payload);
        }
    }
    assert!(actions_text.contains("\"host\"") && actions_text.contains("\"endpoint_id\""), "{actions_text}");
    assert!(!actions_text.contains("/hooks") && !actions_text.contains("\"url\""), "{actions_text}");
    drop(conn);
    let actions = dev.get("/dashboard/developers/events?type=member.action").await;
    assert_eq!(actions.status, 200);
    for action in ["create", "test", "rotate_secret", "disable", "enable", "update", "delete"] {
        assert!(
            actions.body.contains(&format!("dev@hook.example (developer) did webhook_endpoint.{action}")),
            "{action}: {}",
            actions.body
        );
    }
    assert!(actions.body.contains("did event.redeliver"));

    // An endpoint the worker disabled for failing (410 Gone) stands out in the list, with why.
    let gone = receiver.url("/gone");
    assert_eq!(dev.post(WEBHOOKS, &[("csrf", &csrf), ("url", &gone), ("event", "payout.sent")]).await.status, 201);
    let gone_id = endpoint_ids(&app, shop.id).await[0];
    let healthy = dev.get(WEBHOOKS).await;
    assert!(healthy.body.contains(&format!("<tr id=\"endpoint-{gone_id}\">")), "not failing yet");
    assert_eq!(dev.post(&format!("{WEBHOOKS}/{gone_id}/test"), &[("csrf", &csrf)]).await.status, 303);
    drain(&worker).await;
    let listed = dev.get(WEBHOOKS).await;
    assert!(listed.body.contains(&format!("<tr id=\"endpoint-{gone_id}\" class=\"failing\">")), "{}", listed.body);
    assert!(listed.body.contains("<strong>1 failed attempt(s)</strong>"), "{}", listed.body);
    assert!(listed.body.contains("<strong>disabled</strong>"));

    // Filters are checked next to their fields.
    let bad = dev.get("/dashboard/developers/events?type=invoice.shipped&resource_id=nope").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("id=\"type-error\"")
            && bad.body.contains("invoice.shipped")
            && bad.body.contains("is not an event type")
    );
    assert!(bad.body.contains("id=\"resource_id-error\"") && bad.body.contains("resource_id must be a UUID"));
}

async fn writes_are_refused_to_whom_they_must_be(db: TestDb) {
    let app = TestApp::spawn_with(&db, permissive).await;
    let (shop_a, _) = app.merchant("Shop A", &Scope::MERCHANT).await;
    let (shop_b, _) = app.merchant("Shop B", &Scope::MERCHANT).await;
    member(&app, shop_a.id, "viewer@a.example", Role::Viewer).await;
    member(&app, shop_a.id, "dev@a.example", Role::Developer).await;
    member(&app, shop_b.id, "dev@b.example", Role::Developer).await;
    let receiver = Receiver::start().await;

    // B's developer makes an endpoint and a test event.
    let mut b = Browser::new(&app);
    assert_eq!(b.sign_in("dev@b.example", PASSWORD).await.status, 303);
    let csrf_b = csrf_of(&b.get(WEBHOOKS).await.body);
    assert_eq!(b.post(WEBHOOKS, &[("csrf", &csrf_b), ("url", &receiver.url("/b"))]).await.status, 201);
    let b_endpoint = endpoint_ids(&app, shop_b.id).await[0];
    let sent = b.post(&format!("{WEBHOOKS}/{b_endpoint}/test"), &[("csrf", &csrf_b)]).await;
    let b_event = event_of(sent.location.as_deref().unwrap());
    // A's developer makes one too.
    let mut dev = Browser::new(&app);
    assert_eq!(dev.sign_in("dev@a.example", PASSWORD).await.status, 303);
    let csrf = csrf_of(&dev.get(WEBHOOKS).await.body);
    assert_eq!(dev.post(WEBHOOKS, &[("csrf", &csrf), ("url", &receiver.url("/a"))]).await.status, 201);
    let a_endpoint = endpoint_ids(&app, shop_a.id).await[0];
    let sent = dev.post(&format!("{WEBHOOKS}/{a_endpoint}/test"), &[("csrf", &csrf)]).await;
    let a_event = event_of(sent.location.as_deref().unwrap());

    // A's session on B's endpoint and event: not found, and nothing changes.
    let b_page = format!("{WEBHOOKS}/{b_endpoint}");
    assert_eq!(dev.get(&b_page).await.status, 404);
    for action in ["", "/disable", "/enable", "/rotate-secret", "/test", "/delete"] {
        let page = dev.post(&format!("{b_page}{action}"), &[("csrf", &csrf), ("url", &receiver.url("/x"))]).await;
        assert_eq!(page.status, 404, "{action}");
    }
    assert_eq!(dev.get(&format!("/dashboard/developers/events/{b_event}")).await.status, 404);
    let redeliver = dev.post(&format!("/dashboard/developers/events/{b_event}/redeliver"), &[("csrf", &csrf)]).await;
    assert_eq!(redeliver.status, 404);
    assert!(!dev.get("/dashboard/developers/events").await.body.contains(&b_event));
    let mut conn = app.store.conn().await.unwrap();
    let b_row = rows::get_endpoint(&mut conn, shop_b.id, b_endpoint).await.unwrap().expect("B's endpoint is there");
    assert!(b_row.enabled && b_row.url == receiver.url("/b"));
    drop(conn);

    // CSRF missing or wrong: refused, nothing done.
    for fields in [vec![("url", receiver.url("/c"))], vec![("csrf", "0".repeat(64)), ("url", receiver.url("/c"))]] {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = dev.post(WEBHOOKS, &fields).await;
        assert_eq!(page.status, 403);
        assert!(page.body.contains("CSRF check failed"));
    }
    assert_eq!(dev.post(&format!("{WEBHOOKS}/{a_endpoint}/delete"), &[]).await.status, 403);
    assert_eq!(endpoint_ids(&app, shop_a.id).await.len(), 1);

    // A developer may not change the settings.
    let settings = dev.post("/dashboard/settings", &[("csrf", &csrf), ("company_name", "Dev Co")]).await;
    assert_eq!(settings.status, 403);
    assert!(settings.body.contains("Your role (developer) cannot do this"));

    // A viewer reads every page, and every write is refused by the server.
    let mut viewer = Browser::new(&app);
    assert_eq!(viewer.sign_in("viewer@a.example", PASSWORD).await.status, 303);
    let page = viewer.get(WEBHOOKS).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&receiver.url("/a")) && !page.body.contains("Add an endpoint"));
    let endpoint_page = viewer.get(&format!("{WEBHOOKS}/{a_endpoint}")).await;
    assert!(endpoint_page.status == 200 && !endpoint_page.body.contains("Send a test event"));
    let event_page = viewer.get(&format!("/dashboard/developers/events/{a_event}")).await;
    assert!(event_page.status == 200 && !event_page.body.contains(">Redeliver<"));
    assert_eq!(viewer.get("/dashboard/settings").await.status, 200);
    let csrf = csrf_of(&page.body);
    let a_page = format!("{WEBHOOKS}/{a_endpoint}");
    let writes = [
        WEBHOOKS.to_owned(),
        a_page.clone(),
        format!("{a_page}/disable"),
        format!("{a_page}/enable"),
        format!("{a_page}/rotate-secret"),
        format!("{a_page}/test"),
        format!("{a_page}/delete"),
        format!("/dashboard/developers/events/{a_event}/redeliver"),
        "/dashboard/settings".to_owned(),
    ];
    let events_before = rows::list_events(&mut app.store.conn().await.unwrap(), shop_a.id, &Default::default(), 100)
        .await
        .unwrap()
        .len();
    for path in &writes {
        let page = viewer.post(path, &[("csrf", &csrf), ("url", &receiver.url("/v")), ("company_name", "V")]).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(page.body.contains("Your role (viewer) cannot do this"), "{path}");
    }
    let mut conn = app.store.conn().await.unwrap();
    let events_after = rows::list_events(&mut conn, shop_a.id, &Default::default(), 100).await.unwrap().len();
    assert_eq!(events_before, events_after, "nothing was recorded");
    let a_row = rows::get_endpoint(&mut conn, shop_a.id, a_endpoint).await.unwrap().unwrap();
    assert!(a_row.enabled && a_row.url == receiver.url("/a"));
    assert_eq!(merchants::get(&mut conn, shop_a.id).await.unwrap().unwrap().company_name, None);
}

async fn settings_are_checked_next_to_their_fields(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (shop, key) = app.merchant("Settings Shop", &Scope::MERCHANT).await;
    member(&app, shop.id, "owner@settings.example", Role::Owner).await;
    let mut owner = Browser::new(&app);
    assert_eq!(owner.sign_in("owner@settings.example", PASSWORD).await.status, 303);
    let page = owner.get("/dashboard/settings").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("href=\"/dashboard/settings/team\""), "the team's spot");
    let csrf = csrf_of(&page.body);

    let long = "x".repeat(101);
    let refused = owner
        .post(
            "/dashboard/settings",
            &[
                ("csrf", &csrf),
                ("company_name", &long),
                ("default_return_url", "ftp://shop.example/done"),
                ("checkout_origins", "https://shop.example/pay"),
            ],
        )
        .await;
    assert_eq!(refused.status, 400);
    for (field, words) in [
        ("company_name", "company_name must be at most 100 characters"),
        ("default_return_url", "default_return_url must be an https:// URL"),
        ("checkout_origins", "must be scheme://host[:port] with nothing after it (e.g. https://shop.example)"),
    ] {
        assert!(refused.body.contains(&format!("id=\"{field}-error\"")), "{field}: {}", refused.body);
        assert!(refused.body.contains(&format!("{field}-error\"")), "{field}");
        assert!(refused.body.contains(words), "{field}: {}", refused.body);
    }
    assert!(refused.body.contains("value=\"ftp://shop.example/done\""), "what was typed stays");
    let mut conn = app.store.conn().await.unwrap();
    let unchanged = merchants::get(&mut conn, shop.id).await.unwrap().unwrap();
    assert_eq!((unchanged.company_name, unchanged.default_return_url), (None, None));
    drop(conn);

    let saved = owner
        .post(
            "/dashboard/settings",
            &[
                ("csrf", &csrf),
                ("company_name", "Settings Shop Ltd"),
                ("default_return_url", "https://shop.example/thanks"),
                ("checkout_origins", "https://shop.example\nhttps://www.shop.example/"),
            ],
        )
        .await;
    assert_eq!((saved.status, saved.location.as_deref()), (303, Some("/dashboard/settings?saved")));
    let mut conn = app.store.conn().await.unwrap();
    let changed = merchants::get(&mut conn, shop.id).await.unwrap().unwrap();
    assert_eq!(changed.company_name.as_deref(), Some("Settings Shop Ltd"));
    assert_eq!(changed.default_return_url.as_deref(), Some("https://shop.example/thanks"));
    assert_eq!(changed.checkout_origins, ["https://shop.example", "https://www.shop.example"]);
    let recorded = events::types_for(&mut conn, shop.id).await.unwrap();
    assert_eq!(recorded, ["member.action"]);
    drop(conn);
    let shown = owner.get("/dashboard/settings?saved").await;
    assert!(shown.body.contains("Settings saved.") && shown.body.contains("https://www.shop.example"));
    assert!(shown.body.contains("<p class=\"brand\">Settings Shop Ltd</p>"), "the company name is the shop's name");
    let log = owner.get("/dashboard/developers/events?type=member.action").await;
    assert!(log.body.contains("owner@settings.example (owner) did merchant.update_settings"));

    // The checkout uses them: the company name as the title, the return URL once paid.
    let invoice = app.created_invoice(&key, serde_json::json!({"amount": "10", "asset": "USDC"})).await;
    let id = invoice["id"].as_str().unwrap();
    let payer_session = || async {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/payments/{id}")))
            .header("x-session-token", invoice["session_token"].as_str().unwrap())
            .header("x-signature", invoice["signature"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().await.unwrap()
    };
    let unpaid = payer_session().await;
    assert_eq!(unpaid["title"], "Settings Shop Ltd");
    assert!(unpaid["return_url"].is_null(), "not before it is paid: {unpaid}");
    let marked = app
        .client
        .post(app.url(&format!("/api/v1/invoices/{id}/mark")))
        .header("x-api-key", &key)
        .json(&serde_json::json!({"status": "paid", "reason": "paid by bank transfer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 200);
    assert_eq!(payer_session().await["return_url"], "https://shop.example/thanks");

    // Cleared: back to the merchant's name, no return URL, no origins.
    let cleared = owner
        .post(
            "/dashboard/settings",
            &[("csrf", &csrf), ("company_name", ""), ("default_return_url", ""), ("checkout_origins", "")],
        )
        .await;
    assert_eq!(cleared.status, 303);
    let mut conn = app.store.conn().await.unwrap();
    let cleared = merchants::get(&mut conn, shop.id).await.unwrap().unwrap();
    assert_eq!((cleared.company_name, cleared.default_return_url), (None, None));
    assert!(cleared.checkout_origins.is_empty());
    drop(conn);

    // The event log pages by a cursor: every event once, newest first, 20 a page.
    for i in 0..20 {
        let name = format!("Shop {i}");
        assert_eq!(owner.post("/dashboard/settings", &[("csrf", &csrf), ("company_name", &name)]).await.status, 303);
    }
    let mut conn = app.store.conn().await.unwrap();
    let stored: Vec<String> = rows::list_events(&mut conn, shop.id, &Default::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    drop(conn);
    assert!(stored.len() > 20, "{}", stored.len());
    let ids_on = |html: &str| -> Vec<String> {
        html.split("<article class=\"card event\" id=\"event-").skip(1).map(|rest| rest[..36].to_owned()).collect()
    };
    let mut shown = Vec::new();
    let mut path = "/dashboard/developers/events".to_owned();
    let mut pages = 1;
    loop {
        let page = owner.get(&path).await;
        assert_eq!(page.status, 200);
        let ids = ids_on(&page.body);
        assert!(ids.len() <= 20);
        shown.extend(ids);
        let Some(end) = page.body.find("\" rel=\"next\">Older events</a>") else { break };
        let start = page.body[..end].rfind("href=\"").unwrap() + 6;
        path = page.body[start..end].replace("&amp;", "&");
        pages += 1;
    }
    assert_eq!(shown, stored, "every event once, newest first");
    assert_eq!(pages, stored.len().div_ceil(20), "{path}");
}
