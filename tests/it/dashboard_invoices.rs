//! The dashboard's Invoices and Static addresses pages over real HTTP on both backends, with a
//! real anvil chain, watcher and webhook worker where money moves: the list's filters and cursor
//! paging (bad values shown next to their field), the detail of an invoice paid on anvil (its
//! payment, ledger entries, events and delivery attempts; it refreshes itself while open and not
//! once paid), a test invoice, cancel (owner only, CSRF, recorded with who), static addresses
//! created, shown with their deposits and invoices, and disabled, and one merchant's session on
//! another's invoice and static address (404).

use depositd_core::api_key::Scope;
use depositd_core::invoice::{InvoiceStatus, PaymentFlag};
use depositd_core::member::Role;
use depositd_core::store::webhooks::{self as webhook_rows, EventFilter};
use depositd_core::store::{events, invoices};
use depositd_testkit::chain::TestChain;
use depositd_testkit::webhooks::Receiver;
use depositd_watcher::ChainWatcher;
use depositd_webhooks::Deliverer;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::dashboard::{Browser, PASSWORD, Page, csrf_of, member};
use crate::helpers::{TestApp, TestDb, both_backends, use_test_chain};

both_backends!(
    the_list_filters_and_pages,
    an_invoice_paid_on_anvil_shows_its_payment_ledger_and_events,
    a_test_invoice_is_created_and_an_owner_cancels,
    merchants_never_see_each_others_invoices_or_addresses,
    static_addresses_are_created_shown_and_disabled,
);

/// A signed-in browser of a new member of `merchant_id` with `role`.
async fn signed_in<'a>(app: &'a TestApp, merchant_id: Uuid, email: &str, role: Role) -> Browser<'a> {
    member(app, merchant_id, email, role).await;
    let mut browser = Browser::new(app);
    let page = browser.sign_in(email, PASSWORD).await;
    assert_eq!(page.status, 303, "{}", page.body);
    browser
}

/// The page's text as written (askama escapes quotes and the like).
fn unescaped(html: &str) -> String {
    html.replace("&#34;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The ids of the invoices a list page shows, in order.
fn listed(html: &str) -> Vec<String> {
    html.match_indices("<tr id=\"invoice-").map(|(i, _)| html[i + 16..i + 52].to_owned()).collect()
}

/// The `href` of the paging link `rel` (`next`, `prev`), unescaped.
fn link(html: &str, rel: &str) -> Option<String> {
    let marker = format!("rel=\"{rel}\" href=\"");
    let start = html.find(&marker)? + marker.len();
    let end = start + html[start..].find('"')?;
    Some(html[start..end].replace("&amp;", "&").replace("&#38;", "&"))
}

async fn the_list_filters_and_pages(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("List Shop", &Scope::ALL).await;
    let mut ids = Vec::new();
    for i in 0..27 {
        let mut body = json!({"amount": format!("{}.50", i + 1), "external_id": format!("order-{i}")});
        if i % 3 == 0 {
            body["customer_id"] = json!("cust-7");
        }
        if i == 4 {
            body["customer_email"] = json!("Ada@Example.com");
        }
        ids.push(app.created_invoice(&key, body).await["id"].as_str().unwrap().to_owned());
    }
    // One invoice cancelled, one expired underpaid (as the watcher and expiry would leave it).
    let cancelled = &ids[1];
    let response =
        app.client.post(app.url(&format!("/api/v1/invoices/{cancelled}/cancel"))).header("x-api-key", &key).send();
    assert_eq!(response.await.unwrap().status(), 200);
    let underpaid: Uuid = ids[2].parse().unwrap();
    let mut conn = app.store.conn().await.unwrap();
    let read = invoices::get(&mut conn, merchant.id, underpaid).await.unwrap().unwrap();
    let mut changed = read.clone();
    changed.status = InvoiceStatus::Expired;
    changed.payment_flags = vec![PaymentFlag::Underpaid];
    changed.amount_paid_base_units = depositd_core::money::BaseUnits::from(1_000_000);
    changed.finished_at = Some(depositd_core::time::now_ms());
    invoices::update_payment_state(&mut conn, &read, &changed).await.unwrap();
    drop(conn);

    let mut browser = signed_in(&app, merchant.id, "viewer@list.example", Role::Viewer).await;
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    // Page 1: the 25 newest, each linking to its detail; "Next", no "Previous".
    let first = browser.get("/dashboard/invoices").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(listed(&first.body), newest_first[..25]);
    assert!(first.body.contains(&format!("href=\"/dashboard/invoices/{}\"", ids[26])));
    assert!(link(&first.body, "prev").is_none());
    assert!(!first.body.contains("Create a test invoice"), "a viewer is not offered the form");
    // Page 2: the other 2, then "Previous" leads back to the same first page.
    let second = browser.get(&link(&first.body, "next").expect("a next page")).await;
    assert_eq!(second.status, 200);
    assert_eq!(listed(&second.body), newest_first[25..]);
    assert!(link(&second.body, "next").is_none());
    let back = browser.get(&link(&second.body, "prev").expect("a previous page")).await;
    assert_eq!(listed(&back.body), newest_first[..25]);
    assert!(link(&back.body, "prev").is_none(), "the first page has nothing before it");

    // Filters: status, flag, customer (id, or e-mail in any case), external_id, dates.
    check(&mut browser, "status=cancelled", vec![cancelled]).await;
    let page = check(&mut browser, "flag=underpaid", vec![&ids[2]]).await;
    assert!(page.body.contains("underpaid") && page.body.contains("expired"));
    check(&mut browser, "status=expired&flag=underpaid", vec![&ids[2]]).await;
    check(&mut browser, "flag=overpaid", vec![]).await;
    check(&mut browser, "external_id=order-13", vec![&ids[13]]).await;
    check(&mut browser, "customer=ada%40example.COM", vec![&ids[4]]).await;
    let cust7: Vec<&String> = ids.iter().enumerate().rev().filter(|(i, _)| i % 3 == 0).map(|(_, id)| id).collect();
    check(&mut browser, "customer=cust-7", cust7.clone()).await;
    let today = depositd_core::time::iso8601(depositd_core::time::now_ms())[..10].to_owned();
    let page = check(&mut browser, &format!("from={today}&to={today}&customer=cust-7"), cust7).await;
    assert!(page.body.contains(&format!("value=\"{today}\"")), "the filters are echoed");
    check(&mut browser, "to=2026-01-01", vec![]).await;
    check(&mut browser, "from=2999-01-01", vec![]).await;

    // Bad values: next to their field, with the precise message; never a 500.
    for (query, field, message) in [
        ("status=bogus", "status", "unknown status \"bogus\" (one of pending, processing"),
        ("flag=late", "flag", "unknown payment flag \"late\""),
        ("from=2026-13-01", "from", "from must be a date"),
        ("to=yesterday", "to", "to must be a date"),
        ("from=2026-12-08&to=2026-12-07", "to", "to must not be before from"),
        ("after=not-an-id", "cursor", "page link is not valid"),
    ] {
        let page = browser.get(&format!("/dashboard/invoices?{query}")).await;
        assert_eq!(page.status, 400, "{query}");
        assert!(page.body.contains(&format!("id=\"{field}-error\"")), "{query}: {}", page.body);
        assert!(unescaped(&page.body).contains(message), "{query}: {}", page.body);
        if field != "cursor" {
            assert!(page.body.contains(&format!("aria-describedby=\"{field}-error\"")), "{query}");
        }
    }
    let long = "x".repeat(129);
    let page = browser.get(&format!("/dashboard/invoices?external_id={long}")).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("external_id must be 1 to 128 characters"), "the API's message");
}

/// Asks the list with `query` and checks it shows exactly `expected`, in order.
async fn check(browser: &mut Browser<'_>, query: &str, expected: Vec<&String>) -> Page {
    let page = browser.get(&format!("/dashboard/invoices?{query}")).await;
    assert_eq!(page.status, 200, "{query}: {}", page.body);
    let expected: Vec<String> = expected.into_iter().cloned().collect();
    assert_eq!(listed(&page.body), expected, "{query}");
    page
}

/// An app on a fresh anvil chain with USDC (2 confirmations), webhooks allowed to loopback.
async fn app_on_chain(db: &TestDb) -> (TestChain, TestApp, ChainWatcher) {
    let chain = TestChain::start(&[("USD Coin", "USDC")]).await.unwrap();
    let usdc = chain.tokens[0];
    let mut chain_config = None;
    let app = TestApp::spawn_with(db, |c| {
        use_test_chain(&mut c.chains[0], &chain, 2, &[("USDC", usdc)]);
        c.settings.webhooks.allow_http = true;
        c.settings.webhooks.allow_private_targets = true;
        chain_config = Some(c.chains[0].clone());
    })
    .await;
    let watcher = app.watcher(&chain_config.unwrap());
    (chain, app, watcher)
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

async fn deliver(app: &TestApp) {
    let state = &app.state;
    let worker = Deliverer::new(
        state.store.clone(),
        &state.wallet,
        state.config.settings.webhooks.clone(),
        state.metrics.clone(),
    );
    for _ in 0..50 {
        if worker.tick().await.unwrap() == 0 {
            return;
        }
    }
    panic!("the webhook queue did not drain");
}

const REFRESH: &str = "<meta http-equiv=\"refresh\" content=\"3\">";

async fn an_invoice_paid_on_anvil_shows_its_payment_ledger_and_events(db: TestDb) {
    let (chain, app, mut watcher) = app_on_chain(&db).await;
    let usdc = chain.tokens[0];
    let (merchant, key) = app.merchant("Anvil Shop", &Scope::ALL).await;
    let receiver = Receiver::start().await;
    let endpoint = app
        .client
        .post(app.url("/api/v1/webhook-endpoints"))
        .header("x-api-key", &key)
        .json(&json!({"url": receiver.url("/hooks"), "enabled_events": ["invoice.paid"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), 201);
    let invoice = app.created_invoice(&key, json!({"amount": "10", "asset": "USDC", "external_id": "anvil-1"})).await;
    let id = invoice["id"].as_str().unwrap().to_owned();
    let path = format!("/dashboard/invoices/{id}");
    let mut browser = signed_in(&app, merchant.id, "owner@anvil.example", Role::Owner).await;

    // Open: it refreshes itself, nothing paid, no refund yet, the checkout link on this origin.
    let open = browser.get(&path).await;
    assert_eq!(open.status, 200, "{}", open.body);
    assert!(open.body.contains(REFRESH), "an open invoice refreshes itself");
    assert!(open.body.contains("id=\"invoice-status\">pending<"));
    assert!(open.body.contains("No payment yet."));
    assert!(open.body.contains(&format!("href=\"/checkout/{id}\"")));
    assert!(!open.body.contains("/refund\""));
    assert!(open.body.contains("invoice.created"), "its events are listed");

    // Paid on anvil: detected (processing, still refreshing), then confirmed and credited.
    let tx_hash = chain.pay_token(usdc, invoice["pay"]["address"].as_str().unwrap(), 10_000_000).await;
    drain(&mut watcher).await;
    let processing = browser.get(&path).await;
    assert!(processing.body.contains("id=\"invoice-status\">processing<"), "{}", processing.body);
    assert!(processing.body.contains(REFRESH), "still open while confirming");
    chain.mine(2).await;
    drain(&mut watcher).await;
    deliver(&app).await;

    let paid = browser.get(&path).await;
    assert_eq!(paid.status, 200);
    assert!(paid.body.contains("id=\"invoice-status\">paid<"), "{}", paid.body);
    assert!(!paid.body.contains("http-equiv=\"refresh\""), "a final invoice does not refresh");
    let tx_hash = format!("{tx_hash:?}").to_lowercase();
    assert!(paid.body.to_lowercase().contains(&tx_hash), "the payment's transaction: {tx_hash}");
    assert!(paid.body.contains("confirmed"));
    assert!(paid.body.contains("id=\"paid\">10 USDC<") && paid.body.contains("id=\"due\">0 USDC<"), "{}", paid.body);
    // Its ledger entries, as the ledger API lists them for the invoice.
    let (_, entries) = app.get_json(&key, &format!("/api/v1/ledger?invoice_id={id}")).await;
    let entries = entries["data"].as_array().unwrap();
    assert!(entries.len() >= 2, "{entries:?}");
    for entry in entries {
        assert!(paid.body.contains(entry["id"].as_str().unwrap()), "entry {entry} is shown");
    }
    assert!(paid.body.contains("deposit_pending") && paid.body.contains("deposit_credit"));
    assert!(paid.body.contains("available USDC on anvil"));
    // Its events, with the delivery attempt to the endpoint: status code and latency.
    assert!(paid.body.contains("invoice.paid"));
    assert_eq!(receiver.hits().len(), 1, "one invoice.paid delivered");
    assert!(paid.body.contains(&receiver.url("/hooks")), "{}", paid.body);
    assert!(paid.body.contains(": 200, ") && paid.body.contains(" ms"), "the attempt's status and latency");
    // The owner may refund it (on the refund page).
    assert!(paid.body.contains(&format!("href=\"/dashboard/invoices/{id}/refund\"")));
    let viewer = {
        member(&app, merchant.id, "viewer@anvil.example", Role::Viewer).await;
        let mut b = Browser::new(&app);
        b.sign_in("viewer@anvil.example", PASSWORD).await;
        b.get(&path).await
    };
    assert_eq!(viewer.status, 200);
    assert!(!viewer.body.contains("/refund\""), "only an owner is offered a refund");

    // A static address created in the dashboard, paid on anvil: its deposit and its invoice.
    let csrf = csrf_of(&browser.get("/dashboard/static-addresses").await.body);
    let created = browser
        .post(
            "/dashboard/static-addresses",
            &[("csrf", &csrf), ("customer_id", "player-1"), ("chain", "anvil"), ("asset", "USDC")],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let static_path = created.location.unwrap();
    let static_id: Uuid = static_path.rsplit('/').next().unwrap().parse().unwrap();
    let mut conn = app.store.conn().await.unwrap();
    let rail = depositd_core::store::static_addresses::get(&mut conn, merchant.id, static_id).await.unwrap().unwrap();
    drop(conn);
    let deposit_tx = chain.pay_token(usdc, rail.address, 2_500_000).await;
    chain.mine(2).await;
    drain(&mut watcher).await;
    let page = browser.get(&static_path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.to_lowercase().contains(&format!("{deposit_tx:?}").to_lowercase()), "{}", page.body);
    assert!(page.body.contains("2.5 USDC") && page.body.contains("confirmed"), "{}", page.body);
    let filter = invoices::InvoiceFilter { static_address_id: Some(static_id), ..Default::default() };
    let mut conn = app.store.conn().await.unwrap();
    let auto = invoices::list(&mut conn, merchant.id, &filter, 10).await.unwrap();
    assert_eq!(auto.len(), 1, "one invoice per deposit");
    assert!(page.body.contains(&format!("href=\"/dashboard/invoices/{}\"", auto[0].id)));
}

/// The `member.action` events about `resource_id`, as their payloads.
async fn member_actions(app: &TestApp, merchant_id: Uuid, resource_id: Uuid) -> Vec<Value> {
    let mut conn = app.store.conn().await.unwrap();
    let filter = EventFilter { resource_id: Some(resource_id), ..Default::default() };
    let found = webhook_rows::list_events(&mut conn, merchant_id, &filter, 100).await.unwrap();
    found
        .into_iter()
        .filter(|e| e.event_type.as_str() == "member.action")
        .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap()["data"].clone())
        .collect()
}

async fn a_test_invoice_is_created_and_an_owner_cancels(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, _) = app.merchant("Cancel Shop", &Scope::ALL).await;
    let mut owner = signed_in(&app, merchant.id, "owner@cancel.example", Role::Owner).await;
    let mut developer = signed_in(&app, merchant.id, "dev@cancel.example", Role::Developer).await;
    let mut viewer = signed_in(&app, merchant.id, "viewer@cancel.example", Role::Viewer).await;

    // The form: a viewer may not have it or post it.
    assert_eq!(viewer.get("/dashboard/invoices/new").await.status, 403);
    let form = developer.get("/dashboard/invoices/new").await;
    assert_eq!(form.status, 200);
    let csrf = csrf_of(&form.body);
    let viewer_csrf = csrf_of(&viewer.get("/dashboard/invoices").await.body);
    let refused =
        viewer.post("/dashboard/invoices/new", &[("csrf", &viewer_csrf), ("amount", "5"), ("currency", "USD")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(developer.post("/dashboard/invoices/new", &[("amount", "5")]).await.status, 403, "no CSRF token");

    // Bad fields: each next to its field, with the API's message.
    let bad = developer
        .post(
            "/dashboard/invoices/new",
            &[("csrf", &csrf), ("amount", "-3"), ("currency", "USD"), ("customer_email", "not-an-email")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("id=\"amount-error\"") && bad.body.contains("amount must be a plain positive decimal"));
    assert!(
        bad.body.contains("id=\"customer_email-error\"")
            && bad.body.contains("customer_email is not an e-mail address")
    );
    assert!(bad.body.contains("aria-describedby=\"amount-error\""));
    let bad = developer.post("/dashboard/invoices/new", &[("csrf", &csrf), ("amount", "5"), ("currency", "XYZ")]).await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("id=\"currency-error\"")
            && unescaped(&bad.body).contains("currency \"XYZ\" is not supported")
    );

    // Created by `invoicing::create`, as the API does: a test invoice, recorded with who.
    let created = developer
        .post(
            "/dashboard/invoices/new",
            &[
                ("csrf", &csrf),
                ("amount", "12.34"),
                ("currency", "USD"),
                ("external_id", "dash-1"),
                ("description", "Test order"),
                ("customer_email", "buyer@example.com"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let location = created.location.unwrap();
    let id: Uuid = location.rsplit('/').next().unwrap().parse().unwrap();
    let mut conn = app.store.conn().await.unwrap();
    let invoice = invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap();
    assert_eq!((invoice.amount.to_string().as_str(), invoice.currency.as_str()), ("12.34", "USD"));
    assert_eq!(invoice.external_id.as_deref(), Some("dash-1"));
    assert_eq!(invoice.details.customer_email.as_deref(), Some("buyer@example.com"));
    assert_eq!(invoice.status, InvoiceStatus::Pending);
    assert_eq!(events::types_for(&mut conn, id).await.unwrap(), ["invoice.created", "member.action"]);
    drop(conn);
    let actions = member_actions(&app, merchant.id, id).await;
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["action"], "invoice.create_test");
    assert_eq!(actions[0]["member"]["email"], "dev@cancel.example");
    // The same external_id again: refused next to its field, as the API refuses it.
    let again =
        developer.post("/dashboard/invoices/new", &[("csrf", &csrf), ("amount", "1"), ("external_id", "dash-1")]).await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("id=\"external_id-error\"") && again.body.contains("already exists"));

    // Cancel: only the owner (the viewer and the developer get 403), never without CSRF.
    let detail = owner.get(&location).await;
    assert!(detail.body.contains(&format!("action=\"/dashboard/invoices/{id}/cancel\"")));
    let dev_detail = developer.get(&location).await;
    assert!(!dev_detail.body.contains("/cancel\""), "a developer is not offered cancel");
    let cancel = format!("/dashboard/invoices/{id}/cancel");
    let owner_csrf = csrf_of(&detail.body);
    let dev_csrf = csrf_of(&dev_detail.body);
    assert_eq!(viewer.post(&cancel, &[("csrf", &viewer_csrf)]).await.status, 403);
    assert_eq!(developer.post(&cancel, &[("csrf", &dev_csrf)]).await.status, 403);
    assert_eq!(owner.post(&cancel, &[]).await.status, 403, "CSRF missing");
    assert_eq!(owner.post(&cancel, &[("csrf", &dev_csrf)]).await.status, 403, "another session's token");
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap().status, InvoiceStatus::Pending);
    drop(conn);
    let done = owner.post(&cancel, &[("csrf", &owner_csrf)]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some(location.as_str())));
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(invoices::get(&mut conn, merchant.id, id).await.unwrap().unwrap().status, InvoiceStatus::Cancelled);
    assert_eq!(
        events::types_for(&mut conn, id).await.unwrap(),
        ["invoice.created", "member.action", "invoice.cancelled", "member.action"]
    );
    drop(conn);
    let actions = member_actions(&app, merchant.id, id).await;
    let cancel_action = actions.iter().find(|a| a["action"] == "invoice.cancel").expect("the cancel is recorded");
    assert_eq!(cancel_action["member"]["email"], "owner@cancel.example");
    assert_eq!(cancel_action["member"]["role"], "owner");
    assert_eq!(cancel_action["resource_id"], id.to_string());
    // Cancelled: the page is final, and cancelling again is refused on the page.
    let page = owner.get(&location).await;
    assert!(page.body.contains("id=\"invoice-status\">cancelled<") && !page.body.contains("http-equiv"));
    let twice = owner.post(&cancel, &[("csrf", &owner_csrf)]).await;
    assert_eq!(twice.status, 409);
    assert!(twice.body.contains("id=\"cancel-error\"") && twice.body.contains("this one is cancelled"));
}

async fn merchants_never_see_each_others_invoices_or_addresses(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (a, _) = app.merchant("Shop A", &Scope::ALL).await;
    let (_, b_key) = app.merchant("Shop B", &Scope::ALL).await;
    let b_invoice = app.created_invoice(&b_key, json!({"amount": "7", "external_id": "b-secret"})).await;
    let b_invoice = b_invoice["id"].as_str().unwrap().to_owned();
    let b_static: Value =
        app.create_static_address(&b_key, json!({"customer_id": "b-customer"})).await.json().await.unwrap();
    let b_static = b_static["id"].as_str().unwrap().to_owned();
    let mut owner = signed_in(&app, a.id, "owner@a.example", Role::Owner).await;
    let csrf = csrf_of(&owner.get("/dashboard/invoices").await.body);

    for path in [
        format!("/dashboard/invoices/{b_invoice}"),
        format!("/dashboard/static-addresses/{b_static}"),
        "/dashboard/invoices/not-a-uuid".to_owned(),
        format!("/dashboard/invoices/{}", Uuid::now_v7()),
    ] {
        let page = owner.get(&path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(!page.body.contains("b-secret") && !page.body.contains("b-customer"));
    }
    let cancel = owner.post(&format!("/dashboard/invoices/{b_invoice}/cancel"), &[("csrf", &csrf)]).await;
    assert_eq!(cancel.status, 404);
    let disable = owner.post(&format!("/dashboard/static-addresses/{b_static}/disable"), &[("csrf", &csrf)]).await;
    assert_eq!(disable.status, 404);
    // B's things are untouched and A's lists do not show them.
    let (_, invoice) = app.get_json(&b_key, &format!("/api/v1/invoices/{b_invoice}")).await;
    assert_eq!(invoice["status"], "pending");
    let (_, address) = app.get_json(&b_key, &format!("/api/v1/static-addresses/{b_static}")).await;
    assert_eq!(address["status"], "active");
    let list = owner.get("/dashboard/invoices?external_id=b-secret").await;
    assert!(listed(&list.body).is_empty());
    assert!(!owner.get("/dashboard/static-addresses").await.body.contains("b-customer"));
}

async fn static_addresses_are_created_shown_and_disabled(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (merchant, key) = app.merchant("Rails Shop", &Scope::ALL).await;
    let mut owner = signed_in(&app, merchant.id, "owner@rails.example", Role::Owner).await;
    let mut developer = signed_in(&app, merchant.id, "dev@rails.example", Role::Developer).await;
    let mut viewer = signed_in(&app, merchant.id, "viewer@rails.example", Role::Viewer).await;

    let list = developer.get("/dashboard/static-addresses").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("No static address yet.") && list.body.contains("Create a static address"));
    let csrf = csrf_of(&list.body);
    let viewer_page = viewer.get("/dashboard/static-addresses").await;
    assert!(!viewer_page.body.contains("Create a static address"));
    let viewer_csrf = csrf_of(&viewer_page.body);
    let path = "/dashboard/static-addresses";
    assert_eq!(viewer.post(path, &[("csrf", &viewer_csrf), ("customer_id", "v")]).await.status, 403);
    assert_eq!(developer.post(path, &[("customer_id", "c")]).await.status, 403, "no CSRF token");

    // Bad fields next to their field, with the API's messages.
    let bad =
        developer.post(path, &[("csrf", &csrf), ("customer_id", ""), ("chain", "anvil"), ("asset", "USDC")]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("id=\"customer_id-error\"") && bad.body.contains("customer_id is required"));
    let bad =
        developer.post(path, &[("csrf", &csrf), ("customer_id", "c1"), ("chain", "anvil"), ("asset", "DOGE")]).await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("id=\"asset-error\"")
            && unescaped(&bad.body).contains("asset \"DOGE\" is not accepted on anvil")
    );
    assert!(bad.body.contains("value=\"c1\""), "the form keeps what was typed");
    let bad =
        developer.post(path, &[("csrf", &csrf), ("customer_id", "c1"), ("chain", "nowhere"), ("asset", "USDC")]).await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("id=\"chain-error\"") && unescaped(&bad.body).contains("chain \"nowhere\" is not enabled")
    );

    // Created by the API's lifecycle: its event, and who did it.
    let created = developer
        .post(path, &[("csrf", &csrf), ("customer_id", "cust-42"), ("chain", "anvil"), ("asset", "USDC")])
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let detail_path = created.location.unwrap();
    let id: Uuid = detail_path.rsplit('/').next().unwrap().parse().unwrap();
    let (status, resource) = app.get_json(&key, &format!("/api/v1/static-addresses/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!((resource["customer_id"].as_str(), resource["status"].as_str()), (Some("cust-42"), Some("active")));
    let detail = developer.get(&detail_path).await;
    assert_eq!(detail.status, 200);
    assert!(detail.body.contains(resource["address"].as_str().unwrap()));
    assert!(detail.body.contains("id=\"static-status\">active<") && detail.body.contains("No deposit yet."));
    assert!(!detail.body.contains("/disable\""), "a developer is not offered disable");
    let list = viewer.get(path).await;
    assert!(list.body.contains("cust-42") && list.body.contains(&format!("href=\"{detail_path}\"")));

    // Disable: the owner only, with CSRF; then disabled, announced once, recorded with who.
    let disable = format!("{detail_path}/disable");
    assert_eq!(developer.post(&disable, &[("csrf", &csrf)]).await.status, 403);
    assert_eq!(viewer.post(&disable, &[("csrf", &viewer_csrf)]).await.status, 403);
    let owner_page = owner.get(&detail_path).await;
    assert!(owner_page.body.contains(&format!("action=\"{disable}\"")));
    assert_eq!(owner.post(&disable, &[]).await.status, 403, "CSRF missing");
    let owner_csrf = csrf_of(&owner_page.body);
    let done = owner.post(&disable, &[("csrf", &owner_csrf)]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some(detail_path.as_str())));
    let again = owner.post(&disable, &[("csrf", &owner_csrf)]).await;
    assert_eq!(again.status, 303, "disabling twice is harmless");
    let (_, resource) = app.get_json(&key, &format!("/api/v1/static-addresses/{id}")).await;
    assert_eq!(resource["status"], "disabled");
    let page = owner.get(&detail_path).await;
    assert!(page.body.contains("id=\"static-status\">disabled<") && !page.body.contains("/disable\""));
    let mut conn = app.store.conn().await.unwrap();
    assert_eq!(
        events::types_for(&mut conn, id).await.unwrap(),
        ["static_address.created", "member.action", "static_address.disabled", "member.action"]
    );
    drop(conn);
    let actions = member_actions(&app, merchant.id, id).await;
    let by: Vec<(&str, &str)> =
        actions.iter().map(|a| (a["action"].as_str().unwrap(), a["member"]["email"].as_str().unwrap())).collect();
    assert!(by.contains(&("static_address.create", "dev@rails.example")), "{by:?}");
    assert!(by.contains(&("static_address.disable", "owner@rails.example")), "{by:?}");
}
